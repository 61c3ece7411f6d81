"""Coding tables of discretized logistic mixtures, in integer arithmetic: every machine computes the same entries.

The priors of Integer Discrete Flows are discretized logistics and mixtures of them (Hoogeboom et al., "Integer
Discrete Flows and Lossless Compression", 2019, arXiv:1905.07376). An rANS coder needs, for a value ``x``, the two
table entries ``c_k`` and ``c_{k+1}`` around it; the decoder must compute the very same integers from the same
parameters, on any machine. This module defines those entries with integer operations and correctly rounded
IEEE 754 basic operations only (no ``exp`` from the platform's maths library, whose last bit differs between
builds), so the NumPy code here, the compiled loop next to it and any other machine agree bit for bit.

Parameters are integers in *ticks* of ``2^-12`` (:data:`TICK_BITS`; the IDF's coding path produces them so):
component means ``mu``, log-scales ``log s`` and weight logits. A value's table covers a *window* of ``K``
consecutive integers starting at ``offset``, plus an escape symbol ``K`` for values outside it
(:func:`flowlib.coding.cdf.push_with_escape` explains escapes). With ``M = 2^precision``:

1. The logistic CDF ``sigma(z)`` comes from a table of ``sigma(j / 256)``, ``j = 0 .. 24 * 256 + 1``, in units of
   ``2^-40`` (exact integers, built once with the ``decimal`` module), linearly interpolated between its points with
   24 fraction bits, mirrored for ``z < 0`` (``sigma(-z) = 1 - sigma(z)``), constant beyond ``|z| = 24``.
2. At the edge ``e = offset + k - 1/2`` a component contributes ``sigma((e - mu) / s)`` with
   ``z = (e - mu) * e^(-log s)``: ``e - mu`` is an integer number of ticks, ``e^(-log s)`` a float64 from a fixed
   table (:func:`exp_ticks`), and their product is rounded once, as IEEE 754 prescribes.
3. The mixture weights are ``softmax(logits)`` as integers summing to ``2^22`` (:func:`mixture_weights`), and the
   mixture CDF ``F_k`` is the weighted sum of the components' integer CDFs (exact, in any order).
4. The table entry is ``c_k = k + floor(F_k * (M - 1 - K))`` for ``0 < k < K``, with ``c_0 = 0``,
   ``c_K = M - 1`` and ``c_{K+1} = M``: every value of the window gets at least one slot (``F`` never decreases in
   ``k``: every step above is monotone), the escape symbol exactly one. The extra slots cost about
   ``K / M / ln 2`` bits per value: ``2e-6`` bits for ``K = 33`` at precision 24.

The approximations in 1-2 change a probability by at most about ``2^-22`` (the interpolation) and move no mass
between values beyond that; they only define *which* quantised model is coded, which the encoder and the decoder
share exactly. :meth:`LogisticMixtures.windows` chooses the windows from the same integers.
"""

from __future__ import annotations

import decimal
import functools
from dataclasses import dataclass

import numpy as np

from flowlib.coding import compiled
from flowlib.coding.rans import VectorRANS, _check_precision, _pop_step

__all__ = [
    "HALF_WIDTHS",
    "TICK_BITS",
    "LogisticMixtures",
    "exp_ticks",
    "mixture_weights",
    "sigmoid_table",
]

TICK_BITS = 12  # parameters are integers in units of 2^-12
SIGMOID_BITS = 40  # the sigmoid table holds sigma in units of 2^-40
WEIGHT_BITS = 22  # mixture weights are integers summing to 2^22
STEP_BITS = 8  # the sigmoid table has a point every 2^-8 in z
FRACTION_BITS = 24  # z is held in units of 2^-(8 + 24) for the interpolation
Z_LIMIT = 24  # |z| beyond this counts as 24: sigma(-24) = 4e-11, below every table's resolution
LOG_SCALE_LIMIT = 20 << TICK_BITS  # log-scales are clipped to [-20, 20] (tables saturate long before)
EXP_LIMIT = 32 << TICK_BITS  # exp_ticks covers exponents in [-32, 32]
MEAN_LIMIT = 1 << 36  # means lie within +-2^36 (so every edge minus mean is an exact float64 integer)
HALF_WIDTHS = tuple(2**k for k in range(2, 15))  # window half-widths W = 4 .. 16384: windows of K = 2W + 1 values
_Z_BITS = STEP_BITS + FRACTION_BITS
_CDF_BITS = 38  # the mixture CDF is cut to 38 bits before it is scaled to the table's slots (no int64 overflow)
_BLOCK_ENTRIES = 1 << 16  # LogisticMixtures.tables computes this many entries at a time (a few MiB)


