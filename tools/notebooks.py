"""Keep every chapter notebook's install cell and title cell in the book's standard form.

    python tools/notebooks.py                 # rewrite notebooks/*.ipynb in place (idempotent)
    python tools/notebooks.py --check         # exit 1, naming the notebooks that are not in standard form
    python tools/notebooks.py notebooks/03_pie.ipynb ...

What it does to each notebook:

* the first code cell becomes :data:`INSTALL_CELL`, with no outputs and the ``remove-cell`` tag, so the rendered
  book hides it while the ``.ipynb`` (opened on Colab or locally) still installs flowlib where it is missing; an
  install cell the kernel ran keeps its execution count, one rewritten here has none until the next execution;
* remote image badges (the "Open in Colab" badge) are removed from markdown cells: the book's launch button
  opens the notebook on Colab, and the book must render with no network.

Nothing else in a notebook changes (sources, outputs and metadata of the other cells are kept as they are).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
HIDDEN_TAG = "remove-cell"  # Jupyter Book (myst-nb) drops cells with this tag from the rendered page

INSTALL_CELL = '''\
# Installs flowlib where it is missing (Colab, a fresh environment); hidden in the book.
import importlib.metadata
import importlib.util
import subprocess
import sys

DISTRIBUTION = "flows-and-bottlenecks"  # flowlib's name on the package index
SOURCE = "git+https://github.com/flows-and-bottlenecks/book"
try:
    importlib.metadata.distribution(DISTRIBUTION)
except importlib.metadata.PackageNotFoundError:
    package = f"{DISTRIBUTION}[notebooks] @ {SOURCE}"  # the chapters' extras too
    command = [sys.executable, "-m", "pip", "install", "-q", package]
    if subprocess.run(command).returncode != 0:
        print(
            f"Could not install {DISTRIBUTION} (see pip's message above).\\n"
            "Next step: connect to the internet and run this cell again; or, in a\\n"
            "clone of the repository, run `pip install -e '.[notebooks]'` and restart\\n"
            "the kernel."
        )
try:
    ours = importlib.util.find_spec("flowlib.recipes") is not None
except Exception:  # noqa: BLE001 - another package named flowlib, failing to import
    ours = False
if importlib.util.find_spec("flowlib") and not ours:
    print(
        "Another package named `flowlib` is installed, not this book's library.\\n"
        f"Next step: `pip uninstall -y flowlib {DISTRIBUTION}`, run this cell again\\n"
        "and restart the kernel."
    )'''

# A markdown image whose source is remote, alone or inside a link: [![alt](https://...)](https://...)
REMOTE_BADGE = re.compile(r"^[ \t]*\[!\[[^\]]*\]\(https?://[^)]*\)\]\([^)]*\)[ \t]*$\n?", re.MULTILINE)


def standardize(notebook: nbformat.NotebookNode) -> bool:
    """Put ``notebook`` in standard form in place; returns whether anything changed."""
    changed = False
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    if not code_cells:
        raise ValueError("the notebook has no code cell to hold the install cell")
    install = code_cells[0]
    tags = list(install.metadata.get("tags", []))
    if install.source != INSTALL_CELL:
        # a rewritten cell was not run in its new form: it keeps no count until the notebook is executed again
        install.source = INSTALL_CELL
        install.execution_count = None
        changed = True
    if HIDDEN_TAG not in tags:
        install.metadata["tags"] = tags + [HIDDEN_TAG]
        changed = True
    if install.outputs:
        # what pip printed on the machine that executed the notebook; the count says the cell ran
        install.outputs = []
        changed = True
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and REMOTE_BADGE.search(cell.source):
            cell.source = re.sub(r"\n{3,}", "\n\n", REMOTE_BADGE.sub("", cell.source)).strip("\n")
            changed = True
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/notebooks.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook would change")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((REPOSITORY_ROOT / "notebooks").glob("*.ipynb"))
    pending = []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        if standardize(notebook):
            pending.append(path)
            if not args.check:
                nbformat.write(notebook, path)
    verb = "would change" if args.check else "changed"
    for path in pending:
        print(f"{verb}: {path}")
    return 1 if args.check and pending else 0


if __name__ == "__main__":
    sys.exit(main())
