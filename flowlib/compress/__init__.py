"""Lossless image compression with an Integer Discrete Flow and rANS: files on disk, and a command line.

The parts, each in its own module:

* :mod:`flowlib.compress.codec`: the IDF + rANS codec, :func:`~flowlib.compress.codec.compress` and :func:`~flowlib.compress.codec.decompress` (its docstring
  describes the file, step by step);
* :mod:`flowlib.compress.baselines`: PNG, WebP, JPEG-XL, JPEG 2000, gzip, bz2 and lzma on the same images;
* :mod:`flowlib.compress.cli`: ``python -m flowlib.compress encode|decode ...``.

``flowlib.compress`` is also callable: ``flowlib.compress(images, model)`` is :func:`~flowlib.compress.codec.compress`.

Example:
    >>> import torch
    >>> from flowlib.models.idf import IDF
    >>> model = IDF((1, 8, 8), num_levels=2, num_couplings=1, hidden_channels=4)
    >>> images = torch.full((5, 1, 8, 8), 128, dtype=torch.uint8)
    >>> data = compress(images, model)
    >>> bool(torch.equal(decompress(data, model), images))
    True
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence

import numpy as np
from torch import Tensor

from flowlib.compress.baselines import classical_codec_sizes, image_encoders
from flowlib.compress.codec import (
    CHUNK_IMAGES,
    CODING_SCHEME,
    PRECISION,
    RawChunkWarning,
    compress,
    decompress,
    load_model,
    model_fingerprint,
    num_lanes_for,
    table_code_length,
)
from flowlib.models.idf import IDF

__all__ = [
    "CHUNK_IMAGES",
    "CODING_SCHEME",
    "PRECISION",
    "RawChunkWarning",
    "classical_codec_sizes",
    "compress",
    "decompress",
    "image_encoders",
    "load_model",
    "main",
    "model_fingerprint",
    "num_lanes_for",
    "table_code_length",
]


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m flowlib.compress encode|decode ...`` (see :mod:`flowlib.compress.cli`)."""
    from flowlib.compress.cli import main as run

    run(argv)


class _CallableModule(types.ModuleType):
    """``flowlib.compress`` is this package (so ``python -m flowlib.compress`` runs the command line), and calling
    it, ``flowlib.compress(images, model)``, calls :func:`~flowlib.compress.codec.compress`."""

    def __call__(self, images: Tensor | np.ndarray, model: IDF, *, allow_raw: bool = True) -> bytes:
        return compress(images, model, allow_raw=allow_raw)


sys.modules[__name__].__class__ = _CallableModule
