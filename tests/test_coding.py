"""Tests of flowlib.coding: rANS coders, quantised tables, escape coding and the file container."""

from __future__ import annotations

import hashlib
import itertools
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowlib.coding import (
    ESCAPE_LIMIT,
    HEADER_SIZE,
    LogisticMixtures,
    RANS_LOWER_BOUND,
    ChecksumError,
    ContainerError,
    CorruptStreamError,
    ModelMismatchError,
    NotAFlowlibFileError,
    ScalarRANS,
    TruncatedFileError,
    UnsupportedVersionError,
    VectorRANS,
    cdf_from_frequencies,
    compiled,
    discretized_logistic_cdf_table,
    discretized_logistic_mixture_cdf_table,
    pack,
    pop_with_escape,
    push_with_escape,
    quantize_pmf,
    unpack,
)
from flowlib.coding.logistic import exp_ticks, mixture_weights, sigmoid_table

NUMBA_PATHS = [False, True] if compiled.available() else [False]

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_tables(rng: np.random.Generator, count: int, alphabet: int, precision: int, peaked: bool = False):
    """(count, alphabet+1) cdf tables from random pmfs (a few zero-probability symbols), and symbols drawn from them."""
    alphabet = min(alphabet, 1 << precision)
    pmf = rng.dirichlet(np.full(alphabet, 0.3 if peaked else 1.0), size=count) if alphabet > 1 else np.ones((count, 1))
    if alphabet > 2:
        pmf[rng.random(pmf.shape) < 0.1] = 0.0
        pmf[np.arange(count), rng.integers(0, alphabet, count)] += 1e-3  # keep every row supported
    frequencies = quantize_pmf(pmf, precision)
    cumulative = frequencies.cumsum(axis=1)
    symbols = (cumulative > rng.integers(0, 1 << precision, count)[:, None]).argmax(axis=1)  # sample from the table
    return cdf_from_frequencies(frequencies), symbols


def ideal_bits(cdf: np.ndarray, symbols: np.ndarray, precision: int) -> float:
    """Information content of ``symbols`` under the quantised tables: sum of -log2(freq / 2**precision)."""
    rows = np.arange(len(symbols))
    frequencies = cdf[rows, symbols + 1] - cdf[rows, symbols]
    return float(-np.log2(frequencies / 2.0**precision).sum())


precisions = st.integers(8, 24)
alphabets = st.sampled_from([1, 2, 3, 7, 64, 257, 1 << 12, 1 << 16])


# ------------------------------------------------------------------------------------------------- round trips
@FAST
@given(precision=precisions, alphabet=alphabets, length=st.integers(0, 40), seed=st.integers(0, 2**32 - 1))
def test_scalar_round_trip(precision, alphabet, length, seed):
    rng = np.random.default_rng(seed)
    cdf, symbols = random_tables(rng, length if alphabet < 4096 else min(length, 3), alphabet, precision)
    coder = ScalarRANS(precision)
    coder.push_symbols(symbols, cdf)
    decoder = ScalarRANS.from_bytes(coder.to_bytes(), precision)
    np.testing.assert_array_equal(decoder.pop_symbols(cdf), symbols)
    decoder.check_finished()


