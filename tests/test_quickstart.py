"""The quick-start page's and the README's code runs as printed: their Python blocks are executed in order, in one
namespace, in a temporary folder, with the number of training steps and of images lowered so they run in seconds
(the only changes made to the code)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowlib.data import data_root

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "book" / "quickstart.md"
HAS_MNIST = (data_root() / "MNIST" / "raw" / "t10k-images-idx3-ubyte").exists()
needs_mnist = pytest.mark.skipif(not HAS_MNIST, reason="MNIST not found under FLOWLIB_DATA_DIR")


def code_blocks(page: Path) -> list[str]:
    """The page's ```python blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.MULTILINE | re.DOTALL)


@needs_mnist
def test_quickstart_blocks_run(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("PIL")
    blocks = code_blocks(PAGE)
    assert len(blocks) >= 8
    source = "\n".join(blocks)
    assert re.search(r"^STEPS = \d+", source, flags=re.MULTILINE), "the page must set STEPS in one place"
    source = re.sub(r"^STEPS = \d+", "STEPS = 5", source, count=1, flags=re.MULTILINE)
    source, count = re.subn(r"subset=2000", "subset=64", source)
    assert count == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "quickstart"}
    exec(compile(source, str(PAGE), "exec"), namespace)
    output = capsys.readouterr().out
    assert "True" in output  # the torch.distributions base gives the same densities
    assert "torch.Size([64, 1, 28, 28]) torch.uint8" in output
    assert namespace["two_rings"].shape == (2000, 2, 2)
    assert namespace["new_digits"].shape == (16, 1, 28, 28)
    assert len(list((tmp_path / "my_images").glob("*.png"))) == 64


@needs_mnist
def test_readme_blocks_run(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    source = "\n".join(code_blocks(ROOT / "README.md"))
    assert "flowlib.compress(" in source
    source, count = re.subn(r"max_steps=\d+", "max_steps=3", source)
    assert count >= 1
    source = source.replace("subset=2000", "subset=64")
    monkeypatch.chdir(tmp_path)
    exec(compile(source, "README.md", "exec"), {"__name__": "readme"})
