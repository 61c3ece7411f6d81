"""Optional compiled loops (Numba) for the rANS coders: the same bytes as the NumPy code, several times faster.

Install with ``pip install "flows-and-bottlenecks[fast]"`` (Numba, with prebuilt wheels for Linux, macOS and Windows on x86-64
and arm64). Without Numba every function in :mod:`flowlib.coding` runs its NumPy code instead and writes
byte-identical streams (``tests/test_coding.py`` checks both). ``FLOWLIB_NUMBA=0`` in the environment, or
:func:`use_numba` in code, turns the compiled loops off.

The compiled loops live next to the NumPy code they replace (in :mod:`flowlib.coding.rans` and
:mod:`flowlib.coding.logistic`): each is the sequential form of a vectorised loop, lane by lane instead of all
lanes at once, in an order that moves the same words on and off the stack (pushes walk a chunk's lanes upwards,
pops downwards). They use integer arithmetic and at most one floating-point multiplication per value, which
IEEE 754 rounds the same way everywhere (nothing is fused or reordered: Numba's ``fastmath`` stays off), so they
cannot disagree with NumPy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - depends on the installation
    numba = None

__all__ = ["available", "enabled", "jit", "use_numba"]

_enabled = numba is not None and os.environ.get("FLOWLIB_NUMBA", "1") != "0"


def available() -> bool:
    """Whether Numba is installed."""
    return numba is not None


def enabled() -> bool:
    """Whether the coders use the compiled loops now."""
    return _enabled


@contextmanager
def use_numba(on: bool) -> Iterator[None]:
    """Turn the compiled loops on or off inside a ``with`` block (on needs Numba installed).

    Example:
        >>> with use_numba(False):
        ...     enabled()
        False
    """
    global _enabled
    if on and numba is None:
        raise RuntimeError("Numba is not installed; pip install 'flows-and-bottlenecks[fast]' (or numba) to use the compiled loops")
    previous, _enabled = _enabled, on
    try:
        yield
    finally:
        _enabled = previous


def jit(function):
    """Compile ``function`` with Numba (``nopython``, cached on disk) when Numba is installed; else return it as is.

    Callers still choose between the compiled function and their NumPy code with :func:`enabled`: uncompiled, these
    loops would run in plain Python.
    """
    return numba.njit(cache=True, nogil=True)(function) if numba is not None else function