@FAST
@given(
    precision=precisions,
    alphabet=alphabets,
    lengths=st.lists(st.integers(0, 300), min_size=1, max_size=3),
    num_lanes=st.integers(1, 70),
    peaked=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_vector_round_trip_stacks_calls(precision, alphabet, lengths, num_lanes, peaked, seed):
    rng = np.random.default_rng(seed)
    if alphabet >= 4096:
        lengths = [min(length, 5) for length in lengths]
    messages = [random_tables(rng, length, alphabet, precision, peaked) for length in lengths]
    coder = VectorRANS(num_lanes, precision)
    for cdf, symbols in messages:
        coder.push(symbols, cdf)
    decoder = VectorRANS.from_bytes(coder.to_bytes(), num_lanes, precision)
    for cdf, symbols in reversed(messages):  # a stack: last pushed, first popped
        np.testing.assert_array_equal(decoder.pop(cdf), symbols)
    decoder.check_finished()


@FAST
@given(
    precision=precisions,
    alphabet=st.sampled_from([2, 5, 300]),
    length=st.integers(0, 60),
    seed=st.integers(0, 2**32 - 1),
)
def test_scalar_and_one_lane_vector_write_identical_bytes(precision, alphabet, length, seed):
    rng = np.random.default_rng(seed)
    cdf, symbols = random_tables(rng, length, alphabet, precision)
    scalar, vector = ScalarRANS(precision), VectorRANS(1, precision)
    scalar.push_symbols(symbols, cdf)
    vector.push(symbols, cdf)
    assert scalar.to_bytes() == vector.to_bytes()
    # Each decodes the other's stream.
    np.testing.assert_array_equal(VectorRANS.from_bytes(scalar.to_bytes(), 1, precision).pop(cdf), symbols)
    np.testing.assert_array_equal(ScalarRANS.from_bytes(vector.to_bytes(), precision).pop_symbols(cdf), symbols)


def test_scalar_and_vector_agree_on_many_lanes():
    rng = np.random.default_rng(0)
    cdf, symbols = random_tables(rng, 500, 40, 16)
    vector = VectorRANS(32, 16)
    vector.push(symbols, cdf)
    # The scalar reference, run once per lane on that lane's symbols, produces the same lane states.
    for lane in range(32):
        scalar = ScalarRANS(16)
        scalar.push_symbols(symbols[lane::32], cdf[lane::32])
        assert scalar.state == int(vector._state[lane])
    np.testing.assert_array_equal(VectorRANS.from_bytes(vector.to_bytes(), 32, 16).pop(cdf), symbols)


def test_near_deterministic_and_single_symbol_supports():
    precision = 16
    pmf = np.full((1000, 50), 1e-12)
    pmf[:, 7] = 1.0
    frequencies = quantize_pmf(pmf, precision)
    assert (frequencies >= 1).all() and frequencies[0, 7] == 2**precision - 49
    cdf = cdf_from_frequencies(frequencies)
    symbols = np.full(1000, 7)
    symbols[::100] = 3  # a few improbable symbols too
    coder = VectorRANS(4, precision)
    coder.push(symbols, cdf)
    decoder = VectorRANS.from_bytes(coder.to_bytes(), 4, precision)
    np.testing.assert_array_equal(decoder.pop(cdf), symbols)
    decoder.check_finished()
    # A symbol of probability one costs nothing: the state never moves, and nothing but the lane count is written.
    certain = cdf_from_frequencies(quantize_pmf(np.array([[0.0, 1.0, 0.0]] * 100), precision))
    coder = VectorRANS(8, precision)
    coder.push(np.ones(100, dtype=np.int64), certain)
    assert coder.to_bytes() == b"\x00"
    np.testing.assert_array_equal(VectorRANS.from_bytes(b"\x00", 8, precision).pop(certain), np.ones(100))


def test_empty_messages():
    for coder in (VectorRANS(16, 12), ScalarRANS(12)):
        if isinstance(coder, VectorRANS):
            coder.push(np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.int64))
        else:
            coder.push_symbols(np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.int64))
        assert coder.to_bytes() == b"\x00"
    decoder = VectorRANS.from_bytes(b"\x00", 16, 12)
    assert decoder.pop(np.zeros((0, 3), dtype=np.int64)).shape == (0,)
    decoder.check_finished()
    ScalarRANS.from_bytes(b"\x00", 12).check_finished()


def test_lanes_without_symbols_write_nothing():
    rng = np.random.default_rng(1)
    cdf, symbols = random_tables(rng, 3, 10, 16)
    small, large = VectorRANS(3, 16), VectorRANS(1024, 16)
    small.push(symbols, cdf)
    large.push(symbols, cdf)
    assert small.to_bytes() == large.to_bytes()  # only the 3 lanes that got symbols are flushed
    assert len(large.to_bytes()) <= 1 + 2 + 3 * 8


# ------------------------------------------------------------------------------------------------- code length
@FAST
@given(
    precision=precisions, num_lanes=st.sampled_from([1, 4, 64]), peaked=st.booleans(), seed=st.integers(0, 2**32 - 1)
)
def test_length_within_townsend_bound(precision, num_lanes, peaked, seed):
    """The bound of Townsend (2020), "A tutorial on the range variant of asymmetric numeral systems".

    A push maps x to x' = floor(x / f) M + (x mod f) + start, so x M / f - M < x' < x M / f + M and
    |log2 x' - log2 x - log2(M / f)| <= -log2(1 - f M / (x M)) = -log2(1 - f / x). Renormalisation keeps
    x >= f 2**(31 - p), so each symbol costs its quantised ideal length within eps = -log2(1 - 2**(p - 31)) bits;
    the final flush adds at most 8 bytes and a 4-bit length per lane plus the one-byte lane count.
    """
    rng = np.random.default_rng(seed)
    count = 2000
    cdf, symbols = random_tables(rng, count, 30, precision, peaked)
    coder = VectorRANS(num_lanes, precision)
    coder.push(symbols, cdf)
    measured = 8 * len(coder.to_bytes())
    ideal = ideal_bits(cdf, symbols, precision)
    eps = -math.log2(1 - 2.0 ** (precision - 31))
    flush = num_lanes * (64 + 4) + 8 + 4
    assert ideal - count * eps <= measured <= ideal + count * eps + flush


