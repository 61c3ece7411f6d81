"""Fuzzing the decoder with hostile files: mutated and crafted ones, a few hundred, bounded in time.

Every case must end in one of the documented errors (:class:`flowlib.coding.ContainerError`,
:class:`flowlib.coding.CorruptStreamError`) or in exactly the images that were compressed: never another
exception, never wrong pixels, never a long run or a large allocation. Files are *crafted* when their container
checksum is fixed after the change (what an attacker can do), *corrupted* when it is not. The test prints the
number of cases of each kind and the worst time and memory seen (``pytest -s``).
"""

from __future__ import annotations

import struct
import time
import tracemalloc
import zlib
from collections import Counter

import numpy as np
import pytest
import torch

import flowlib.compress.codec as codec_module
from flowlib.coding import HEADER_SIZE, ContainerError, CorruptStreamError
from flowlib.compress import compress, decompress, load_model
from flowlib.models.idf import IDF

SECONDS_PER_CASE = 2.0  # the slowest case must stay below this (the typical one takes milliseconds)
PEAK_BYTES = 64 << 20  # and allocate less than this (NumPy and Python memory, as tracemalloc sees it)


def crafted(data: bytes, payload: bytes | None = None, header: dict[int, bytes] | None = None,
            extra: bytes | None = None) -> bytes:
    """``data`` with a new payload, metadata and/or header bytes (offset -> bytes), lengths and checksum fixed."""
    head = bytearray(data[:HEADER_SIZE])
    extra_length = struct.unpack_from("<I", head, 28)[0]
    old_extra, old_payload = data[HEADER_SIZE : HEADER_SIZE + extra_length], data[HEADER_SIZE + extra_length :]
    extra = old_extra if extra is None else extra
    payload = old_payload if payload is None else payload
    struct.pack_into("<I", head, 28, len(extra))
    struct.pack_into("<Q", head, 32, len(payload))
    for offset, value in (header or {}).items():
        head[offset : offset + len(value)] = value
    struct.pack_into("<I", head, 60, zlib.crc32(payload, zlib.crc32(extra, zlib.crc32(bytes(head[:60])))))
    return bytes(head) + extra + payload


def mutations(data: bytes, rng: np.random.Generator, count: int):
    """``count`` hostile variants of ``data``, with a name for their kind."""
    payload = data[HEADER_SIZE:]
    for index in range(count):
        kind = index % 9
        if kind == 0:  # corrupted: a flipped bit anywhere
            position = int(rng.integers(len(data)))
            yield "corrupted bit", data[:position] + bytes([data[position] ^ (1 << int(rng.integers(8)))]) + data[
                position + 1 :
            ]
        elif kind == 1:  # crafted: flipped bytes in the payload
            mutated = bytearray(payload)
            for _ in range(int(rng.integers(1, 4))):
                mutated[int(rng.integers(len(mutated)))] ^= int(rng.integers(1, 256))
            yield "crafted payload bytes", crafted(data, bytes(mutated))
        elif kind == 2:  # crafted: truncated or extended payload
            cut = int(rng.integers(len(payload)))
            tail = rng.bytes(int(rng.integers(0, 9)))
            yield "crafted payload length", crafted(data, payload[:cut] + (tail if rng.random() < 0.5 else b""))
        elif kind == 3:  # crafted: random payload of any length
            yield "crafted random payload", crafted(data, rng.bytes(int(rng.integers(0, 400))))
        elif kind == 4:  # crafted: image count
            count_field = int(rng.choice([0, 1, 2**32 - 1, int(rng.integers(0, 2**32))]))
            yield "crafted count", crafted(data, header={24: struct.pack("<I", count_field)})
        elif kind == 5:  # crafted: shape fields
            offset = int(rng.choice([6, 8, 12, 16, 20]))
            value = bytes([int(rng.integers(256))]) if offset == 6 else struct.pack("<I", int(rng.integers(0, 64)))
            yield "crafted shape", crafted(data, header={offset: value})
        elif kind == 6:  # crafted: version, reserved bytes, fingerprint
            offset = int(rng.choice([4, 7, 40, 56]))
            yield "crafted header field", crafted(data, header={offset: rng.bytes(2 if offset == 4 else 1)})
        elif kind == 7:  # crafted: metadata
            extra = rng.choice([b"{", b"[" * 5000, b'{"a": 1}', rng.bytes(int(rng.integers(1, 50)))])
            yield "crafted metadata", crafted(data, extra=bytes(extra))
        else:  # corrupted: truncated or extended file
            cut = int(rng.integers(len(data)))
            yield "corrupted length", data[:cut] if rng.random() < 0.5 else data + rng.bytes(int(rng.integers(1, 9)))


def attack(data: bytes, model: IDF, images: torch.Tensor, cases: int, seed: int) -> tuple[Counter, float, int]:
    """Decode ``cases`` mutations of ``data``; returns the outcomes, the worst seconds and the worst peak bytes."""
    outcomes, worst_seconds, worst_peak = Counter(), 0.0, 0
    assert torch.equal(decompress(data, model), images)  # the valid file (and compiling the loops) is not timed
    for kind, hostile in mutations(data, np.random.default_rng(seed), cases):
        tracemalloc.start()
        start = time.perf_counter()
        try:
            decoded = decompress(hostile, model)
            outcome = "decoded"
            assert torch.equal(decoded, images), f"{kind}: decoded to wrong pixels"
        except (ContainerError, CorruptStreamError) as error:
            outcome = type(error).__name__
        seconds, (_, peak) = time.perf_counter() - start, tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert seconds < SECONDS_PER_CASE, f"{kind}: {seconds:.1f} s"
        assert peak < PEAK_BYTES, f"{kind}: {peak / 2**20:.0f} MiB"
        outcomes[kind, outcome] += 1
        worst_seconds, worst_peak = max(worst_seconds, seconds), max(worst_peak, peak)
    return outcomes, worst_seconds, worst_peak


def report(name: str, outcomes: Counter, seconds: float, peak: int) -> None:
    print(f"\n{name}: {sum(outcomes.values())} hostile files, worst {1e3 * seconds:.0f} ms, {peak / 2**20:.1f} MiB")
    for (kind, outcome), number in sorted(outcomes.items()):
        print(f"  {kind:<24} {outcome:<22} {number}")


def test_fuzz_the_decoder_of_a_small_model(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = IDF((1, 8, 8), num_levels=2, num_couplings=2, hidden_channels=8, num_components=3, factor_components=2)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    monkeypatch.setattr(codec_module, "CHUNK_IMAGES", 4)  # several chunks in a small file
    images = torch.randint(100, 140, (10, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    data = compress(images, model, allow_raw=False)
    outcomes, seconds, peak = attack(data, model, images, cases=360, seed=2)
    report("small model, 10 images in 3 chunks", outcomes, seconds, peak)
    assert sum(number for (_, outcome), number in outcomes.items() if outcome != "decoded") >= 300


def test_fuzz_the_decoder_of_the_mnist_model() -> None:
    model = load_model("07_idf-mnist-standard")
    from flowlib.data import load_images

    try:
        images, _ = load_images("mnist", "test", subset=3)
    except Exception as error:  # pragma: no cover - depends on the machine's data
        pytest.skip(f"MNIST not available: {error}")
    data = compress(images, model)
    outcomes, seconds, peak = attack(data, model, images, cases=72, seed=3)
    report("MNIST model, 3 images", outcomes, seconds, peak)
