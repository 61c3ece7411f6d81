"""What every chapter notebook must hold before it reaches readers: the standard install cell (first code cell,
hidden in the book), no remote images (the book renders offline), and reader-facing text about the science only."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("notebook_tools", ROOT / "tools" / "notebooks.py")
notebook_tools = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(notebook_tools)

REMOTE_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?https?://|<img[^>]+src\s*=\s*[\"']?https?://", re.IGNORECASE)
PROCESS_WORDS = re.compile(r"\bissues?\b|\bsessions?\b|shared/|\bjobs\b|\bthe target\b|\bour target", re.IGNORECASE)


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _output_texts(cell: nbformat.NotebookNode) -> list[str]:
    texts = []
    for output in cell.get("outputs", []):
        if "text" in output:
            texts.append(output["text"])
        for mime, value in output.get("data", {}).items():
            if mime.startswith("text/") and isinstance(value, str):
                texts.append(value)
    return texts


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_install_cell_is_first_and_hidden(path):
    code = [cell for cell in _read(path).cells if cell.cell_type == "code"]
    assert code and code[0].source == notebook_tools.INSTALL_CELL, (
        f"{path.name}: the first code cell is not the standard install cell; run `python tools/notebooks.py`")
    assert notebook_tools.HIDDEN_TAG in code[0].metadata.get("tags", []) and not code[0].outputs


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_no_remote_images(path):
    for index, cell in enumerate(_read(path).cells):
        for text in [cell.source, *_output_texts(cell)]:
            match = REMOTE_IMAGE.search(text)
            assert match is None, f"{path.name}, cell {index}: remote image {text[match.start():match.start() + 80]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_reader_facing_text_has_no_process_words(path):
    for index, cell in enumerate(_read(path).cells):
        for text in [cell.source, *_output_texts(cell)]:
            match = PROCESS_WORDS.search(text)
            assert match is None, (
                f"{path.name}, cell {index}: {text[max(0, match.start() - 40):match.end() + 40]!r}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_every_figure_is_saved_in_the_notebook(path):
    """A cell that shows a figure holds it as an image (executed with MPLBACKEND=Agg, a kernel saves none)."""
    notebook = _read(path)
    if not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"):
        pytest.skip(f"{path.name} is not executed")
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and "plt.show()" in cell.source:
            images = [output for output in cell.outputs if "image/png" in output.get("data", {})]
            assert images, f"{path.name}, cell {index} shows a figure but holds no image: re-execute it without " \
                           "MPLBACKEND=Agg (`make execute` unsets it)"


def test_standardizing_is_idempotent_and_removes_badges():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Title\n\n[![Open In Colab](https://colab.example/badge.svg)]"
                                      "(https://colab.example/nb)\n\nText."),
        nbformat.v4.new_code_cell("print('old install cell')", execution_count=1,
                                  outputs=[nbformat.v4.new_output("stream", text="x")]),
        nbformat.v4.new_code_cell("import flowlib"),
    ])
    assert notebook_tools.standardize(notebook) is True
    assert notebook.cells[0].source == "# Title\n\nText."
    assert notebook.cells[1].source == notebook_tools.INSTALL_CELL and notebook.cells[1].outputs == []
    assert notebook.cells[1].metadata["tags"] == [notebook_tools.HIDDEN_TAG]
    assert notebook.cells[2].source == "import flowlib"
    assert notebook_tools.standardize(notebook) is False  # nothing left to change
    assert notebook.cells[1].execution_count is None  # rewritten, so not run in this form


def test_an_executed_install_cell_keeps_its_count_and_loses_its_output():
    install = nbformat.v4.new_code_cell(notebook_tools.INSTALL_CELL, execution_count=1,
                                        outputs=[nbformat.v4.new_output("stream", text="pip: done")])
    install.metadata["tags"] = [notebook_tools.HIDDEN_TAG]
    notebook = nbformat.v4.new_notebook(cells=[install, nbformat.v4.new_code_cell("import flowlib")])
    assert notebook_tools.standardize(notebook) is True
    assert notebook.cells[0].outputs == [] and notebook.cells[0].execution_count == 1
    assert notebook_tools.standardize(notebook) is False


def test_install_cell_prints_the_next_step_when_pip_fails(tmp_path):
    """Run the install cell where the distribution is missing and pip cannot reach the network: no traceback."""
    fake_pip = tmp_path / "fake_pip.py"
    fake_pip.write_text("import sys; print('pip: network is unreachable', file=sys.stderr); sys.exit(1)\n")
    wrapper = (
        "import importlib.metadata, subprocess, sys\n"
        "def missing(name): raise importlib.metadata.PackageNotFoundError(name)\n"
        "importlib.metadata.distribution = missing\n"
        "real_run = subprocess.run\n"
        f"subprocess.run = lambda command, **kw: real_run([sys.executable, {str(fake_pip)!r}], **kw)\n"
        + notebook_tools.INSTALL_CELL
    )
    run = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert "Next step" in run.stdout and "pip install -e '.[notebooks]'" in run.stdout


def test_install_cell_lines_fit_the_text_column():
    assert max(map(len, notebook_tools.INSTALL_CELL.splitlines())) <= 88


TEXT_COLUMN = 88  # characters of code the book's text column shows without a horizontal scroll bar


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_code_lines_fit_the_text_column(path):
    long_lines = [
        f"cell {index}, line {number}: {len(line)} characters"
        for index, cell in enumerate(_read(path).cells) if cell.cell_type == "code"
        for number, line in enumerate(cell.source.splitlines(), start=1) if len(line) > TEXT_COLUMN
    ]
    assert not long_lines, f"{path.name}: code lines over {TEXT_COLUMN} characters:\n" + "\n".join(long_lines)