def test_stream_overhead_is_a_few_bytes_per_lane():
    rng = np.random.default_rng(2)
    cdf, symbols = random_tables(rng, 20_000, 256, 24)
    for num_lanes in (1, 16, 64):
        coder = VectorRANS(num_lanes, 24)
        coder.push(symbols, cdf)
        overhead = len(coder.to_bytes()) - ideal_bits(cdf, symbols, 24) / 8
        assert 3 * num_lanes <= overhead <= 8 * num_lanes + 2


# ------------------------------------------------------------------------------------------------- corruption
def encoded_message(num_lanes: int = 4, precision: int = 16):
    rng = np.random.default_rng(3)
    cdf, symbols = random_tables(rng, 400, 20, precision)
    coder = VectorRANS(num_lanes, precision)
    coder.push(symbols, cdf)
    return coder.to_bytes(), cdf, symbols


def decode_all(data: bytes, cdf: np.ndarray, num_lanes: int = 4, precision: int = 16) -> np.ndarray:
    decoder = VectorRANS.from_bytes(data, num_lanes, precision)
    symbols = decoder.pop(cdf)
    decoder.check_finished()
    return symbols


@pytest.mark.parametrize("keep", [0, 5, 30, -100, -8, -4, -3, -2, -1])
def test_truncated_stream_raises(keep):
    data, cdf, _ = encoded_message()
    with pytest.raises(CorruptStreamError):
        decode_all(data[:keep], cdf)


def test_corrupted_and_mismatched_streams_raise():
    data, cdf, symbols = encoded_message()
    np.testing.assert_array_equal(decode_all(data, cdf), symbols)
    for position in (5, len(data) // 2, len(data) - 1):
        corrupted = bytearray(data)
        corrupted[position] ^= 0x10
        with pytest.raises(CorruptStreamError):
            decode_all(bytes(corrupted), cdf)
    with pytest.raises(CorruptStreamError):  # decoded with the wrong number of lanes
        decode_all(data, cdf, num_lanes=3)
    with pytest.raises(CorruptStreamError):  # popping more than was pushed
        decode_all(data, np.concatenate([cdf, cdf]))
    scalar = ScalarRANS(8)
    scalar.push_symbol(1, [0, 100, 256])
    scalar.pop([0, 100, 256])
    with pytest.raises(CorruptStreamError):  # popping from an empty scalar coder runs out of words
        scalar.pop([0, 100, 256])


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=64), count=st.integers(0, 50), num_lanes=st.integers(1, 8))
def test_arbitrary_bytes_decode_or_raise_corrupt_stream(data, count, num_lanes):
    cdf = np.tile(np.array([0, 10, 300, 4000, 1 << 12]), (count, 1))
    try:
        decoder = VectorRANS.from_bytes(data, num_lanes, 12)
        symbols = decoder.pop(cdf)
        decoder.check_finished()
    except CorruptStreamError:
        return
    assert symbols.shape == (count,) and ((symbols >= 0) & (symbols < 4)).all()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="precision"):
        VectorRANS(precision=25)
    with pytest.raises(ValueError, match="precision"):
        ScalarRANS(precision=7)
    cdf = np.array([[0, 0, 1 << 16]])
    with pytest.raises(ValueError, match="frequency 0"):
        VectorRANS(precision=16).push(np.array([0]), cdf)
    with pytest.raises(ValueError, match="alphabet"):
        VectorRANS(precision=16).push(np.array([2]), cdf)
    with pytest.raises(ValueError, match="2\\*\\*precision"):
        VectorRANS(precision=12).push(np.array([1]), cdf)
    with pytest.raises(ValueError, match="shape"):
        VectorRANS(precision=16).push(np.array([1, 1, 1]), np.concatenate([cdf, cdf]))
    with pytest.raises(ValueError, match="frequency"):
        ScalarRANS(16).push(5, 0)


# ------------------------------------------------------------------------------------------------- tables
@FAST
@given(
    precision=precisions,
    shape=st.tuples(st.integers(1, 5), st.integers(1, 300)),
    zeros=st.floats(0, 0.9),
    seed=st.integers(0, 2**32 - 1),
)
def test_quantize_pmf_properties(precision, shape, zeros, seed):
    rng = np.random.default_rng(seed)
    pmf = rng.random(shape) ** 4
    pmf[rng.random(shape) < zeros] = 0.0
    pmf[:, 0] += 1e-300  # every row supported
    if shape[1] > 1 << precision:
        return
    frequencies = quantize_pmf(pmf, precision)
    assert frequencies.dtype == np.int64
    assert (frequencies.sum(axis=1) == 1 << precision).all()
    assert ((frequencies >= 1) == (pmf > 0)).all()
    # Vectorised over rows: each row is quantised exactly as on its own.
    for row in range(shape[0]):
        np.testing.assert_array_equal(quantize_pmf(pmf[row], precision), frequencies[row])


