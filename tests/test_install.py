"""The core install (torch + NumPy) is enough for transforms, models and the coder; optional packages come with
extras, and a feature that needs a missing one says which extra to install.

The subprocess checks block imports of the optional packages (and of torch, for :mod:`flowlib.coding`), so they test
what a fresh environment with ``pip install flowlib`` sees even though this environment has everything.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from flowlib.extras import EXTRAS, MissingExtraError, require

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("torchvision", "matplotlib", "sklearn", "PIL", "tqdm", "imagecodecs", "scipy", "pandas")

BLOCKER = """
import sys

for name in BLOCKED:  # `import name` now fails as if the package were not installed; find_spec returns None
    sys.modules[name] = None
"""


def _run_blocked(blocked: tuple[str, ...], code: str) -> str:
    program = f"BLOCKED = {set(blocked)!r}\n{BLOCKER}\n{textwrap.dedent(code)}"
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_core_install_imports_and_trains_without_optional_packages():
    output = _run_blocked(OPTIONAL, """
        import sys
        import torch
        import flowlib.transforms, flowlib.models, flowlib.distributions, flowlib.coding, flowlib.nets
        import flowlib.data, flowlib.train, flowlib.metrics, flowlib.scale, flowlib.recipes, flowlib.compress
        from flowlib.data import as_batches, toy_2d
        from flowlib.models import realnvp_vector
        from flowlib.train import fit

        flow = realnvp_vector(2, num_couplings=2, hidden_features=8)
        history = fit(flow, lambda model, x: -model.log_prob(x).mean(), as_batches(toy_2d("pinwheel", 64), 32),
                      max_steps=2, device="cpu", progress=True)  # progress bar requested, tqdm missing
        assert len(history.train_loss) == 2
        try:
            toy_2d("moons", 10)
        except ImportError as error:
            print(error)
        optional = ("torchvision", "matplotlib", "sklearn", "PIL", "tqdm")
        loaded = [name for name in optional if sys.modules.get(name) is not None]
        print("loaded:", loaded)
    """)
    assert "pip install 'flows-and-bottlenecks[data]'" in output
    assert "loaded: []" in output


def test_coding_works_without_torch():
    output = _run_blocked(("torch", *OPTIONAL), """
        import sys
        import numpy as np
        from flowlib.coding import VectorRANS

        coder = VectorRANS(num_lanes=4, precision=8)
        symbols = np.array([2, 0, 1, 1, 0, 2, 2, 1])
        cdf = np.tile([0, 64, 192, 256], (len(symbols), 1))  # one CDF row per symbol
        coder.push(symbols, cdf)
        print(coder.pop(cdf).tolist(), sys.modules.get("torch") is not None)
    """)
    assert output.strip() == "[2, 0, 1, 1, 0, 2, 2, 1] False"


def test_missing_extra_names_the_extra(monkeypatch):
    for name in ("sklearn", "sklearn.datasets"):  # makes the import fail even after an earlier one
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError, match=r"digits_8x8\(\) needs scikit-learn.*flows-and-bottlenecks\[data\]"):
        from flowlib.data import digits_8x8

        digits_8x8()
    with pytest.raises(ModuleNotFoundError):  # a package without an extra is not dressed up
        require("no_such_package_for_flowlib", "a test")


def test_pyproject_core_is_torch_and_numpy_and_every_extra_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {requirement.split(">")[0].split("=")[0].split("<")[0].strip() for requirement in project["dependencies"]}
    assert names == {"torch", "numpy"}
    extras = project["optional-dependencies"]
    for package, extra in EXTRAS.values():
        assert any(requirement.startswith(package) for requirement in extras[extra]), (package, extra)
        assert any(requirement.startswith(package) for requirement in extras["all"]), package
    assert (ROOT / "flowlib" / "py.typed").exists()
