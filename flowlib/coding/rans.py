"""rANS: range asymmetric numeral systems, a stack-like entropy coder with 64-bit state and 32-bit words.

References:
    Duda, "Asymmetric numeral systems: entropy coding combining speed of Huffman coding with compression rate of
    arithmetic coding", 2013, https://arxiv.org/abs/1311.2540.
    Townsend, "A tutorial on the range variant of asymmetric numeral systems", 2020,
    https://arxiv.org/abs/2001.09186 (the push/pop maps below and the overhead bound used in the tests).
    Giesen, "Interleaved entropy coders", 2014, https://arxiv.org/abs/1402.3392 (the lanes of :class:`VectorRANS`).

A probability is an integer frequency out of ``2**precision``. A symbol with frequency ``f`` owns the slots
``[start, start + f)`` of ``[0, 2**precision)``, where ``start`` is the sum of the frequencies before it; the
table ``cdf`` of a ``K``-symbol alphabet has ``K + 1`` entries, ``cdf[0] = 0`` and ``cdf[K] = 2**precision``.

The coder keeps an integer state ``x`` and a stack of 32-bit words. Between operations ``x`` lies in
``[L, L * 2**32)`` with ``L = 2**31`` (``RANS_LOWER_BOUND``), so it fits in 64 bits. With ``p = precision``:

* push (encode) a symbol ``(start, f)``:
  1. renormalise: if ``x >= f * 2**(63 - p)``, move the low 32 bits of ``x`` onto the stack, ``x >>= 32``;
  2. encode: ``x = (x // f) * 2**p + x % f + start``.
* pop (decode):
  1. ``slot = x % 2**p``; the symbol is the one whose slots contain ``slot``;
  2. ``x = f * (x // 2**p) + slot - start``, which undoes step 2 of push;
  3. renormalise: if ``x < L``, ``x = x * 2**32 + (the word on top of the stack)``, which undoes step 1.

Push step 1 moves a word exactly when step 2 would otherwise reach ``L * 2**32 = 2**63``; after the move
``x >= f * 2**(31 - p)``, so step 2 lands at or above ``L`` again. Each push grows ``log2 x`` by ``log2(2**p / f)``
bits up to ``-log2(1 - 2**(p - 31))`` (Townsend 2020), so the stream costs the information content of the
quantised table, a tiny rounding term per symbol, and the words that store the final state.

Start state and serialised format (shared by both coders; all numbers little-endian):

* every lane starts at ``x = L``, which the decoder knows, so a finished decode must end there
  (``check_finished`` tests it: a cheap integrity check);
* ``to_bytes`` writes: the number ``A`` of lanes that are not in the start state (LEB128 varint; lanes ``>= A``
  write nothing); the byte length (4..8) of the state of each lane ``< A``, as 4-bit numbers ``length - 4``
  packed two per byte; those states (little-endian, ``length`` bytes each); then the stack, bottom first.
* a final state ``x`` carries ``log2(x / L)`` bits of the message (about 2 bytes on average) but takes
  ``ceil(log2(x + 1) / 8)`` bytes plus half a byte of length: about 5 bytes of overhead per lane that received
  symbols, none for lanes that did not (measured in ``benchmarks/rans.py``). Short messages should use few lanes.
  (Starting below ``L`` would not help much: pushes from a small state round badly, up to ``precision`` bits.)
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

import numpy as np

from flowlib.coding import compiled

__all__ = [
    "MAX_PRECISION",
    "MIN_PRECISION",
    "RANS_LOWER_BOUND",
    "WORD_BITS",
    "CorruptStreamError",
    "ScalarRANS",
    "VectorRANS",
]

RANS_LOWER_BOUND = 1 << 31  # L: the state lies in [L, L * 2**32) between operations
WORD_BITS = 32  # the coder moves 32-bit words between the state and the stack
MIN_PRECISION = 8
MAX_PRECISION = 24
_WORD_MASK = (1 << WORD_BITS) - 1
_STATE_BITS = 64


class CorruptStreamError(ValueError):
    """Raised when a compressed stream is truncated or corrupt, or was decoded with other tables or settings."""


def _check_precision(precision: int) -> int:
    if not isinstance(precision, (int, np.integer)) or not MIN_PRECISION <= precision <= MAX_PRECISION:
        raise ValueError(
            f"precision must be an integer number of bits in [{MIN_PRECISION}, {MAX_PRECISION}], got {precision!r}"
        )
    return int(precision)


# --------------------------------------------------------------------------------------------------------------
# Serialisation shared by both coders
# --------------------------------------------------------------------------------------------------------------


def _write_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes) -> tuple[int, int]:
    value = 0
    for index in range(min(len(data), 4)):
        value |= (data[index] & 0x7F) << (7 * index)
        if not data[index] & 0x80:
            return value, index + 1
    raise CorruptStreamError(
        "the stream header is truncated or corrupt (bad lane count); the data is not an rANS stream"
    )


def _state_sizes(states: np.ndarray) -> np.ndarray:
    """Bytes needed to store each state (4..8; states are in [2**31, 2**63))."""
    return 4 + (states[:, None] >> np.array([32, 40, 48, 56], dtype=np.uint64) > 0).sum(axis=1)


def _serialise(states: np.ndarray, stack: np.ndarray) -> bytes:
    """``states`` (num_lanes,) uint64 and ``stack`` (W,) uint32 -> bytes in the format of the module docstring."""
    active = np.flatnonzero(states != RANS_LOWER_BOUND)
    num_active = int(active[-1]) + 1 if active.size else 0
    states = states[:num_active]
    sizes = _state_sizes(states)
    nibbles = np.zeros(num_active + num_active % 2, dtype=np.uint8)
    nibbles[:num_active] = sizes - 4
    lengths = nibbles[0::2] | (nibbles[1::2] << 4)  # two lanes per byte, the first in the low half
    state_bytes = states.astype("<u8").view(np.uint8).reshape(num_active, 8)[np.arange(8) < sizes[:, None]]
    return _write_varint(num_active) + lengths.tobytes() + state_bytes.tobytes() + stack.astype("<u4").tobytes()


def _deserialise(data: bytes, num_lanes: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`_serialise`: ``(states (num_lanes,) uint64, stack (W,) uint32)``."""
    data = bytes(data)
    num_active, offset = _read_varint(data)
    if num_active > num_lanes:
        raise CorruptStreamError(
            f"the stream holds {num_active} lanes but the coder has {num_lanes}; decode with the num_lanes used to "
            "encode (or the data is corrupt)"
        )
    num_length_bytes = (num_active + 1) // 2
    lengths = np.frombuffer(data[offset : offset + num_length_bytes], dtype=np.uint8)
    nibbles = np.stack([lengths & 15, lengths >> 4], axis=1).reshape(-1)
    sizes = 4 + nibbles[:num_active].astype(np.int64)
    offset += num_length_bytes
    end = offset + int(sizes.sum())
    if len(lengths) < num_length_bytes or end > len(data):
        raise CorruptStreamError("the stream is truncated: it ends inside the stored lane states")
    if (nibbles[:num_active] > 4).any() or nibbles[num_active:].any():
        raise CorruptStreamError("the stream is corrupt: a stored lane state has an impossible length")
    present = np.arange(8) < sizes[:, None]
    state_bytes = np.zeros((num_active, 8), dtype=np.uint8)
    state_bytes[present] = np.frombuffer(data[offset:end], dtype=np.uint8)
    stored = state_bytes.view("<u8").reshape(num_active).astype(np.uint64)
    if (stored < RANS_LOWER_BOUND).any() or (stored >> np.uint64(63)).any() or (_state_sizes(stored) != sizes).any():
        raise CorruptStreamError("the stream is corrupt: a stored lane state is outside [2**31, 2**63) or mis-sized")
    states = np.full(num_lanes, RANS_LOWER_BOUND, dtype=np.uint64)
    states[:num_active] = stored
    if (len(data) - end) % 4:
        raise CorruptStreamError(
            f"the stream is {len(data)} bytes, not a whole number of 32-bit words after its header: it was truncated"
        )
    return states, np.frombuffer(data, dtype="<u4", offset=end).astype(np.uint32)