def test_quantize_pmf_is_close_to_the_float_model():
    rng = np.random.default_rng(4)
    pmf = rng.dirichlet(np.ones(256), size=100)
    frequencies = quantize_pmf(pmf, 24)
    assert np.abs(frequencies / 2**24 - pmf).max() <= 2 * 256 / 2**24
    with pytest.raises(ValueError, match="slots"):
        quantize_pmf(np.ones(257), 8)
    with pytest.raises(ValueError, match="non-negative"):
        quantize_pmf(np.array([0.5, -0.1]), 8)


def logistic_masses(mean: float, scale: float, low: int, high: int) -> np.ndarray:
    """Reference discretized logistic masses with Python floats, outer bins extended to +-inf."""

    def sigmoid(value):
        return 0.5 * (1 + math.tanh(value / 2))

    edges = [-math.inf] + [x + 0.5 for x in range(low, high)] + [math.inf]
    return np.array([sigmoid((b - mean) / scale) - sigmoid((a - mean) / scale) for a, b in itertools.pairwise(edges)])


def test_discretized_logistic_table_matches_reference():
    rng = np.random.default_rng(5)
    count, low, high, precision = 20, -8, 8, 24
    means, log_scales = rng.uniform(-10, 10, count), rng.uniform(-3, 2, count)
    table = discretized_logistic_cdf_table(means, log_scales, low, high, precision)
    assert table.shape == (count, high - low + 3) and table.dtype == np.uint32
    frequencies = np.diff(table.astype(np.int64), axis=1)
    assert (frequencies >= 1).all() and (frequencies[:, -1] == 1).all() and (table[:, -1] == 1 << precision).all()
    for row in range(count):  # the tables use parameters rounded to multiples of 2^-12
        mean, log_scale = round(means[row] * 4096) / 4096, round(log_scales[row] * 4096) / 4096
        reference = logistic_masses(mean, math.exp(log_scale), low, high)
        assert np.abs(frequencies[row, :-1] / 2**precision - reference).max() < 4 * (high - low + 2) / 2**precision
    # A one-component mixture is the plain logistic.
    mixture = discretized_logistic_mixture_cdf_table(
        means[:, None], log_scales[:, None], np.zeros((count, 1)), low, high, precision
    )
    assert np.abs(mixture.astype(np.int64) - table).max() <= 1


def test_tables_are_row_independent_and_deterministic():
    """Encoder and decoder may build tables in different batches: each row must not depend on the others."""
    rng = np.random.default_rng(6)
    means, log_scales = rng.uniform(0, 255, 3000), rng.uniform(-4, 4, 3000)
    full = discretized_logistic_cdf_table(means, log_scales, 0, 255, 24)
    parts = [
        discretized_logistic_cdf_table(means[a:b], log_scales[a:b], 0, 255, 24)
        for a, b in [(0, 1), (1, 999), (999, 3000)]
    ]
    np.testing.assert_array_equal(np.concatenate(parts), full)
    np.testing.assert_array_equal(discretized_logistic_cdf_table(means, log_scales, 0, 255, 24), full)
    weights = rng.normal(size=(3000, 5))
    mix_means, mix_scales = rng.uniform(0, 255, (3000, 5)), rng.uniform(-2, 3, (3000, 5))
    mixture = discretized_logistic_mixture_cdf_table(mix_means, mix_scales, weights, 0, 255, 16)
    np.testing.assert_array_equal(
        discretized_logistic_mixture_cdf_table(mix_means[7:9], mix_scales[7:9], weights[7:9], 0, 255, 16), mixture[7:9]
    )
    assert (np.diff(mixture.astype(np.int64), axis=1) >= 1).all()


def test_extreme_logistic_parameters_keep_every_bin_codable():
    means = np.array([0.0, 0.5, 1e6, -1e6, 3.0])
    log_scales = np.array([-50.0, -30.0, 0.0, 0.0, 50.0])
    table = discretized_logistic_cdf_table(means, log_scales, -4, 4, 8)
    assert (np.diff(table.astype(np.int64), axis=1) >= 1).all() and (table[:, -1] == 256).all()
    with pytest.raises(ValueError, match="finite"):
        discretized_logistic_cdf_table(np.array([np.nan]), np.array([0.0]), 0, 3, 8)
    with pytest.raises(ValueError, match="escape"):
        discretized_logistic_cdf_table(np.zeros(1), np.zeros(1), 0, 255, 8)


