"""Quantised probability tables for the rANS coders, and escape coding of values outside a table's range.

An entropy coder needs integer frequencies that sum to exactly ``2**precision`` and are ``>= 1`` for every symbol
that can occur. :func:`quantize_pmf` makes them from any probabilities; it uses only elementwise float64 math and
sequential scans (``cumsum``, ``maximum.accumulate``), whose result does not depend on the number of threads.

Quantisation rule of :func:`quantize_pmf`: with ``M = 2**precision`` and ``r_k`` the number of supported symbols
before cumulative entry ``k`` (``n = r_K`` in all), the target ``t_k = round(F_k * M)`` of the float CDF ``F`` is
clipped to ``[r_k, M - (n - r_k)]`` (room for one slot per supported symbol on either side), and the table is
``c_k = max_{j <= k}(t_j - r_j) + r_k``. Then ``c_0 = 0``, ``c_K = M`` and every supported symbol gets
``c_{k+1} - c_k >= 1``; where no clipping happens, ``c`` is just the rounded CDF. Per symbol this costs on the order
of ``n / M`` bits more than the float model.

The discretized logistic tables (:func:`discretized_logistic_cdf_table`,
:func:`discretized_logistic_mixture_cdf_table`) come from :mod:`flowlib.coding.logistic`, which computes every
entry in integer arithmetic from parameters rounded to multiples of ``2^-12``: the same table on every machine.
"""

from __future__ import annotations

import numpy as np

from flowlib.coding.logistic import LogisticMixtures
from flowlib.coding.rans import CorruptStreamError, ScalarRANS, VectorRANS, _check_precision

__all__ = [
    "ESCAPE_LIMIT",
    "MAX_LOG_SCALE",
    "MIN_LOG_SCALE",
    "cdf_from_frequencies",
    "discretized_logistic_cdf_table",
    "discretized_logistic_mixture_cdf_table",
    "pop_with_escape",
    "pop_escapes",
    "push_escapes",
    "push_with_escape",
    "quantize_pmf",
]

ESCAPE_LIMIT = 1 << 62  # escaped values must satisfy |value| <= ESCAPE_LIMIT
MIN_LOG_SCALE, MAX_LOG_SCALE = -20.0, 20.0  # log-scales are clipped here (tables saturate long before)


def quantize_pmf(pmf: np.ndarray, precision: int) -> np.ndarray:
    """Integer frequencies (..., K) int64 from probabilities ``pmf`` (..., K), rows summing to ``2**precision``.

    Symbols with ``pmf > 0`` get frequency ``>= 1``; symbols with ``pmf == 0`` get 0 (they cannot be coded). Rows
    need not be normalised. Deterministic and vectorised (the rule is in the module docstring).

    Example:
        >>> quantize_pmf(np.array([0.5, 0.25, 0.25, 0.0]), precision=8).tolist()
        [128, 64, 64, 0]
        >>> quantize_pmf(np.array([0.5, 0.25, 0.25, 1e-9]), precision=8).tolist()
        [128, 64, 63, 1]
    """
    precision = _check_precision(precision)
    pmf = np.asarray(pmf, dtype=np.float64)
    if pmf.ndim < 1 or pmf.shape[-1] < 1:
        raise ValueError(f"pmf must have shape (..., K) with K >= 1, got {pmf.shape}")
    if not np.isfinite(pmf).all() or (pmf < 0).any():
        raise ValueError("pmf must be finite and non-negative")
    support = pmf > 0
    count = support.sum(axis=-1)
    total = 1 << precision
    if (count == 0).any():
        raise ValueError("every pmf row needs at least one symbol with positive probability")
    if (count > total).any():
        raise ValueError(
            f"a row has {int(count.max())} symbols with positive probability but precision {precision} has only "
            f"{total} slots; raise the precision or shrink the alphabet"
        )
    cumulative = np.cumsum(pmf, axis=-1)  # a sequential scan: the same result on any number of threads
    if not np.isfinite(cumulative[..., -1]).all():
        raise ValueError("pmf rows sum to infinity; normalise them first")
    cdf = _with_zero(cumulative / cumulative[..., -1:])  # the last entry is exactly 1
    rank = _with_zero(np.cumsum(support, axis=-1))
    return np.diff(_quantize_cdf(cdf, rank, total), axis=-1)


def cdf_from_frequencies(frequencies: np.ndarray) -> np.ndarray:
    """Cumulative table (..., K+1) int64 with a leading 0 from frequencies (..., K)."""
    return _with_zero(np.cumsum(np.asarray(frequencies, dtype=np.int64), axis=-1))


def _with_zero(values: np.ndarray) -> np.ndarray:
    """Prepend a 0 along the last axis."""
    return np.concatenate([np.zeros(values.shape[:-1] + (1,), dtype=values.dtype), values], axis=-1)


