"""The flowlib compressed-file container: a fixed 64-byte header, optional JSON metadata, then the coder's payload.

Layout (little-endian), ``HEADER_SIZE = 64`` bytes:

====== ===== ==========================================================================
offset bytes field
====== ===== ==========================================================================
0      4     magic ``b"FLZ1"``
4      2     format version (``FORMAT_VERSION``)
6      1     number of dimensions of the image shape (0..4)
7      1     reserved (must be 0)
8      16    image shape, 4 x uint32 (unused dimensions must be 0)
24     4     number of images (uint32)
28     4     length of the JSON ``extra`` metadata in bytes (0 when there is none)
32     8     length of the payload in bytes
40     16    fingerprint of the model weights (made by the caller, e.g. sha256 of the state_dict)
56     4     reserved (must be 0)
60     4     CRC-32 of bytes 0..59, the extra metadata and the payload
====== ===== ==========================================================================

The container knows nothing about models: the caller passes the fingerprint, and :func:`flowlib.coding.container.unpack`
refuses a file whose fingerprint differs from the expected one (decoding with other weights would produce
garbage). Every field is checked: a reserved byte or unused shape slot that is not 0, metadata that is not a JSON
object, or a length that disagrees with the data raises a :class:`ContainerError` subclass that says what to do.

Versions: 1 (flowlib 0.1, IDF tables built with the platform's ``exp``) is no longer read; 2 is current (the
coding scheme of :mod:`flowlib.compress`, integer tables, per-chunk checksums).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FINGERPRINT_SIZE",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "ChecksumError",
    "Container",
    "ContainerError",
    "ModelMismatchError",
    "NotAFlowlibFileError",
    "TruncatedFileError",
    "UnsupportedVersionError",
    "file_length",
    "pack",
    "unpack",
]

MAGIC = b"FLZ1"
FORMAT_VERSION = 2
FINGERPRINT_SIZE = 16
MAX_DIMENSIONS = 4
MAX_EXTRA_DEPTH = 32  # metadata nested deeper than this is refused (deep nesting exhausts Python's recursion)
_HEADER = struct.Struct("<4sHBB4IIIQ16sII")
HEADER_SIZE = _HEADER.size  # 64
_CHECKSUM_OFFSET = HEADER_SIZE - 4


class ContainerError(ValueError):
    """A flowlib compressed file cannot be read; the subclass and message say why and what to do."""


class TruncatedFileError(ContainerError):
    """The file is shorter than its header says (an interrupted copy or download)."""


class ChecksumError(ContainerError):
    """The file's checksum does not match its contents (the file was corrupted)."""


class ModelMismatchError(ContainerError):
    """The file was compressed with a model whose weights differ from the ones given for decompression."""


class NotAFlowlibFileError(ContainerError):
    """The data does not start with the flowlib magic bytes."""


class UnsupportedVersionError(ContainerError):
    """The file uses a container format version this flowlib cannot read."""


@dataclass(frozen=True)
class Container:
    """The contents of a flowlib compressed file.

    Arguments:
        payload: the entropy coder's bytes.
        shape: the shape of one image, e.g. ``(1, 28, 28)``.
        count: number of images.
        model_fingerprint: 16 bytes identifying the model weights.
        version: the container format version.
        extra: JSON metadata given to :func:`pack` (empty dict when none).
    """

    payload: bytes
    shape: tuple[int, ...]
    count: int
    model_fingerprint: bytes
    version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)


def pack(
    payload: bytes, *, shape: tuple[int, ...], count: int, model_fingerprint: bytes, extra: dict | None = None
) -> bytes:
    """A complete file: 64-byte header, ``extra`` as compact JSON (if given), then ``payload``.

    Example:
        >>> data = pack(b"abc", shape=(1, 28, 28), count=2, model_fingerprint=bytes(16))
        >>> len(data), unpack(data, expected_fingerprint=bytes(16)).shape
        (67, (1, 28, 28))
    """
    shape = tuple(int(size) for size in shape)
    if len(shape) > MAX_DIMENSIONS or any(not 0 <= size < 1 << 32 for size in shape):
        raise ValueError(f"shape must have at most {MAX_DIMENSIONS} dimensions in [0, 2**32), got {shape}")
    if not 0 <= count < 1 << 32:
        raise ValueError(f"count must lie in [0, 2**32), got {count}")
    if not isinstance(model_fingerprint, bytes) or len(model_fingerprint) != FINGERPRINT_SIZE:
        raise ValueError(
            f"model_fingerprint must be {FINGERPRINT_SIZE} bytes (e.g. hashlib.sha256(weights).digest()[:16]), "
            f"got {model_fingerprint!r}"
        )
    extra_bytes = b"" if not extra else json.dumps(extra, sort_keys=True, separators=(",", ":")).encode()
    payload = bytes(payload)
    header = _HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        len(shape),
        0,
        *(shape + (0,) * (MAX_DIMENSIONS - len(shape))),
        int(count),
        len(extra_bytes),
        len(payload),
        model_fingerprint,
        0,
        0,
    )[:_CHECKSUM_OFFSET]
    checksum = zlib.crc32(payload, zlib.crc32(extra_bytes, zlib.crc32(header)))
    return header + struct.pack("<I", checksum) + extra_bytes + payload