# ------------------------------------------------------------------------------------------------- escapes
@FAST
@given(precision=precisions, num_lanes=st.integers(1, 9), seed=st.integers(0, 2**32 - 1), scalar=st.booleans())
def test_escape_round_trip(precision, num_lanes, seed, scalar):
    rng = np.random.default_rng(seed)
    low, high = -3, 4
    extremes = [ESCAPE_LIMIT, -ESCAPE_LIMIT, low - 1, high + 1, low, high, 2**31, -(2**40), 255, 256]
    values = np.concatenate([extremes, rng.integers(-12, 12, 30)]).astype(np.int64)
    rng.shuffle(values)
    table = discretized_logistic_cdf_table(
        rng.normal(size=len(values)), rng.normal(size=len(values)), low, high, precision
    )
    coder = ScalarRANS(precision) if scalar else VectorRANS(num_lanes, precision)
    push_with_escape(coder, values, table, low, high)
    data = coder.to_bytes()
    decoder = ScalarRANS.from_bytes(data, precision) if scalar else VectorRANS.from_bytes(data, num_lanes, precision)
    np.testing.assert_array_equal(pop_with_escape(decoder, table, low, high), values)
    decoder.check_finished()


def test_escape_limits_are_enforced():
    table = discretized_logistic_cdf_table(np.zeros(1), np.zeros(1), 0, 3, 16)
    with pytest.raises(ValueError, match="2\\*\\*62"):
        push_with_escape(VectorRANS(1, 16), np.array([ESCAPE_LIMIT + 1]), table, 0, 3)
    with pytest.raises(ValueError, match="shape"):
        push_with_escape(VectorRANS(1, 16), np.array([1]), table, 0, 4)


# ------------------------------------------------------------------------------------------------- container
FINGERPRINT = hashlib.sha256(b"model weights").digest()[:16]


def test_container_round_trip_and_header_size():
    payload = bytes(range(200))
    data = pack(payload, shape=(1, 28, 28), count=3, model_fingerprint=FINGERPRINT)
    assert len(data) == HEADER_SIZE + len(payload) and HEADER_SIZE == 64
    container = unpack(data, expected_fingerprint=FINGERPRINT)
    assert (container.payload, container.shape, container.count) == (payload, (1, 28, 28), 3)
    assert container.model_fingerprint == FINGERPRINT and container.extra == {}
    with_extra = pack(b"", shape=(), count=0, model_fingerprint=FINGERPRINT, extra={"lanes": 64, "low": -256})
    assert unpack(with_extra, expected_fingerprint=None).extra == {"lanes": 64, "low": -256}


def test_container_errors_say_what_happened():
    data = pack(b"payload bytes", shape=(3, 32, 32), count=1, model_fingerprint=FINGERPRINT)
    with pytest.raises(TruncatedFileError, match="truncated"):
        unpack(data[:-1], expected_fingerprint=FINGERPRINT)
    with pytest.raises(TruncatedFileError, match="header"):
        unpack(data[:20], expected_fingerprint=FINGERPRINT)
    flipped = bytearray(data)
    flipped[-3] ^= 1
    with pytest.raises(ChecksumError, match="corrupted"):
        unpack(bytes(flipped), expected_fingerprint=FINGERPRINT)
    flipped = bytearray(data)
    flipped[30] ^= 4  # inside the header (extra length): caught as a length mismatch or checksum failure
    with pytest.raises(ContainerError):
        unpack(bytes(flipped), expected_fingerprint=FINGERPRINT)
    with pytest.raises(ModelMismatchError, match="different model"):
        unpack(data, expected_fingerprint=bytes(16))
    with pytest.raises(NotAFlowlibFileError, match="not a flowlib"):
        unpack(b"\x89PNG" + data[4:], expected_fingerprint=FINGERPRINT)
    future = data[:4] + struct.pack("<H", 3) + data[6:]
    with pytest.raises(UnsupportedVersionError, match="version 3.*upgrade"):
        unpack(future, expected_fingerprint=FINGERPRINT)
    past = data[:4] + struct.pack("<H", 1) + data[6:]
    with pytest.raises(UnsupportedVersionError, match="version 1.*flowlib 0.1"):
        unpack(past, expected_fingerprint=FINGERPRINT)
    with pytest.raises(ContainerError, match="unexpected"):
        unpack(data + b"\x00", expected_fingerprint=FINGERPRINT)
    with pytest.raises(ValueError, match="16 bytes"):
        pack(b"", shape=(1,), count=1, model_fingerprint=b"short")


def test_rans_lower_bound_constant():
    assert RANS_LOWER_BOUND == 2**31