def _quantize_cdf(cdf: np.ndarray, rank: np.ndarray, total: int) -> np.ndarray:
    """Integer table (..., K+1) from a float CDF (..., K+1) running from 0 to 1 (rule in the module docstring).

    ``rank`` (..., K+1) counts the supported symbols before each entry; its last entry is their number ``n``.
    """
    count = rank[..., -1:]
    target = np.clip(np.rint(cdf * total).astype(np.int64), rank, total - (count - rank))
    return np.maximum.accumulate(target - rank, axis=-1) + rank


def discretized_logistic_cdf_table(
    mean: np.ndarray, log_scale: np.ndarray, low: int, high: int, precision: int
) -> np.ndarray:
    """Tables (N, K+2) uint32 of discretized logistics over the integers ``low..high`` (K of them) plus an escape.

    Symbol ``k < K`` is the value ``x = low + k`` with mass
    ``sigma((x + 0.5 - mean) / s) - sigma((x - 0.5 - mean) / s)``,
    ``s = exp(log_scale)`` (clipped to ``[MIN_LOG_SCALE, MAX_LOG_SCALE]``), the first and last bins extended to
    ``-inf`` and ``+inf`` as in IDF (Hoogeboom et al., 2019); symbol ``K`` (the escape, frequency 1) marks a value
    outside ``[low, high]`` (see :func:`push_with_escape`). Means and log-scales are rounded to multiples of
    ``2^-12`` and the entries computed in integer arithmetic (:mod:`flowlib.coding.logistic`), so every machine
    builds the same table.

    Arguments:
        mean: (N,) float means, one distribution per symbol.
        log_scale: (N,) float log-scales.
        low, high: the integer range covered by the table.
        precision: table precision in bits (use the coder's).

    Example:
        >>> table = discretized_logistic_cdf_table(np.array([0.3]), np.array([0.0]), -2, 2, precision=12)
        >>> table.shape, int(table[0, -1]), int(table[0, -1] - table[0, -2])
        ((1, 7), 4096, 1)
    """
    mean = _as_float("mean", mean)
    if mean.ndim != 1:
        raise ValueError(f"mean must have shape (N,), got {mean.shape}")
    mixtures = LogisticMixtures.from_floats(mean, _as_float("log_scale", log_scale, mean.shape))
    return _tables(mixtures, low, high, precision)


def discretized_logistic_mixture_cdf_table(
    means: np.ndarray, log_scales: np.ndarray, logit_weights: np.ndarray, low: int, high: int, precision: int
) -> np.ndarray:
    """Like :func:`discretized_logistic_cdf_table` for mixtures: ``means``, ``log_scales``, ``logit_weights`` (N, M).

    The mixture CDF is ``sum_m softmax(logit_weights)_m sigma((x - means_m) / s_m)``, its weights integers summing to
    ``2^22`` (:func:`flowlib.coding.logistic.mixture_weights`).
    """
    means = _as_float("means", means)
    if means.ndim != 2 or means.shape[1] < 1:
        raise ValueError(f"means must have shape (N, M) with M >= 1 components, got {means.shape}")
    mixtures = LogisticMixtures.from_floats(
        means, _as_float("log_scales", log_scales, means.shape), _as_float("logit_weights", logit_weights, means.shape)
    )
    return _tables(mixtures, low, high, precision)


def _tables(mixtures: LogisticMixtures, low: int, high: int, precision: int) -> np.ndarray:
    precision = _check_precision(precision)
    low, high = int(low), int(high)
    if high < low or max(abs(low), abs(high)) >= 1 << 31:
        raise ValueError(f"need low <= high within +-2**31, got low={low}, high={high}")
    size = high - low + 1
    if size + 2 > 1 << precision:
        raise ValueError(f"{size} values plus an escape symbol do not fit in 2**{precision} slots; raise the precision")
    rows = np.arange(len(mixtures))
    return mixtures.tables(rows, np.full(len(rows), low, dtype=np.int64), size, precision)