# --------------------------------------------------------------------------------------------------------------
# Fixed tables
# --------------------------------------------------------------------------------------------------------------


@functools.cache
def _exp_parts() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``e^a`` (a = -32..32), ``e^(b / 64)`` and ``e^(c / 4096)`` (b, c = 0..63) as correctly rounded float64."""
    context = decimal.Context(prec=40)

    def exp(numerator: int, denominator: int) -> float:
        return float(context.exp(context.divide(decimal.Decimal(numerator), decimal.Decimal(denominator))))

    return (
        np.array([exp(a, 1) for a in range(-32, 33)]),
        np.array([exp(b, 64) for b in range(64)]),
        np.array([exp(c, 4096) for c in range(64)]),
    )


def exp_ticks(n: np.ndarray) -> np.ndarray:
    """``e^(n / 4096)`` for integers ``n`` in ``[-2^17, 2^17]`` as float64, the same bits on every machine.

    ``n = 4096 a + 64 b + c`` splits into three table lookups whose product is rounded twice, in a fixed order.

    Example:
        >>> float(exp_ticks(np.array([4096]))[0])
        2.718281828459045
    """
    n = np.asarray(n, dtype=np.int64)
    if n.size and (n.min() < -EXP_LIMIT or n.max() > EXP_LIMIT):
        raise ValueError(f"exp_ticks takes exponents in [-{EXP_LIMIT}, {EXP_LIMIT}] ticks, got {n.min()}..{n.max()}")
    whole, sixty_fourths, ticks = _exp_parts()
    return whole[(n >> 12) + 32] * sixty_fourths[(n >> 6) & 63] * ticks[n & 63]


@functools.cache
def sigmoid_table() -> np.ndarray:
    """``round(2^40 sigma(j / 256))`` for ``j = 0 .. 24 * 256 + 1`` (int64, non-decreasing)."""
    j = np.arange(Z_LIMIT * (1 << STEP_BITS) + 2, dtype=np.int64)
    values = np.rint(2.0**SIGMOID_BITS / (1.0 + exp_ticks(-(j << (TICK_BITS - STEP_BITS))))).astype(np.int64)
    return np.maximum.accumulate(values)


def mixture_weights(logits: np.ndarray) -> np.ndarray:
    """Integer weights ``(N, M)`` summing to ``2^22`` per row from weight logits in ticks ``(N, M)``: ``softmax``.

    Example:
        >>> mixture_weights(np.array([[0, 0], [0, -4096 * 40]])).tolist()
        [[2097152, 2097152], [4194304, 0]]
    """
    logits = np.asarray(logits, dtype=np.int64)
    relative = np.maximum(logits - logits.max(axis=1, keepdims=True), -EXP_LIMIT)
    powers = np.floor(exp_ticks(relative) * 2.0**30).astype(np.int64)  # e^(logit - max) in units of 2^-30
    cumulative = (np.cumsum(powers, axis=1) << WEIGHT_BITS) // powers.sum(axis=1, keepdims=True)
    return np.diff(cumulative, axis=1, prepend=0)


# --------------------------------------------------------------------------------------------------------------
# Mixtures
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogisticMixtures:
    """``N`` discretized logistic mixtures of ``M`` components in integer form (one component: plain logistics).

    Build with :meth:`from_ticks` (integers in ticks of ``2^-12``) or :meth:`from_floats` (rounded to ticks).
    Every method that takes ``rows`` (n,) uses mixture ``rows[i]`` for item ``i``, so a few distributions can
    serve many values (the IDF's top prior: one per dimension, shared by all images).

    Example:
        >>> mixtures = LogisticMixtures.from_floats(np.array([[0.3]]), np.array([[0.0]]))
        >>> rows, offsets = np.zeros(2, dtype=np.int64), np.array([-4, -4])
        >>> symbols, starts, frequencies = mixtures.intervals(rows, np.array([0, 9]), offsets, 9, precision=16)
        >>> symbols.tolist(), int(frequencies[1])  # 9 lies outside -4..4: the escape symbol, one slot
        ([4, 9], 1)
    """

    means: np.ndarray  # (N, M) int64 ticks
    log_scales: np.ndarray  # (N, M) int64 ticks, clipped to +-LOG_SCALE_LIMIT
    relative_logits: np.ndarray  # (N, M) int64 ticks, logit minus the row's largest logit (<= 0)
    weights: np.ndarray  # (N, M) int64, rows summing to 2^WEIGHT_BITS
    inverse_scales: np.ndarray  # (N, M) float64: e^(-log_scale) * 2^(_Z_BITS - TICK_BITS)

    @classmethod
    def from_ticks(cls, means: np.ndarray, log_scales: np.ndarray, logits: np.ndarray | None = None):
        """Mixtures from integer means, log-scales and (optionally; default one component) weight logits (N, M)."""
        means = _as_ticks("means", means)
        log_scales = np.clip(_as_ticks("log_scales", log_scales, means.shape), -LOG_SCALE_LIMIT, LOG_SCALE_LIMIT)
        logits = np.zeros_like(means) if logits is None else _as_ticks("logits", logits, means.shape)
        if np.abs(means).max(initial=0) > MEAN_LIMIT << TICK_BITS:
            raise ValueError(f"means must lie within +-2^{MEAN_LIMIT.bit_length() - 1}")
        relative = logits - logits.max(axis=1, keepdims=True) if logits.size else logits
        return cls(
            means=means,
            log_scales=log_scales,
            relative_logits=relative,
            weights=mixture_weights(logits) if logits.size else logits,
            inverse_scales=exp_ticks(-log_scales) * 2.0 ** (_Z_BITS - TICK_BITS),
        )

    @classmethod
    def from_floats(cls, means: np.ndarray, log_scales: np.ndarray, logits: np.ndarray | None = None):
        """Like :meth:`from_ticks` for real parameters (N, M) (or (N,) for one component), rounded to ticks."""

        def ticks(name: str, value: np.ndarray, limit: float) -> np.ndarray:
            value = np.asarray(value, dtype=np.float64)
            value = value[:, None] if value.ndim == 1 else value
            if not np.isfinite(value).all():
                raise ValueError(f"{name} must be finite")
            return np.rint(np.clip(value, -limit, limit) * (1 << TICK_BITS)).astype(np.int64)

        return cls.from_ticks(
            ticks("means", means, float(MEAN_LIMIT)),
            ticks("log_scales", log_scales, LOG_SCALE_LIMIT / (1 << TICK_BITS)),
            None if logits is None else ticks("logits", logits, float(MEAN_LIMIT)),
        )

    def __len__(self) -> int:
        return len(self.means)

    # ---------------------------------------------------------------------------------------------- windows
    def windows(self, tail: float = 16.0) -> tuple[np.ndarray, np.ndarray]:
        """Per mixture: the window's first value and the index of its half-width in :data:`HALF_WIDTHS`.

        The window covers each component ``m`` to ``(tail + l_m) s_m`` on either side of its mean, ``l_m`` its logit
        minus the largest (at least ``log w_m``): outside, a component keeps at most ``e^-tail`` of the mixture's
        mass (values there are escaped). Components with ``l_m <= -tail`` do not widen the window. The half-width
        is the smallest of :data:`HALF_WIDTHS` that covers this (or the largest), centred on the covered range.
        Integer arithmetic but for one product, so encoder and decoder agree.
        """
        reach_ticks = np.maximum(np.int64(tail * (1 << TICK_BITS)) + self.relative_logits, 0)
        reach = np.floor(exp_ticks(self.log_scales) * reach_ticks.astype(np.float64)).astype(np.int64)
        active = reach_ticks > 0  # the heaviest component always is
        low = np.where(active, self.means - reach, np.iinfo(np.int64).max).min(axis=1) >> TICK_BITS
        high = -(-np.where(active, self.means + reach, np.iinfo(np.int64).min).max(axis=1) >> TICK_BITS)
        centre = (low + high) >> 1
        bucket = np.minimum(np.searchsorted(np.asarray(HALF_WIDTHS), high - centre), len(HALF_WIDTHS) - 1)
        return centre - np.asarray(HALF_WIDTHS, dtype=np.int64)[bucket], bucket

    # ---------------------------------------------------------------------------------------------- table entries
    def cdf(self, rows: np.ndarray, offsets: np.ndarray, k: np.ndarray, size: int, precision: int) -> np.ndarray:
        """Table entries ``c_k`` (n,) int64 for item ``i``: mixture ``rows[i]``, window ``offsets[i] ..
        offsets[i] + size - 1``, entry ``k[i]`` in ``0 .. size + 1`` (the rule of the module docstring)."""
        total = 1 << _check_precision(precision)
        k = np.asarray(k, dtype=np.int64)
        edges = ((np.asarray(offsets, dtype=np.int64) + k) << TICK_BITS) - (1 << (TICK_BITS - 1))
        z = (edges[:, None] - self.means[rows]).astype(np.float64) * self.inverse_scales[rows]
        limit = float(Z_LIMIT << _Z_BITS)
        scaled = np.floor(np.clip(z, -limit, limit)).astype(np.int64)
        magnitude = np.abs(scaled)
        index, fraction = magnitude >> FRACTION_BITS, magnitude & ((1 << FRACTION_BITS) - 1)
        table = sigmoid_table()
        low = table[index]
        sigmoid = low + (((table[index + 1] - low) * fraction) >> FRACTION_BITS)
        sigmoid = np.where(scaled < 0, (1 << SIGMOID_BITS) - sigmoid, sigmoid)
        mixture = (self.weights[rows] * sigmoid).sum(axis=1)  # <= 2^62: exact
        entries = k + (((mixture >> (SIGMOID_BITS + WEIGHT_BITS - _CDF_BITS)) * (total - 1 - size)) >> _CDF_BITS)
        return np.where(k == 0, 0, np.where(k >= size, total - 1 + (k - size), entries))

    def intervals(
        self, rows: np.ndarray, values: np.ndarray, offsets: np.ndarray, size: int, precision: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the encoder pushes for ``values`` (n,): symbols (``value - offset``, or ``size`` for a value outside
        the window: the escape), and their intervals ``(starts, frequencies)`` (n,) int64 (two entries each)."""
        _check_size(size, precision)
        symbols = np.asarray(values, dtype=np.int64) - offsets
        symbols = np.where((symbols < 0) | (symbols >= size), size, symbols)
        if compiled.enabled():
            rows, offsets = np.ascontiguousarray(rows, dtype=np.int64), np.ascontiguousarray(offsets, dtype=np.int64)
            starts, frequencies = np.empty_like(symbols), np.empty_like(symbols)
            _intervals_compiled(rows, offsets, symbols, size, 1 << precision, self.means, self.inverse_scales,
                                self.weights, sigmoid_table(), starts, frequencies)
            return symbols, starts, frequencies
        starts = self.cdf(rows, offsets, symbols, size, precision)
        return symbols, starts, self.cdf(rows, offsets, symbols + 1, size, precision) - starts

    def tables(self, rows: np.ndarray, offsets: np.ndarray, size: int, precision: int) -> np.ndarray:
        """Whole tables ``(n, size + 2)`` uint32 (``size`` values, the escape, the leading 0): every entry of
        :meth:`cdf`, for coders that search a table. Built in blocks of bounded memory."""
        _check_size(size, precision)
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        tables = np.empty((len(rows), size + 2), dtype=np.uint32)
        if compiled.enabled():
            _tables_compiled(rows, offsets, size, 1 << precision, self.means, self.inverse_scales, self.weights,
                             sigmoid_table(), tables)
            return tables
        k = np.arange(size + 2, dtype=np.int64)
        step = max(1, _BLOCK_ENTRIES // (size + 2))
        for first in range(0, len(rows), step):
            block = slice(first, first + step)
            count = len(rows[block])
            tables[block] = self.cdf(
                np.repeat(rows[block], size + 2), np.repeat(offsets[block], size + 2), np.tile(k, count), size,
                precision,
            ).reshape(count, size + 2)
        return tables

    def pop(self, coder: VectorRANS, rows: np.ndarray, offsets: np.ndarray, size: int) -> np.ndarray:
        """Pop the symbols (n,) int64 pushed as :meth:`intervals` with these windows (the escape is ``size``).

        Each symbol is searched among table entries computed as needed, without building tables. Compiled: from the
        mean of the heaviest component outwards, doubling the step until the slot is bracketed, then bisecting (a
        few entries for a sharp distribution, about ``2 log2 size`` at worst). NumPy: all lanes of a chunk bisect
        the window together (``log2 size`` steps). Both return the same symbols.
        """
        _check_size(size, coder.precision)
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        if compiled.enabled():
            heaviest = np.argmax(self.weights[rows], axis=1)
            modes = (self.means[rows, heaviest] + (1 << (TICK_BITS - 1))) >> TICK_BITS
            guesses = np.clip(modes - offsets, 0, size - 1)
            return coder.pop_compiled(
                _pop_compiled, len(rows), coder.precision, rows, offsets, guesses, size, self.means,
                self.inverse_scales, self.weights, sigmoid_table(),
            )
        symbols = np.empty(len(rows), dtype=np.int64)
        steps = int(size).bit_length()  # ceil(log2(size + 1)) halvings take the bracket [0, size + 1) to one entry

        def find(first: int, slot: np.ndarray):
            items = slice(first, first + len(slot))
            low, high = np.zeros(len(slot), dtype=np.int64), np.full(len(slot), size + 1, dtype=np.int64)
            start, end = np.zeros(len(slot), dtype=np.int64), np.full(len(slot), 1 << coder.precision, np.int64)
            for _ in range(steps):  # c_low = start <= slot < end = c_high
                middle = (low + high) >> 1
                entry = self.cdf(rows[items], offsets[items], middle, size, coder.precision)
                below = entry <= slot
                low, start = np.where(below, middle, low), np.where(below, entry, start)
                high, end = np.where(below, high, middle), np.where(below, end, entry)
            symbols[items] = low
            return start, end - start

        coder._pop_intervals(len(rows), find, np.dtype(np.int64))
        return symbols


def _as_ticks(name: str, value: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    value = np.asarray(value)
    if value.ndim == 1:
        value = value[:, None]
    if value.ndim != 2 or (shape is not None and value.shape != shape):
        raise ValueError(f"{name} must have shape {shape or '(N, M)'}, got {value.shape}")
    if value.size and not np.issubdtype(value.dtype, np.integer):
        raise ValueError(f"{name} must be integers (ticks of 2^-{TICK_BITS}); use from_floats for real values")
    return np.ascontiguousarray(value, dtype=np.int64)


def _check_size(size: int, precision: int) -> None:
    if not 1 <= size <= (1 << precision) - 2:
        raise ValueError(f"a window of {size} values plus an escape symbol does not fit in 2**{precision} slots")


# --------------------------------------------------------------------------------------------------------------
# Compiled loop (used when Numba is installed): LogisticMixtures.cdf entry by entry, and a pop that bisects
# --------------------------------------------------------------------------------------------------------------


@compiled.jit
def _cdf_compiled(row, offset, k, size, total, means, inverse_scales, weights, table):  # pragma: no cover
    """One entry of :meth:`LogisticMixtures.cdf`, in the same operations."""
    if k == 0:
        return 0
    if k >= size:
        return total - 1 + (k - size)
    edge = ((offset + k) << TICK_BITS) - (1 << (TICK_BITS - 1))
    limit = float(Z_LIMIT << _Z_BITS)
    mixture = 0
    for component in range(means.shape[1]):
        z = np.float64(edge - means[row, component]) * inverse_scales[row, component]
        scaled = np.int64(np.floor(min(max(z, -limit), limit)))
        magnitude = abs(scaled)
        index, fraction = magnitude >> FRACTION_BITS, magnitude & ((1 << FRACTION_BITS) - 1)
        sigmoid = table[index] + (((table[index + 1] - table[index]) * fraction) >> FRACTION_BITS)
        if scaled < 0:
            sigmoid = (1 << SIGMOID_BITS) - sigmoid
        mixture += weights[row, component] * sigmoid
    return k + (((mixture >> (SIGMOID_BITS + WEIGHT_BITS - _CDF_BITS)) * (total - 1 - size)) >> _CDF_BITS)


@compiled.jit
def _tables_compiled(rows, offsets, size, total, means, inverse_scales, weights, table, out):  # pragma: no cover
    """:meth:`LogisticMixtures.tables` entry by entry."""
    for item in range(rows.shape[0]):
        for k in range(size + 2):
            out[item, k] = _cdf_compiled(rows[item], offsets[item], k, size, total, means, inverse_scales, weights,
                                         table)


@compiled.jit
def _intervals_compiled(rows, offsets, symbols, size, total, means, inverse_scales, weights, table, starts,
                        frequencies):  # pragma: no cover - compiled
    """:meth:`LogisticMixtures.intervals` item by item: the entries ``c_s`` and ``c_{s+1}`` of each symbol ``s``."""
    for item in range(symbols.shape[0]):
        start = _cdf_compiled(rows[item], offsets[item], symbols[item], size, total, means, inverse_scales, weights,
                              table)
        end = _cdf_compiled(rows[item], offsets[item], symbols[item] + 1, size, total, means, inverse_scales, weights,
                            table)
        starts[item], frequencies[item] = start, end - start


@compiled.jit
def _pop_compiled(state, stack, top, precision, rows, offsets, guesses, size, means, inverse_scales, weights, table,
                  symbols):  # pragma: no cover - compiled
    """:meth:`LogisticMixtures.pop`: ``VectorRANS.pop``'s lane order; each symbol's entries computed as needed."""
    lanes, count, total = state.shape[0], symbols.shape[0], 1 << precision
    for first in range(0, count, lanes):
        for lane in range(min(lanes, count - first) - 1, -1, -1):
            item = first + lane
            row, offset = rows[item], offsets[item]
            slot = np.int64(state[lane] & np.uint64(total - 1))
            # Bracket the slot, c_low <= slot < c_high, from the guess outwards with doubling steps ...
            low, step = guesses[item], 1
            start = _cdf_compiled(row, offset, low, size, total, means, inverse_scales, weights, table)
            if start <= slot:
                high = min(low + 1, size + 1)
                end = _cdf_compiled(row, offset, high, size, total, means, inverse_scales, weights, table)
                while end <= slot:
                    low, start = high, end
                    high = min(low + step, size + 1)
                    end = _cdf_compiled(row, offset, high, size, total, means, inverse_scales, weights, table)
                    step *= 2
            else:
                high, end = low, start
                low = max(high - 1, 0)
                start = _cdf_compiled(row, offset, low, size, total, means, inverse_scales, weights, table)
                while start > slot:
                    high, end = low, start
                    low = max(high - step, 0)
                    start = _cdf_compiled(row, offset, low, size, total, means, inverse_scales, weights, table)
                    step *= 2
            # ... then bisect.
            while high - low > 1:
                middle = (low + high) >> 1
                entry = _cdf_compiled(row, offset, middle, size, total, means, inverse_scales, weights, table)
                if entry <= slot:
                    low, start = middle, entry
                else:
                    high, end = middle, entry
            top = _pop_step(state, stack, top, lane, slot, start, end - start, precision)
            if top < 0:
                return -1
            symbols[item] = low
    return top
