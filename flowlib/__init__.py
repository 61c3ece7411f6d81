"""flowlib: invertible layers, flow models, bottleneck auto-encoders and a lossless compressor, for the book
"Flows & Bottlenecks".

Subpackages: :mod:`flowlib.transforms` (the invertible-layer contract and layers), :mod:`flowlib.distributions`,
:mod:`flowlib.models`, :mod:`flowlib.coding` (rANS); modules :mod:`flowlib.data`, :mod:`flowlib.scale`,
:mod:`flowlib.train`, :mod:`flowlib.metrics`, :mod:`flowlib.plot`. ``flowlib.compress`` / ``flowlib.decompress``
turn uint8 images into bytes and back with a trained Integer Discrete Flow.

The core install is torch and NumPy (``flowlib.coding`` needs NumPy only); datasets, plots, image files and progress
bars come with extras (:mod:`flowlib.extras` lists them; a missing one raises
:class:`~flowlib.extras.MissingExtraError` naming it). Importing ``flowlib`` itself imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "compress", "decompress"]


def __getattr__(name: str) -> Any:
    # Imported lazily so that `import flowlib` stays cheap. `flowlib.compress` is a callable module:
    # `flowlib.compress(images, model)` compresses, `python -m flowlib.compress` runs the command line.
    if name in ("compress", "decompress"):
        import importlib

        module = importlib.import_module("flowlib.compress")
        return module if name == "compress" else module.decompress
    raise AttributeError(f"module 'flowlib' has no attribute {name!r}")