def test_corrupt_escape_payload_raises():
    """A stream whose escape bytes decode to a distance beyond any escapable value is refused."""
    table = discretized_logistic_cdf_table(np.zeros(1), np.zeros(1), 0, 3, 16)
    coder = VectorRANS(1, 16)
    coder.push_uniform(np.full(8, 255), 8)  # raw bytes of the distance 2**64 - 1
    coder.push_uniform(np.array([7]), 4)  # header: above the range, 8 bytes
    coder.push(np.array([4]), table)  # the escape symbol
    with pytest.raises(CorruptStreamError, match="escaped"):
        pop_with_escape(VectorRANS.from_bytes(coder.to_bytes(), 1, 16), table, 0, 3)


def repack(data: bytes, header_changes: dict[int, bytes] | None = None, extra: bytes | None = None) -> bytes:
    """``data`` with header bytes replaced (offset -> bytes) and/or new metadata bytes, its checksum fixed: what a
    crafted (not merely corrupted) file looks like."""
    import zlib

    header, rest = bytearray(data[:HEADER_SIZE]), data[HEADER_SIZE:]
    extra_length = struct.unpack_from("<I", header, 28)[0]
    payload = rest[extra_length:]
    if extra is not None:
        struct.pack_into("<I", header, 28, len(extra))
    else:
        extra = rest[:extra_length]
    for offset, value in (header_changes or {}).items():
        header[offset : offset + len(value)] = value
    checksum = zlib.crc32(payload, zlib.crc32(extra, zlib.crc32(bytes(header[:60]))))
    struct.pack_into("<I", header, 60, checksum)
    return bytes(header) + extra + payload