def file_length(header: bytes) -> int:
    """The length in bytes of the whole file that starts with ``header`` (its first :data:`HEADER_SIZE` bytes or
    more), after checking the magic and the version: lets a reader read exactly one file and no more.

    Example:
        >>> file_length(pack(b"abc", shape=(1, 2, 2), count=1, model_fingerprint=bytes(16)))
        67
    """
    header = bytes(header[:HEADER_SIZE])
    if header[: len(MAGIC)] != MAGIC[: len(header)] or not header:
        raise NotAFlowlibFileError(
            f"this is not a flowlib compressed file (it starts with {header[:4]!r}, not {MAGIC!r}); pass a file made "
            "by flowlib's compressor"
        )
    if len(header) < HEADER_SIZE:
        raise TruncatedFileError(
            f"the file is {len(header)} bytes, shorter than the {HEADER_SIZE}-byte header: it was truncated; copy or "
            "download it again"
        )
    fields = _HEADER.unpack_from(header)
    version = fields[1]
    if version != FORMAT_VERSION:
        older = " (written by flowlib 0.1, whose tables this version no longer builds; decode it with flowlib 0.1 "
        raise UnsupportedVersionError(
            f"the file uses container format version {version} but this flowlib reads version {FORMAT_VERSION}"
            + (older + "and compress the images again)" if version < FORMAT_VERSION else "; upgrade flowlib")
            + " (or the file header is corrupt)"
        )
    return HEADER_SIZE + fields[9] + fields[10]


def unpack(data: bytes, *, expected_fingerprint: bytes | None) -> Container:
    """Read a file made by :func:`pack`, checking magic, version, length, checksum, reserved fields and (if given)
    the fingerprint. Raises a :class:`ContainerError` subclass whose message says what is wrong."""
    data = bytes(data)
    expected_length = file_length(data)
    fields = _HEADER.unpack_from(data)
    version, ndim, reserved = fields[1], fields[2], (fields[3], fields[12])
    shape_fields, count, extra_length, payload_length = fields[4:8], fields[8], fields[9], fields[10]
    fingerprint, checksum = fields[11], fields[13]
    if len(data) < expected_length:
        raise TruncatedFileError(
            f"the file is {len(data)} bytes but its header announces {expected_length}: it was truncated; copy or "
            "download it again"
        )
    if len(data) > expected_length:
        raise ContainerError(
            f"the file has {len(data) - expected_length} unexpected bytes after its payload (or a corrupt header); "
            "pass exactly one flowlib file"
        )
    extra_bytes = data[HEADER_SIZE : HEADER_SIZE + extra_length]
    payload = data[HEADER_SIZE + extra_length :]
    if zlib.crc32(payload, zlib.crc32(extra_bytes, zlib.crc32(data[:_CHECKSUM_OFFSET]))) != checksum:
        raise ChecksumError("the file's checksum does not match its contents: the file is corrupted; get a fresh copy")
    if ndim > MAX_DIMENSIONS:
        raise ContainerError(
            f"the header names {ndim} image dimensions (at most {MAX_DIMENSIONS}); the file is invalid"
        )
    if any(reserved) or any(shape_fields[ndim:]):
        raise ContainerError(
            "the header's reserved bytes or unused shape slots are not zero: the file was altered or made by "
            "something other than flowlib; get a fresh copy"
        )
    if expected_fingerprint is not None and fingerprint != expected_fingerprint:
        raise ModelMismatchError(
            f"this file was compressed with a different model (fingerprint {fingerprint.hex()[:12]}..., the "
            f"given model "
            f"has {bytes(expected_fingerprint).hex()[:12]}...); load the model it was made with"
        )
    return Container(
        payload=payload,
        shape=tuple(shape_fields[:ndim]),
        count=count,
        model_fingerprint=fingerprint,
        version=version,
        extra=_read_extra(extra_bytes),
    )


def _read_extra(extra_bytes: bytes) -> dict:
    """The metadata: a JSON object (nested at most :data:`MAX_EXTRA_DEPTH` deep), or ``{}`` when there is none."""
    if not extra_bytes:
        return {}
    try:
        text = extra_bytes.decode("utf-8")
        depth = _nesting(extra_bytes)
        if depth > MAX_EXTRA_DEPTH:
            raise ValueError(f"nested {depth} levels deep (at most {MAX_EXTRA_DEPTH})")
        extra = json.loads(text)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ContainerError(
            f"the file's metadata is not valid JSON ({error}); the file was altered or made by something other than "
            "flowlib"
        ) from None
    if not isinstance(extra, dict):
        raise ContainerError(f"the file's metadata must be a JSON object, got {type(extra).__name__}")
    return extra


def _nesting(text: bytes) -> int:
    """The deepest bracket nesting of a JSON text (brackets inside strings may over-count: that only refuses more)."""
    codes = np.frombuffer(text, dtype=np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int64) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))
