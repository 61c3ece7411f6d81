"""Lossless entropy coding: rANS coders, quantised probability tables and the compressed-file container.

This package knows nothing about neural networks (as in the IDF reference code, ``coding/`` stays apart from
``models/``): models produce distribution parameters, :mod:`flowlib.coding.logistic` and :mod:`flowlib.coding.cdf`
turn them into integer tables, :mod:`flowlib.coding.rans` codes symbols with them, and
:mod:`flowlib.coding.container` wraps the bytes in a file. :mod:`flowlib.coding.compiled` switches the coders'
optional compiled loops (Numba) on and off; they write the same bytes as the NumPy code.
"""

from __future__ import annotations

from flowlib.coding import compiled
from flowlib.coding.cdf import (
    ESCAPE_LIMIT,
    cdf_from_frequencies,
    discretized_logistic_cdf_table,
    discretized_logistic_mixture_cdf_table,
    pop_escapes,
    pop_with_escape,
    push_escapes,
    push_with_escape,
    quantize_pmf,
)
from flowlib.coding.container import (
    FINGERPRINT_SIZE,
    HEADER_SIZE,
    ChecksumError,
    Container,
    ContainerError,
    ModelMismatchError,
    NotAFlowlibFileError,
    TruncatedFileError,
    UnsupportedVersionError,
    pack,
    unpack,
)
from flowlib.coding.logistic import LogisticMixtures
from flowlib.coding.rans import RANS_LOWER_BOUND, CorruptStreamError, ScalarRANS, VectorRANS

__all__ = [
    "ESCAPE_LIMIT",
    "FINGERPRINT_SIZE",
    "HEADER_SIZE",
    "RANS_LOWER_BOUND",
    "ChecksumError",
    "Container",
    "ContainerError",
    "CorruptStreamError",
    "LogisticMixtures",
    "ModelMismatchError",
    "NotAFlowlibFileError",
    "ScalarRANS",
    "TruncatedFileError",
    "UnsupportedVersionError",
    "VectorRANS",
    "cdf_from_frequencies",
    "compiled",
    "discretized_logistic_cdf_table",
    "discretized_logistic_mixture_cdf_table",
    "pack",
    "pop_escapes",
    "pop_with_escape",
    "push_escapes",
    "push_with_escape",
    "quantize_pmf",
    "unpack",
]