def test_crafted_headers_and_metadata_are_refused():
    data = pack(b"payload", shape=(1, 28, 28), count=2, model_fingerprint=FINGERPRINT)
    assert unpack(repack(data), expected_fingerprint=FINGERPRINT).count == 2  # repack alone changes nothing
    for offset in (7, 56, 59):  # reserved bytes
        with pytest.raises(ContainerError, match="reserved"):
            unpack(repack(data, {offset: b"\x01"}), expected_fingerprint=FINGERPRINT)
    with pytest.raises(ContainerError, match="unused shape"):  # the unused fourth shape slot
        unpack(repack(data, {20: struct.pack("<I", 5)}), expected_fingerprint=FINGERPRINT)
    for extra in (b"{not json", b"\xff\xfe", b"[1, 2]", b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(ContainerError, match="metadata"):
            unpack(repack(data, extra=extra), expected_fingerprint=FINGERPRINT)


# ------------------------------------------------------------------------------------------------- table checks
def valid_table(rng: np.random.Generator, count: int, alphabet: int, precision: int) -> np.ndarray:
    frequencies = quantize_pmf(rng.random((count, alphabet)) + 0.01, precision)
    return cdf_from_frequencies(frequencies)


def damaged(table: np.ndarray, kind: str, rng: np.random.Generator, precision: int) -> np.ndarray:
    """One row of ``table`` broken in one way: out of order, above 2**precision, negative, or a wrong end."""
    table = table.copy()
    row = rng.integers(len(table))
    if kind == "unsorted":
        k = rng.integers(1, table.shape[1] - 2)
        table[row, k] = table[row, k + 1] + 1 + rng.integers(0, 5)
    elif kind == "above":
        table[row, -1] = (1 << precision) + 1 + rng.integers(0, 100)
    elif kind == "negative":
        table[row, rng.integers(1, table.shape[1] - 1)] = -1 - rng.integers(0, 100)
    else:
        table[row, 0] = 1
    return table


@FAST
@given(
    precision=st.integers(8, 24),
    alphabet=st.integers(3, 40),
    count=st.integers(1, 30),
    kind=st.sampled_from(["unsorted", "above", "negative", "start"]),
    seed=st.integers(0, 2**32 - 1),
    numba=st.sampled_from(NUMBA_PATHS),
)
def test_every_damaged_table_is_refused_on_push_and_pop_by_both_coders(precision, alphabet, count, kind, seed, numba):
    rng = np.random.default_rng(seed)
    table = valid_table(rng, count, alphabet, precision)
    bad = damaged(table, kind, rng, precision)
    symbols = np.zeros(count, dtype=np.int64)
    with compiled.use_numba(numba):
        good = VectorRANS(3, precision)
        good.push(symbols, table)  # the valid table codes
        with pytest.raises(ValueError, match="cdf"):
            VectorRANS(3, precision).push(symbols, bad)
        with pytest.raises(ValueError, match="cdf"):
            VectorRANS.from_bytes(good.to_bytes(), 3, precision).pop(bad)
    with pytest.raises(ValueError, match="cdf"):
        ScalarRANS(precision).push_symbols(symbols, bad)
    with pytest.raises(ValueError, match="cdf"):
        ScalarRANS.from_bytes(good.to_bytes() if count < 2 else b"\x00", precision).pop_symbols(bad)


def test_unsorted_scalar_table_is_refused_instead_of_decoding_wrong_symbols():
    coder = ScalarRANS(8)
    with pytest.raises(ValueError, match="non-decreasing"):
        coder.push_symbol(2, [0, 129, 111, 256])
    coder.push_symbol(2, [0, 100, 111, 256])
    with pytest.raises(ValueError, match="non-decreasing"):
        coder.pop([0, 129, 111, 256])


def test_lengths_and_types_must_match():
    cdf = np.array([[0, 100, 256]] * 2)
    with pytest.raises(ValueError, match="shape"):  # three symbols, two rows: nothing is silently dropped
        ScalarRANS(8).push_symbols(np.array([0, 1, 0]), cdf)
    with pytest.raises(ValueError, match="shape"):
        VectorRANS(2, 8).push(np.array([0, 1, 0]), cdf)
    for coder in (ScalarRANS(8), VectorRANS(2, 8)):
        with pytest.raises(ValueError, match="integers"):
            coder.push_uniform(np.array([1.7, 2.2]), 4)
    with pytest.raises(ValueError, match="integers"):
        VectorRANS(2, 8).push(np.array([0.0, 1.0]), cdf)
    with pytest.raises(ValueError, match="interval"):
        VectorRANS(2, 8).push_intervals(np.array([0]), np.array([0]))


@pytest.mark.parametrize("numba", NUMBA_PATHS)
def test_one_table_row_is_broadcast_to_every_symbol(numba):
    row = np.array([0, 30, 200, 256])
    symbols = np.random.default_rng(7).integers(0, 3, 100)
    with compiled.use_numba(numba):
        broadcast, tiled = VectorRANS(8, 8), VectorRANS(8, 8)
        broadcast.push(symbols, row)
        tiled.push(symbols, np.tile(row, (100, 1)))
        assert broadcast.to_bytes() == tiled.to_bytes()
        decoder = VectorRANS.from_bytes(broadcast.to_bytes(), 8, 8)
        np.testing.assert_array_equal(decoder.pop(row, count=100), symbols)
        decoder.check_finished()
    scalar = ScalarRANS(8)
    scalar.push_symbols(symbols[:10], row)
    np.testing.assert_array_equal(ScalarRANS.from_bytes(scalar.to_bytes(), 8).pop_symbols(row, 10), symbols[:10])


# ------------------------------------------------------------------------------------------------- compiled loops
@pytest.mark.skipif(not compiled.available(), reason="Numba is not installed")
@FAST
@given(
    precision=precisions,
    alphabet=st.sampled_from([2, 3, 17, 300]),
    lengths=st.lists(st.integers(0, 200), min_size=1, max_size=3),
    num_lanes=st.integers(1, 70),
    seed=st.integers(0, 2**32 - 1),
)
def test_compiled_and_numpy_coders_write_and_read_the_same_bytes(precision, alphabet, lengths, num_lanes, seed):
    rng = np.random.default_rng(seed)
    messages = [random_tables(rng, length, alphabet, precision) for length in lengths]
    streams = {}
    for numba in (False, True):
        with compiled.use_numba(numba):
            coder = VectorRANS(num_lanes, precision)
            for cdf, symbols in messages:
                coder.push(symbols, cdf)
                coder.push_uniform(symbols % 4, 2)
            streams[numba] = coder.to_bytes()
    assert streams[False] == streams[True]
    for numba in (False, True):  # each decodes the stream
        with compiled.use_numba(numba):
            decoder = VectorRANS.from_bytes(streams[True], num_lanes, precision)
            for cdf, symbols in reversed(messages):
                np.testing.assert_array_equal(decoder.pop_uniform(len(symbols), 2), symbols % 4)
                np.testing.assert_array_equal(decoder.pop(cdf), symbols)
            decoder.check_finished()


@pytest.mark.skipif(not compiled.available(), reason="Numba is not installed")
def test_compiled_stream_errors_match_numpy():
    data, cdf, _ = encoded_message()
    for numba in (False, True):
        with compiled.use_numba(numba), pytest.raises(CorruptStreamError, match="ran out of words"):
            decode_all(data[:-8], cdf)


# ------------------------------------------------------------------------------------------------- integer tables
def test_fixed_tables_are_exact_and_the_same_on_every_machine():
    # e^(n / 4096) within one rounding of the true value ...
    n = np.arange(-(1 << 17), (1 << 17) + 1, 997)
    np.testing.assert_allclose(exp_ticks(n), np.exp(n / 4096), rtol=4e-16)
    with pytest.raises(ValueError, match="exponents"):
        exp_ticks(np.array([1 << 18]))
    # ... and the sigmoid table built from it: its integers (a checksum of them) are part of the file format, so
    # a machine whose arithmetic differed would fail here rather than write files others cannot read.
    table = sigmoid_table()
    assert table[0] == 1 << 39 and (np.diff(table) >= 0).all()
    j = np.arange(len(table))
    assert np.abs(table / 2.0**40 - 1 / (1 + np.exp(-j / 256))).max() < 2.0**-40
    assert hashlib.sha256(table.tobytes()).hexdigest()[:16] == SIGMOID_TABLE_SHA256


SIGMOID_TABLE_SHA256 = "ccca5e7782f4dfef"  # sha256 of the table of the current file format


@FAST
@given(components=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_mixture_weights_are_a_softmax_in_integers(components, seed):
    rng = np.random.default_rng(seed)
    logits = rng.integers(-40 * 4096, 40 * 4096, (20, components))
    weights = mixture_weights(logits)
    assert (weights >= 0).all() and (weights.sum(axis=1) == 1 << 22).all()
    softmax = np.exp(logits / 4096 - (logits / 4096).max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    assert np.abs(weights / 2.0**22 - softmax).max() <= components * 2.0**-22


@FAST
@given(
    components=st.integers(1, 5),
    precision=st.integers(12, 24),
    size=st.sampled_from([9, 17, 129]),
    seed=st.integers(0, 2**32 - 1),
)
def test_logistic_tables_give_every_value_a_slot_and_match_entry_by_entry(components, precision, size, seed):
    rng = np.random.default_rng(seed)
    count = 30
    mixtures = LogisticMixtures.from_ticks(
        rng.integers(-(1 << 20), 1 << 20, (count, components)),
        rng.integers(-30 * 4096, 30 * 4096, (count, components)),  # beyond the clipping at +-20 on purpose
        rng.integers(-20 * 4096, 20 * 4096, (count, components)),
    )
    rows = rng.integers(0, count, 50)
    offsets = (mixtures.means[rows, 0] >> 12) - size // 2 + rng.integers(-3 * size, 3 * size, 50)
    tables = mixtures.tables(rows, offsets, size, precision).astype(np.int64)
    frequencies = np.diff(tables, axis=1)
    assert (tables[:, 0] == 0).all() and (tables[:, -1] == 1 << precision).all()
    assert (frequencies >= 1).all() and (frequencies[:, -1] == 1).all()  # every value codable, the escape 1 slot
    values = offsets + rng.integers(-2, size + 2, 50)
    symbols, starts, widths = mixtures.intervals(rows, values, offsets, size, precision)
    np.testing.assert_array_equal(starts, tables[np.arange(50), symbols])
    np.testing.assert_array_equal(widths, frequencies[np.arange(50), symbols])
    for numba in NUMBA_PATHS:  # the decoder finds every symbol, with or without the compiled search
        coder = VectorRANS(7, precision)
        coder.push_intervals(starts, widths)
        with compiled.use_numba(numba):
            decoder = VectorRANS.from_bytes(coder.to_bytes(), 7, precision)
            np.testing.assert_array_equal(mixtures.pop(decoder, rows, offsets, size), symbols)
            decoder.check_finished()


@pytest.mark.skipif(not compiled.available(), reason="Numba is not installed")
def test_compiled_table_entries_equal_the_numpy_ones():
    from flowlib.coding.logistic import _cdf_compiled

    rng = np.random.default_rng(11)
    mixtures = LogisticMixtures.from_ticks(
        rng.integers(-(1 << 24), 1 << 24, (40, 3)), rng.integers(-8 * 4096, 8 * 4096, (40, 3)),
        rng.integers(-10 * 4096, 0, (40, 3)),
    )
    offsets, buckets = mixtures.windows()
    rows = np.repeat(np.arange(40), 67)
    k = np.tile(np.arange(67), 40)
    expected = mixtures.cdf(rows, offsets[rows], k, 65, 24)
    entries = [
        _cdf_compiled(row, offsets[row], entry, 65, 1 << 24, mixtures.means, mixtures.inverse_scales,
                      mixtures.weights, sigmoid_table())
        for row, entry in zip(rows, k)
    ]
    np.testing.assert_array_equal(entries, expected)


def test_windows_cover_each_component():
    mixtures = LogisticMixtures.from_floats(
        np.array([[0.0, 100.0], [0.0, 100.0]]), np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [0.0, -30]])
    )
    offsets, buckets = mixtures.windows(tail=16.0)
    half = np.array([2**k for k in range(2, 15)])[buckets]
    assert offsets[0] <= -16 and offsets[0] + 2 * half[0] >= 116  # both components, 16 scales each side
    assert offsets[1] <= -16 and offsets[1] + 2 * half[1] < 100  # a component of weight e^-30 does not count