def _as_float(name: str, value: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    value = np.asarray(value, dtype=np.float64)
    if shape is not None and value.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
    if not np.isfinite(value).all():
        raise ValueError(f"{name} must be finite")
    return value


# --------------------------------------------------------------------------------------------------------------
# Escape coding
# --------------------------------------------------------------------------------------------------------------


def push_with_escape(coder: ScalarRANS | VectorRANS, values: np.ndarray, cdf: np.ndarray, low: int, high: int) -> None:
    """Push integer ``values`` (N,) with tables ``cdf`` (N, K+2) over ``low..high`` plus an escape symbol ``K``.

    A value outside ``[low, high]`` is coded as the escape symbol followed (in decoding order) by its distance
    ``d >= 0`` beyond the range, raw (:func:`push_escapes`). Values must satisfy ``|value| <= ESCAPE_LIMIT = 2**62``.
    """
    values, alphabet = _check_escape_args(values, cdf, low, high)
    outside = (values < low) | (values > high)
    push_escapes(coder, values[outside], low, high)
    symbols = np.where(outside, alphabet, values - low)
    if isinstance(coder, ScalarRANS):
        coder.push_symbols(symbols, cdf)
    else:
        coder.push(symbols, cdf)


def pop_with_escape(coder: ScalarRANS | VectorRANS, cdf: np.ndarray, low: int, high: int) -> np.ndarray:
    """Pop the values pushed by :func:`push_with_escape` with the same tables; returns (N,) int64."""
    cdf = np.asarray(cdf)
    alphabet = _alphabet(cdf, low, high)
    symbols = coder.pop_symbols(cdf) if isinstance(coder, ScalarRANS) else coder.pop(cdf)
    values = symbols + int(low)
    outside = np.flatnonzero(symbols == alphabet)
    values[outside] = pop_escapes(coder, low, high, outside.size)
    return values


def push_escapes(coder: ScalarRANS | VectorRANS, escaped: np.ndarray, low, high) -> None:
    """Push the values ``escaped`` (n,) that lie outside their ranges ``[low, high]`` (scalars or (n,) arrays).

    Each value's distance ``d >= 0`` beyond its range is coded raw: a uniform 4-bit header (side below/above,
    number of bytes 1..8), then the bytes of ``d`` as uniform 8-bit symbols (all bytes pushed first, so the
    headers are popped first). Costs ``4 + 8 * bytes`` bits per value. Pop with :func:`pop_escapes`.
    """
    escaped = np.asarray(escaped, dtype=np.int64)
    if not escaped.size:
        return
    low, high = np.broadcast_to(low, escaped.shape), np.broadcast_to(high, escaped.shape)
    below = escaped < low
    distance = np.where(below, low - 1 - escaped, escaped - high - 1).astype(np.uint64)  # in [0, 2**63)
    index = np.arange(8)
    shifts = (8 * index).astype(np.uint64)
    num_bytes = 1 + ((distance[:, None] >> shifts[1:]) > 0).sum(axis=1)
    raw = (distance[:, None] >> shifts) & np.uint64(0xFF)
    coder.push_uniform(raw[index[None, :] < num_bytes[:, None]].astype(np.int64), 8)
    coder.push_uniform(below.astype(np.int64) * 8 + num_bytes - 1, 4)


def pop_escapes(coder: ScalarRANS | VectorRANS, low, high, count: int | None = None) -> np.ndarray:
    """Pop ``count`` values pushed by :func:`push_escapes` with the same ranges (``count`` defaults to the length
    of ``low``); returns (count,) int64. Raises :class:`~flowlib.coding.rans.CorruptStreamError` for a distance beyond any escapable
    value."""
    count = len(low) if count is None else int(count)
    if not count:
        return np.zeros(0, dtype=np.int64)
    low, high = np.broadcast_to(low, (count,)), np.broadcast_to(high, (count,))
    headers = coder.pop_uniform(count, 4)
    below, num_bytes = headers >= 8, (headers & 7) + 1
    raw = coder.pop_uniform(int(num_bytes.sum()), 8).astype(np.uint64)
    offsets = np.cumsum(num_bytes) - num_bytes
    index = np.arange(8)
    present = index[None, :] < num_bytes[:, None]
    gathered = np.where(present, raw[np.where(present, offsets[:, None] + index[None, :], 0)], np.uint64(0))
    distance = (gathered << (8 * index).astype(np.uint64)).sum(axis=1)
    if (distance > np.uint64(ESCAPE_LIMIT + (1 << 32))).any():  # beyond any escapable value
        raise CorruptStreamError("an escaped value decodes outside the supported range: the stream is corrupt")
    distance = distance.astype(np.int64)
    return np.where(below, low - 1 - distance, high + 1 + distance)


def _alphabet(cdf: np.ndarray, low: int, high: int) -> int:
    alphabet = int(high) - int(low) + 1
    if cdf.ndim != 2 or cdf.shape[1] != alphabet + 2:
        raise ValueError(
            f"escape tables for low..high = {low}..{high} must have shape (N, {alphabet + 2}) ({alphabet} values, an "
            f"escape symbol and the leading 0), got {cdf.shape}"
        )
    return alphabet


def _check_escape_args(values: np.ndarray, cdf: np.ndarray, low: int, high: int) -> tuple[np.ndarray, int]:
    values = np.asarray(values)
    if values.ndim != 1 or (values.size and not np.issubdtype(values.dtype, np.integer)):
        raise ValueError(f"values must be integers of shape (N,), got {values.dtype} {values.shape}")
    values = values.astype(np.int64)
    alphabet = _alphabet(np.asarray(cdf), low, high)
    beyond = (values > ESCAPE_LIMIT) | (values < -ESCAPE_LIMIT)
    if beyond.any():
        raise ValueError(f"values beyond +-2**62 cannot be escaped (got {values[beyond][0]}); rescale the data")
    return values, alphabet