# --------------------------------------------------------------------------------------------------------------
# Scalar reference coder
# --------------------------------------------------------------------------------------------------------------


class ScalarRANS:
    """A readable rANS coder on Python integers: one state, one stack of 32-bit words.

    Invariant: between operations ``RANS_LOWER_BOUND <= state < RANS_LOWER_BOUND * 2**32``. Push and pop are
    exact inverses, so symbols come back in the reverse order of pushing (a stack).

    Arguments:
        precision: bits of the probability tables, 8..24; a frequency ``f`` means probability ``f / 2**precision``.

    Example:
        >>> coder = ScalarRANS(precision=8)
        >>> cdf = [0, 64, 192, 256]  # P = 1/4, 1/2, 1/4
        >>> for symbol in [2, 0, 1]:
        ...     coder.push_symbol(symbol, cdf)
        >>> [coder.pop(cdf) for _ in range(3)]
        [1, 0, 2]
        >>> coder.check_finished()
    """

    def __init__(self, precision: int = 16) -> None:
        self.precision = _check_precision(precision)
        self.state = RANS_LOWER_BOUND  # the start state; a finished decode returns here
        self.words: list[int] = []  # the stack of 32-bit words, top at the end

    def push(self, start: int, frequency: int) -> None:
        """Encode the symbol that owns slots ``[start, start + frequency)`` of ``[0, 2**precision)``."""
        start, frequency = int(start), int(frequency)
        if frequency <= 0 or start < 0 or start + frequency > 1 << self.precision:
            raise ValueError(
                f"cannot push the interval start={start}, frequency={frequency}: it must have frequency >= 1 and lie "
                f"in [0, 2**{self.precision}); quantise the distribution so every symbol you code has frequency >= 1"
            )
        # 1. Renormalise, so that step 2 stays below L * 2**32: x_max = (L / 2**p) * 2**32 * f = f * 2**(63 - p).
        if self.state >= frequency << (_STATE_BITS - 1 - self.precision):
            self.words.append(self.state & _WORD_MASK)  # the low 32 bits go onto the stack
            self.state >>= WORD_BITS  # now f * 2**(31 - p) <= state < L
        # 2. Encode: the state grows by a factor of about 2**p / f, i.e. by -log2(f / 2**p) bits, and its low p bits
        #    now point into the symbol's slots [start, start + f). Afterwards L <= state < L * 2**32 again.
        self.state = (self.state // frequency << self.precision) + self.state % frequency + start

    def push_symbol(self, symbol: int, cdf: Sequence[int]) -> None:
        """Encode ``symbol`` with the cumulative table ``cdf`` (length ``K + 1``, ``cdf[K] = 2**precision``)."""
        _check_scalar_cdf(cdf, self.precision)
        if not 0 <= symbol < len(cdf) - 1:
            raise ValueError(f"symbol {symbol} is outside the table's alphabet 0..{len(cdf) - 2}")
        self.push(cdf[symbol], cdf[symbol + 1] - cdf[symbol])

    def pop_with(self, lookup: Callable[[int], tuple[int, int, int]]) -> int:
        """Decode one symbol; ``lookup(slot) -> (symbol, start, frequency)`` names the symbol owning ``slot``."""
        # 1. The low p bits of the state name a slot, and the slot names the symbol.
        slot = self.state & ((1 << self.precision) - 1)
        symbol, start, frequency = lookup(slot)
        if not start <= slot < start + frequency:
            raise ValueError(
                f"lookup({slot}) returned the interval [{start}, {start + frequency}) that misses the slot"
            )
        # 2. Undo the encoding step: x = f * (x // 2**p) + slot - start.
        self.state = frequency * (self.state >> self.precision) + slot - start
        # 3. Undo the renormalisation: a state below L means the encoder had moved a word to the stack here.
        #    Afterwards L <= state < L * 2**32 again.
        if self.state < RANS_LOWER_BOUND:
            if not self.words:
                raise CorruptStreamError(
                    "the stream ran out of words while decoding: it is truncated, corrupt, or decoded with other tables"
                )
            self.state = (self.state << WORD_BITS) | self.words.pop()
        return symbol

    def pop(self, cdf: Sequence[int]) -> int:
        """Decode one symbol with the table ``cdf`` it was pushed with; returns the symbol."""
        _check_scalar_cdf(cdf, self.precision)

        def lookup(slot: int) -> tuple[int, int, int]:
            symbol = bisect.bisect_right(cdf, slot) - 1  # the last symbol whose start is <= slot
            return symbol, int(cdf[symbol]), int(cdf[symbol + 1] - cdf[symbol])

        return self.pop_with(lookup)

    def push_symbols(self, symbols: np.ndarray, cdf: np.ndarray) -> None:
        """Push ``symbols`` (N,) with one table row each ``cdf`` (N, K+1) (or one row (K+1,) for all), last first,
        so pops return them in order."""
        symbols = _as_integers("symbols", symbols)
        rows = _table_rows(cdf, len(symbols))
        for row in rows:  # every table first, so that a bad one leaves the coder untouched
            _check_scalar_cdf(row.tolist(), self.precision)
        for index in range(len(symbols) - 1, -1, -1):
            self.push_symbol(int(symbols[index]), rows[min(index, len(rows) - 1)].tolist())

    def pop_symbols(self, cdf: np.ndarray, count: int | None = None) -> np.ndarray:
        """Pop one symbol per row of ``cdf`` (N, K+1) (or ``count`` symbols with one row (K+1,)); the inverse of
        :meth:`push_symbols`. Returns (N,) int64."""
        rows = _table_rows(cdf, count)
        count = len(rows) if count is None else count
        for row in rows:
            _check_scalar_cdf(row.tolist(), self.precision)
        return np.array([self.pop(rows[min(index, len(rows) - 1)].tolist()) for index in range(count)], dtype=np.int64)

    def push_uniform(self, values: np.ndarray, bits: int) -> None:
        """Push integers ``values`` (N,) in ``[0, 2**bits)`` with equal probabilities (``bits <= precision``)."""
        shift = _uniform_shift(bits, self.precision)
        values = _as_integers("uniform values", values)
        if values.size and (values.min() < 0 or values.max() >> bits):
            raise ValueError(f"uniform values must lie in [0, 2**{bits}), got {values.min()}..{values.max()}")
        for value in np.asarray(values)[::-1].tolist():
            self.push(value << shift, 1 << shift)

    def pop_uniform(self, count: int, bits: int) -> np.ndarray:
        """Pop ``count`` integers pushed by :meth:`push_uniform`; returns (count,) int64."""
        shift = _uniform_shift(bits, self.precision)
        return np.array(
            [self.pop_with(lambda slot: (slot >> shift, slot >> shift << shift, 1 << shift)) for _ in range(count)],
            dtype=np.int64,
        )

    def check_finished(self) -> None:
        """Raise :class:`CorruptStreamError` unless the decoder is back in the start state with every word used."""
        if self.state != RANS_LOWER_BOUND or self.words:
            raise CorruptStreamError(
                f"decoding ended in state {self.state:#x} with {len(self.words)} unused words instead of the start "
                f"state {RANS_LOWER_BOUND:#x} with none: the stream is corrupt or was decoded with other tables"
            )

    def to_bytes(self) -> bytes:
        """The compressed stream (format in the module docstring; identical to a one-lane :class:`VectorRANS`)."""
        return _serialise(np.array([self.state], dtype=np.uint64), np.array(self.words, dtype=np.uint32))

    @classmethod
    def from_bytes(cls, data: bytes, precision: int = 16) -> ScalarRANS:
        """A coder ready to pop the symbols stored in ``data`` (made by :meth:`to_bytes`)."""
        coder = cls(precision)
        states, words = _deserialise(data, num_lanes=1)
        coder.state = int(states[0])
        coder.words = words.tolist()
        return coder


def _check_scalar_cdf(cdf: Sequence[int], precision: int) -> None:
    if len(cdf) < 2 or cdf[0] != 0 or cdf[-1] != 1 << precision:
        raise ValueError(
            f"a cdf table must start at 0 and end at 2**precision = {1 << precision}; got length {len(cdf)} with "
            f"ends {cdf[0] if len(cdf) else None} and {cdf[-1] if len(cdf) else None}"
        )
    falls = [index for index in range(len(cdf) - 1) if cdf[index + 1] < cdf[index]]
    if falls:
        raise ValueError(
            f"a cdf table must be non-decreasing, but entry {falls[0] + 1} ({cdf[falls[0] + 1]}) is below entry "
            f"{falls[0]} ({cdf[falls[0]]}); build it as the cumulative sum of non-negative frequencies"
        )


def _as_integers(name: str, values: np.ndarray) -> np.ndarray:
    """``values`` as a 1-d int64 array; refuses floats (which would be truncated silently) and other shapes."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name} must have shape (N,), got {values.shape}")
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {values.dtype}; round or convert them first")
    return values.astype(np.int64)


def _table_rows(cdf: np.ndarray, count: int | None) -> np.ndarray:
    """``cdf`` as a 2-d integer array of ``count`` rows or of one row (broadcast to every symbol)."""
    cdf = np.asarray(cdf)
    if cdf.ndim == 1:
        cdf = cdf[None]
    if cdf.ndim != 2 or cdf.shape[1] < 2 or (count is not None and cdf.shape[0] not in (count, 1)):
        expected = f"({count}, K+1), (1, K+1) or (K+1,)" if count is not None else "(N, K+1)"
        raise ValueError(f"cdf must have shape {expected} with K >= 1 symbols, got {cdf.shape}")
    if cdf.size and not np.issubdtype(cdf.dtype, np.integer):
        raise ValueError(f"cdf tables must be integers (quantise them with flowlib.coding.cdf), got {cdf.dtype}")
    return cdf


def _uniform_shift(bits: int, precision: int) -> int:
    if not 1 <= bits <= precision:
        raise ValueError(f"uniform values must have 1..precision={precision} bits, got {bits}")
    return precision - bits


_MAX_FINE = 16  # the last level of VectorRANS.pop's symbol search compares up to 15 consecutive entries at once


def _search_plan(alphabet: int) -> tuple[list[int], int]:
    """The levels of :meth:`VectorRANS.pop`'s search for ``s``, the number of entries ``1..K-1`` of a row ``<= slot``.

    ``c`` binary levels narrow ``s`` down to ``fine = ceil(K / 2**c) <= _MAX_FINE`` candidates, which one last
    level compares all at once. Invariant, with ``pos`` starting at 0 and ``span`` at ``K``:
    ``pos <= s <= pos + span - 1 <= K - 1``. A binary level with stride ``d`` adds ``d`` to ``pos`` if
    ``cdf[pos + d] <= slot``; its ``span`` becomes ``fine * 2**j`` for the levels ``j = c - 1, ..., 0``, and its
    stride is the span it leaves, except on the first level, whose stride ``K - fine * 2**(c - 1)`` (>= 1) lines the
    rest up with the row's end. The last level adds the number of the entries ``pos + 1 .. pos + fine - 1`` that
    are ``<= slot`` (rows are non-decreasing, so these form a prefix), which makes ``pos = s``. No probe leaves the
    row. Binary levels read one cache line of each row, far apart; the last one reads about two, adjacent.

    Returns ``(strides of the binary levels, fine)``.
    """
    levels = 0
    while -(-alphabet >> levels) > _MAX_FINE:
        levels += 1
    fine = -(-alphabet >> levels)  # ceil(K / 2**levels)
    strides = [fine << level for level in range(levels - 1, -1, -1)]
    if strides:
        strides[0] = alphabet - strides[0]
    return strides, fine


# --------------------------------------------------------------------------------------------------------------
# Vectorised coder with interleaved lanes
# --------------------------------------------------------------------------------------------------------------


class VectorRANS:
    """rANS with ``num_lanes`` interleaved states updated together; one shared stack of 32-bit words.

    A call ``push(symbols, cdf)`` with ``N`` symbols gives symbol ``i`` to lane ``i % num_lanes``: the symbols form
    chunks of ``num_lanes`` (the last one shorter) that are pushed last chunk first, all lanes of a chunk at once.
    Within a chunk the lanes that renormalise put their words on the stack in lane order; ``pop`` walks the chunks
    first to last and hands the top words back to the same lanes, so it mirrors ``push`` exactly and returns the
    symbols of one call in their original order. Separate calls stack (last pushed, first popped).

    The loops run compiled (Numba, :mod:`flowlib.coding.compiled`) when it is installed, else in NumPy over chunks
    of ``num_lanes`` symbols (``N / num_lanes`` Python iterations); both write the same bytes. Each lane that
    received symbols costs about 5 bytes when the stream is flushed (see the module docstring), so short messages
    should use few lanes.

    Every table is checked before it is used (rows non-decreasing from 0 to ``2**precision``, one row per symbol or
    one row for all, the coded symbols of non-zero frequency): a bad table raises ``ValueError`` on push and on pop
    instead of coding symbols that cannot be decoded. ``benchmarks/rans.py`` prints what the check costs.

    Arguments:
        num_lanes: number of interleaved rANS states.
        precision: bits of the probability tables, 8..24.

    Example:
        >>> cdf = np.array([[0, 1, 256], [0, 200, 256], [0, 128, 256]])
        >>> coder = VectorRANS(num_lanes=2, precision=8)
        >>> coder.push(np.array([1, 0, 1]), cdf)
        >>> decoder = VectorRANS.from_bytes(coder.to_bytes(), num_lanes=2, precision=8)
        >>> decoder.pop(cdf).tolist()
        [1, 0, 1]
        >>> decoder.check_finished()
    """

    def __init__(self, num_lanes: int = 64, precision: int = 16) -> None:
        if not isinstance(num_lanes, (int, np.integer)) or num_lanes < 1:
            raise ValueError(f"num_lanes must be a positive integer, got {num_lanes!r}")
        self.num_lanes = int(num_lanes)
        self.precision = _check_precision(precision)
        self._state = np.full(self.num_lanes, RANS_LOWER_BOUND, dtype=np.uint64)
        self._stack = np.empty(1024, dtype=np.uint32)
        self._top = 0  # number of words on the stack

    @property
    def num_words(self) -> int:
        """Number of 32-bit words on the stack (the lane states are flushed on top of these by ``to_bytes``)."""
        return self._top

    # ---------------------------------------------------------------------------------------------- encoding
    def push(self, symbols: np.ndarray, cdf: np.ndarray) -> None:
        """Encode ``symbols`` (N,) ints in ``[0, K)``, symbol ``i`` with table row ``cdf[i]`` (``cdf`` (N, K+1)), or
        all of them with one row (``cdf`` (K+1,) or (1, K+1)). A bad table raises ``ValueError`` and pushes nothing."""
        symbols = _as_integers("symbols", symbols)
        cdf = _contiguous_rows(cdf, len(symbols))
        alphabet = cdf.shape[1] - 1
        if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet):
            raise ValueError(
                f"symbols must lie in the table's alphabet 0..{alphabet - 1}, got {symbols.min()}..{symbols.max()}"
            )
        rows = np.arange(len(symbols)) if len(cdf) > 1 else np.zeros(len(symbols), dtype=np.int64)
        if compiled.enabled():  # each row is checked as it is used (one pass over the tables), else all first
            if len(cdf) == 1:
                self.check_tables(cdf, None)
            self._reserve(len(symbols))
            saved = self._state.copy(), self._top
            self._top, error, index = _push_table_compiled(
                self._state, self._stack, self._top, cdf, rows, symbols, self.precision, len(cdf) > 1
            )
            if error:
                self._state, self._top = saved
                self.check_tables(cdf, None)  # raises, saying what is wrong with the table
                raise _zero_frequency(symbols, index)
            return
        self.check_tables(cdf, len(symbols))
        starts = cdf[rows, symbols].astype(np.uint64)
        ends = cdf[rows, symbols + 1].astype(np.uint64)
        zero = np.flatnonzero(ends <= starts)
        if zero.size:
            raise _zero_frequency(symbols, zero[0])
        self._push_intervals(starts, ends - starts)

    def push_intervals(self, starts: np.ndarray, frequencies: np.ndarray) -> None:
        """Encode symbols given by their intervals: symbol ``i`` owns slots ``[starts[i], starts[i] + frequencies[i])``
        of ``[0, 2**precision)`` (N,) (for models that compute the two table entries a symbol needs directly)."""
        starts, frequencies = _as_integers("starts", starts), _as_integers("frequencies", frequencies)
        if starts.shape != frequencies.shape:
            raise ValueError(f"starts and frequencies must have one shape, got {starts.shape}, {frequencies.shape}")
        total = 1 << self.precision
        if starts.size and (starts.min() < 0 or frequencies.min() < 1 or (starts + frequencies).max() > total):
            raise ValueError(
                f"every interval needs start >= 0, frequency >= 1 and start + frequency <= 2**{self.precision}"
            )
        self._push_intervals(starts.astype(np.uint64), frequencies.astype(np.uint64))

    def push_uniform(self, values: np.ndarray, bits: int) -> None:
        """Encode integers ``values`` (N,) in ``[0, 2**bits)`` with equal probabilities (``bits <= precision``)."""
        shift = _uniform_shift(bits, self.precision)
        values = _as_integers("uniform values", values)
        if values.size and (values.min() < 0 or values.max() >> bits):
            raise ValueError(f"uniform values must lie in [0, 2**{bits}), got {values.min()}..{values.max()}")
        self._push_intervals(values.astype(np.uint64) << np.uint64(shift), np.full(len(values), 1 << shift, np.uint64))

    def _push_intervals(self, starts: np.ndarray, frequencies: np.ndarray) -> None:
        """Encode intervals ``(starts, frequencies)`` (N,) uint64, chunk by chunk, last chunk first."""
        self._reserve(len(starts))  # every push moves at most one word to the stack
        if compiled.enabled():
            self._top = _push_intervals_compiled(
                self._state, self._stack, self._top, starts, frequencies, self.precision
            )
            return
        count, lanes, precision = len(starts), self.num_lanes, np.uint64(self.precision)
        x_max = frequencies << np.uint64(_STATE_BITS - 1 - self.precision)  # renormalisation thresholds
        stack, top, state = self._stack, self._top, self._state
        word_bits = np.uint64(WORD_BITS)

        def encode(x, start, frequency, threshold, top):
            emit = x >= threshold
            moved = int(np.count_nonzero(emit))
            if moved:
                stack[top : top + moved] = x[emit]  # the assignment keeps the low 32 bits
                top += moved
                x = np.where(emit, x >> word_bits, x)
            quotient, remainder = np.divmod(x, frequency)
            quotient <<= precision
            quotient += remainder
            quotient += start
            return quotient, top

        full, rest = divmod(count, lanes)
        if rest:  # the short last chunk goes first
            tail = slice(full * lanes, count)
            state[:rest], top = encode(state[:rest], starts[tail], frequencies[tail], x_max[tail], top)
        shape = (full, lanes)
        starts, frequencies = starts[: full * lanes].reshape(shape), frequencies[: full * lanes].reshape(shape)
        x_max = x_max[: full * lanes].reshape(shape)
        for chunk in range(full - 1, -1, -1):
            state, top = encode(state, starts[chunk], frequencies[chunk], x_max[chunk], top)
        self._state, self._top = state, top

    def _reserve(self, extra: int) -> None:
        if self._top + extra > len(self._stack):
            grown = np.empty(max(2 * len(self._stack), self._top + extra), dtype=np.uint32)
            grown[: self._top] = self._stack[: self._top]
            self._stack = grown

    # ---------------------------------------------------------------------------------------------- decoding
    def pop(self, cdf: np.ndarray, count: int | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """Decode one symbol per row of ``cdf`` (N, K+1), the tables they were pushed with; or ``count`` symbols with
        one row (``cdf`` (K+1,) or (1, K+1)); or one symbol per entry of ``rows`` (n,), symbol ``i`` with the row
        ``cdf[rows[i]]`` (tables shared by many symbols). Returns (N,) int64. A bad table raises ``ValueError`` and
        leaves the coder as it was."""
        if rows is not None:
            rows = _as_integers("rows", rows)
            cdf = _contiguous_rows(cdf, None)
            if rows.size and (rows.min() < 0 or rows.max() >= len(cdf)):
                raise ValueError(f"rows must index the {len(cdf)} rows of cdf, got {rows.min()}..{rows.max()}")
        else:
            cdf = _contiguous_rows(cdf, count)
            count = len(cdf) if count is None else int(count)
            rows = np.arange(count) if len(cdf) > 1 else np.zeros(count, dtype=np.int64)
        count = len(rows)
        shared = len(cdf) < count or not np.array_equal(rows, np.arange(count))  # rows used more than once
        if compiled.enabled():  # each row is checked as it is used (one pass over the tables), else all first
            if shared:
                self.check_tables(cdf, None)
            saved, symbols = (self._state.copy(), self._top), np.empty(count, dtype=np.int64)
            top, error = _pop_table_compiled(
                self._state, self._stack, self._top, cdf, rows, self.precision, not shared, symbols
            )
            if error:
                self._state, self._top = saved
                self.check_tables(cdf, None)  # raises, saying what is wrong with the table
                raise CorruptStreamError(_OUT_OF_WORDS)
            self._top = top
            return symbols
        self.check_tables(cdf, None)
        width = cdf.shape[1]  # K + 1 entries per row
        flat, following = cdf.reshape(-1), cdf.reshape(-1)[1:]  # following[i] = flat[i + 1]
        # Each lane searches its own row for the symbol s = the number of entries 1..K-1 that are <= slot, as
        # _search_plan describes; ``position`` is the flat index of cdf[row, pos]. Every index stays inside its row,
        # so mode="clip" never clips (it only lets take write into ``out`` without a bounds-checked copy).
        strides, fine = _search_plan(width - 1)
        shifted = [(flat[stride:], np.int64(stride)) for stride in strides]  # flat[stride:][i] = flat[i + stride]
        fine_offsets = np.arange(1, fine, dtype=np.int64)[:, None]
        row_starts = rows * width
        positions = row_starts.copy()  # ends as the flat index of each symbol's start, cdf[i, s_i]
        buffers = {}

        def make_buffers(lanes: int):
            return (
                np.empty(lanes, dtype=flat.dtype),  # a binary level's entries
                np.empty(lanes, dtype=bool),  # entry <= slot
                np.empty(lanes, dtype=np.int64),  # what the level adds to ``position``
                np.empty((fine - 1, lanes), dtype=np.int64),  # the last level's flat indices
                np.empty((fine - 1, lanes), dtype=flat.dtype),  # its entries, (probes, lanes): calls loop over lanes
                np.empty((fine - 1, lanes), dtype=np.uint8),  # entry <= slot, as 0 or 1
                np.empty(lanes, dtype=np.uint8),  # the number of its entries <= slot
            )

        def find(first: int, slot: np.ndarray):
            lanes = len(slot)
            if lanes not in buffers:
                buffers[lanes] = make_buffers(lanes)
            entry, is_below, step, index, entries, below, count_below = buffers[lanes]
            position = positions[first : first + lanes]  # a view, starting at the chunk's row starts
            for view, stride in shifted:
                view.take(position, out=entry, mode="clip")
                np.less_equal(entry, slot, out=is_below)
                position += np.multiply(is_below, stride, out=step)
            if fine > 1:
                np.add(fine_offsets, position, out=index)
                flat.take(index, out=entries, mode="clip")
                np.less_equal(entries, slot, out=below)
                position += np.add.reduce(below, axis=0, out=count_below)
            start = flat.take(position)
            return start, following.take(position) - start

        self._pop_intervals(count, find, flat.dtype)
        return positions - row_starts

    def pop_uniform(self, count: int, bits: int) -> np.ndarray:
        """Decode ``count`` integers pushed by :meth:`push_uniform`; returns (count,) int64."""
        shift = _uniform_shift(bits, self.precision)
        if compiled.enabled():
            return self.pop_compiled(_pop_uniform_compiled, int(count), shift, self.precision)
        shift = np.uint64(shift)
        frequency = np.uint64(1) << shift
        symbols = np.empty(int(count), dtype=np.int64)

        def find(first: int, slot: np.ndarray):
            symbol = slot >> shift
            symbols[first : first + len(slot)] = symbol
            return symbol << shift, frequency

        self._pop_intervals(int(count), find, np.dtype(np.uint64))
        return symbols

    def pop_compiled(self, kernel: Callable, count: int, *arguments) -> np.ndarray:
        """Pop ``count`` symbols with a compiled loop ``kernel(state, stack, top, *arguments, symbols) -> top`` (-1
        when the stack runs out of words, which raises :class:`CorruptStreamError` and leaves the coder as it was),
        as the kernels of this package do; returns the symbols (count,) int64."""
        symbols, saved = np.empty(count, dtype=np.int64), self._state.copy()
        top = kernel(self._state, self._stack, self._top, *arguments, symbols)
        if top < 0:
            self._state = saved
            raise CorruptStreamError(_OUT_OF_WORDS)
        self._top = top
        return symbols

    def _pop_intervals(self, count: int, find: Callable, slot_dtype: np.dtype) -> None:
        """Decode ``count`` symbols, chunk by chunk, first chunk first.

        ``find(first_index, slot)`` takes the slots (lanes,) ``slot_dtype`` of the chunk that starts at symbol
        ``first_index``, records its symbols, and returns their intervals ``(start, frequency)``: integer arrays
        (of any integer type that holds ``2**precision``) or scalars.
        """
        lanes, precision = self.num_lanes, np.uint64(self.precision)
        mask, lower, word_bits = np.uint64((1 << self.precision) - 1), np.uint64(RANS_LOWER_BOUND), np.uint64(WORD_BITS)
        stack, state = self._stack, self._state
        top = self._top

        def decode(x, first, top, slot):
            np.bitwise_and(x, mask, out=slot, casting="unsafe")  # slot < 2**precision fits slot_dtype
            start, frequency = find(first, slot)
            # x = f * (x // 2**p) + slot - start, in uint64 whatever the table's integer type.
            x = np.multiply(x >> precision, frequency, dtype=np.uint64, casting="unsafe")
            np.add(x, slot, out=x, dtype=np.uint64, casting="unsafe")
            np.subtract(x, start, out=x, dtype=np.uint64, casting="unsafe")
            need = x < lower
            moved = np.count_nonzero(need)
            if moved:
                if moved > top:
                    raise CorruptStreamError(_OUT_OF_WORDS)
                x[need] = (x[need] << word_bits) | stack[top - moved : top]
                top -= moved
            return x, top

        full, rest = divmod(count, lanes)
        slot = np.empty(lanes, dtype=slot_dtype)
        for chunk in range(full):
            state, top = decode(state, chunk * lanes, top, slot)
        if rest:
            state = state.copy()
            state[:rest], top = decode(state[:rest], full * lanes, top, slot[:rest])
        self._state, self._top = state, top

    # ---------------------------------------------------------------------------------------------- state
    def check_finished(self) -> None:
        """Raise :class:`CorruptStreamError` unless every lane is back in the start state with every word used."""
        wrong = np.flatnonzero(self._state != RANS_LOWER_BOUND)
        if wrong.size or self._top:
            raise CorruptStreamError(
                f"decoding ended with {wrong.size} lanes away from the start state and {self._top} unused words: the "
                "stream is corrupt or was decoded with other tables, num_lanes or precision"
            )

    def to_bytes(self) -> bytes:
        """The compressed stream: lane count, lane states, then the word stack (format in the module docstring)."""
        return _serialise(self._state, self._stack[: self._top])

    @classmethod
    def from_bytes(cls, data: bytes, num_lanes: int = 64, precision: int = 16) -> VectorRANS:
        """A coder ready to pop the symbols in ``data``; pass the ``num_lanes`` and ``precision`` used to encode."""
        coder = cls(num_lanes, precision)
        coder._state, words = _deserialise(data, coder.num_lanes)
        coder._stack, coder._top = words, len(words)
        return coder

    def check_tables(self, cdf: np.ndarray, count: int | None) -> np.ndarray:
        """``cdf`` as a contiguous integer array of ``count`` rows (or one row for all), after checking that every row
        runs non-decreasingly from 0 to ``2**precision``; raises ``ValueError`` saying what is wrong otherwise.

        Costs one pass over the tables. :meth:`push` and :meth:`pop` run it (the compiled loops check each row as they
        use it instead); ``benchmarks/rans.py`` prints its share of the coding time.
        """
        cdf = _contiguous_rows(cdf, count)
        total = 1 << self.precision
        if compiled.enabled() and cdf.size:
            bad = _first_invalid_row_compiled(cdf, total)
        elif cdf.size:
            valid = (cdf[:, 0] == 0) & (cdf[:, -1] == total) & (cdf[:, 1:] >= cdf[:, :-1]).all(axis=1)
            bad = int(np.argmin(valid)) if not valid.all() else -1
        else:
            bad = -1
        if bad >= 0:
            row = cdf[bad]
            if row[0] != 0 or row[-1] != total:
                raise ValueError(
                    f"every cdf row must start at 0 and end at 2**precision = {total}, but row {bad} runs from "
                    f"{row[0]} to {row[-1]}; build tables with the same precision as the coder ({self.precision})"
                )
            fall = int(np.argmax(row[1:] < row[:-1]))
            raise ValueError(
                f"cdf row {bad} is not non-decreasing: entry {fall + 1} ({row[fall + 1]}) is below entry {fall} "
                f"({row[fall]}); a table is the cumulative sum of non-negative frequencies"
            )
        return cdf


def _contiguous_rows(cdf: np.ndarray, count: int | None) -> np.ndarray:
    """:func:`_table_rows` as a C-contiguous array the compiled loops can compare with int64 slots (uint64 entries
    would turn those comparisons into floats; a valid table fits int64)."""
    cdf = _table_rows(cdf, count)
    return np.ascontiguousarray(cdf.astype(np.int64) if cdf.dtype == np.uint64 else cdf)


def _zero_frequency(symbols: np.ndarray, position: int) -> ValueError:
    return ValueError(
        f"symbol {int(symbols[position])} at position {int(position)} has frequency 0 in its table and cannot be "
        "coded; quantise tables with quantize_pmf (every supported symbol gets frequency >= 1)"
    )


_OUT_OF_WORDS = (
    "the stream ran out of words while decoding: it is truncated, corrupt, or decoded with other tables or num_lanes"
)


# --------------------------------------------------------------------------------------------------------------
# Compiled loops (used when Numba is installed; the same steps as the NumPy code above, lane by lane)
# --------------------------------------------------------------------------------------------------------------

_LOWER = np.uint64(RANS_LOWER_BOUND)
_WORD_SHIFT = np.uint64(WORD_BITS)
_LOW_WORD = np.uint64(_WORD_MASK)


@compiled.jit
def _push_intervals_compiled(state, stack, top, starts, frequencies, precision):  # pragma: no cover - compiled
    """``VectorRANS._push_intervals`` lane by lane: chunks last to first, a chunk's lanes upwards (so renormalising
    lanes put their words on the stack in lane order). Returns the new stack height."""
    lanes, count = state.shape[0], starts.shape[0]
    shift, bits = np.uint64(63 - precision), np.uint64(precision)
    for chunk in range((count + lanes - 1) // lanes - 1, -1, -1):
        first = chunk * lanes
        for lane in range(min(lanes, count - first)):
            x, frequency = state[lane], frequencies[first + lane]
            if x >= frequency << shift:
                stack[top] = x & _LOW_WORD
                top += 1
                x >>= _WORD_SHIFT
            state[lane] = ((x // frequency) << bits) + x % frequency + starts[first + lane]
    return top


@compiled.jit
def _pop_step(state, stack, top, lane, slot, start, frequency, precision):  # pragma: no cover - compiled
    """Undo one push on ``lane`` whose symbol owns ``[start, start + frequency)``; returns the new stack height or -1
    when a word is needed and none is left."""
    x = np.uint64(frequency) * (state[lane] >> np.uint64(precision)) + np.uint64(slot - start)
    if x < _LOWER:
        if top == 0:
            return -1
        top -= 1
        x = (x << _WORD_SHIFT) | np.uint64(stack[top])
    state[lane] = x
    return top


@compiled.jit
def _row_is_valid(cdf, row, total):  # pragma: no cover - compiled
    """Whether row ``row`` of ``cdf`` runs non-decreasingly from 0 to ``total``."""
    last = cdf.shape[1] - 1
    falls = cdf[row, 0] != 0 or cdf[row, last] != total
    for index in range(last):
        falls |= cdf[row, index + 1] < cdf[row, index]
    return not falls


@compiled.jit
def _push_table_compiled(state, stack, top, cdf, rows, symbols, precision, check):  # pragma: no cover - compiled
    """``VectorRANS.push``: the intervals of ``symbols`` read from their rows (each row checked first if ``check``)
    and pushed as :func:`_push_intervals_compiled` does. Returns ``(top, error, index)``: error 1 for an invalid
    row, 2 for a symbol of frequency 0, at symbol ``index`` (the caller restores the coder and explains)."""
    lanes, count, total = state.shape[0], symbols.shape[0], 1 << precision
    shift, bits = np.uint64(63 - precision), np.uint64(precision)
    for chunk in range((count + lanes - 1) // lanes - 1, -1, -1):
        first = chunk * lanes
        for lane in range(min(lanes, count - first)):
            item = first + lane
            row, symbol = rows[item], symbols[item]
            if check and not _row_is_valid(cdf, row, total):
                return top, 1, item
            start, end = np.int64(cdf[row, symbol]), np.int64(cdf[row, symbol + 1])
            if end <= start:
                return top, 2, item
            x, frequency = state[lane], np.uint64(end - start)
            if x >= frequency << shift:
                stack[top] = x & _LOW_WORD
                top += 1
                x >>= _WORD_SHIFT
            state[lane] = ((x // frequency) << bits) + x % frequency + np.uint64(start)
    return top, 0, 0


@compiled.jit
def _pop_table_compiled(state, stack, top, cdf, rows, precision, check, symbols):  # pragma: no cover - compiled
    """``VectorRANS.pop`` lane by lane: chunks first to last, a chunk's lanes downwards (so the top word goes back to
    the highest lane that needs one, as in the vectorised pop). The lanes of a chunk check their rows (if
    ``check``), then search them together, one halving step at a time without branches (the symbol is the last
    entry ``<= slot``), so that the memory reads of different lanes overlap. Returns ``(top, error)``: error 1 for
    an invalid row or a stack that ran out of words (the caller restores the coder and explains)."""
    lanes, count, alphabet, total = state.shape[0], symbols.shape[0], cdf.shape[1] - 1, 1 << precision
    mask = np.uint64(total - 1)
    slots, positions = np.empty(lanes, dtype=np.int64), np.empty(lanes, dtype=np.int64)
    for first in range(0, count, lanes):
        width = min(lanes, count - first)
        for lane in range(width):
            if check and not _row_is_valid(cdf, rows[first + lane], total):
                return top, 1
            slots[lane], positions[lane] = np.int64(state[lane] & mask), 0
        remaining = alphabet  # the symbol lies in positions .. positions + remaining - 1
        while remaining > 1:
            half = remaining >> 1
            for lane in range(width):
                positions[lane] += half * (cdf[rows[first + lane], positions[lane] + half] <= slots[lane])
            remaining -= half
        for lane in range(width - 1, -1, -1):
            row, symbol = rows[first + lane], positions[lane]
            start = np.int64(cdf[row, symbol])
            top = _pop_step(state, stack, top, lane, slots[lane], start, np.int64(cdf[row, symbol + 1]) - start,
                            precision)
            if top < 0:
                return top, 1
            symbols[first + lane] = symbol
    return top, 0


@compiled.jit
def _pop_uniform_compiled(state, stack, top, shift, precision, symbols):  # pragma: no cover - compiled
    """``VectorRANS.pop_uniform`` lane by lane."""
    lanes, count, mask = state.shape[0], symbols.shape[0], np.uint64((1 << precision) - 1)
    for first in range(0, count, lanes):
        for lane in range(min(lanes, count - first) - 1, -1, -1):
            slot = np.int64(state[lane] & mask)
            symbol = slot >> shift
            top = _pop_step(state, stack, top, lane, slot, symbol << shift, np.int64(1) << shift, precision)
            if top < 0:
                return -1
            symbols[first + lane] = symbol
    return top


@compiled.jit
def _first_invalid_row_compiled(cdf, total):  # pragma: no cover - compiled
    """Index of the first row of ``cdf`` that does not run non-decreasingly from 0 to ``total``, or -1."""
    for row in range(cdf.shape[0]):
        if cdf[row, 0] != 0 or cdf[row, cdf.shape[1] - 1] != total:
            return row
        falls = False
        for index in range(cdf.shape[1] - 1):
            falls |= cdf[row, index + 1] < cdf[row, index]
        if falls:
            return row
    return -1
