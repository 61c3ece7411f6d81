"""The IDF + rANS codec: ``uint8`` images to bytes and back, bit for bit.

How a file is made (:func:`compress`), for images ``x`` of one shape, chunk by chunk of :data:`CHUNK_IMAGES`:

1. The IDF maps the chunk to integer latents ``z_1, ..., z_L`` on its exact coding path
   (:meth:`flowlib.models.idf.IDF.forward_integer`). Each ``z_l`` has a prior (a discretized logistic mixture per
   value, :meth:`flowlib.models.idf.IDF.prior`) whose parameters are multiples of ``2^-12`` computed in exact
   arithmetic, so the decoder can rebuild them from what it has already decoded.
2. Each value's table covers a *window* of integers around its distribution, ``+-16`` scales of every component
   that matters (:meth:`flowlib.coding.logistic.LogisticMixtures.windows`); the rare value outside is escaped
   (:func:`flowlib.coding.cdf.push_escapes`). The two table entries a value needs are computed directly, in integer
   arithmetic (:mod:`flowlib.coding.logistic`): no table is built to encode, and every machine computes the same.
3. Everything goes onto ONE rANS stack (:class:`flowlib.coding.rans.VectorRANS`, precision 24, one lane per image up to
   :data:`MAX_LANES`). rANS is last-in-first-out and the decoder needs ``z_L`` first (its prior is unconditional),
   then ``z_{L-1}`` given ``y_{L-1}`` recomputed from ``z_L``, and so on; so a chunk pushes ``z_1`` first and ``z_L``
   last, then its pixels' CRC-32, then a flag. The values of a level go in groups of one window size, smallest
   windows first.
4. If the model would spend more than 8 bits per pixel on a chunk (images unlike its training data), the chunk's
   pixels are stored raw instead, flagged, and :class:`RawChunkWarning` says so.
5. The stream goes into the flowlib container (:func:`flowlib.coding.container.pack`) with the model's fingerprint
   (:func:`model_fingerprint`).

Decoding (:func:`decompress`) walks the same steps backwards, last chunk first. A truncated, corrupted or foreign
file, or one made with other weights, raises :class:`flowlib.coding.container.ContainerError` or
:class:`flowlib.coding.rans.CorruptStreamError`; wrong pixels are never returned (the container's checksum, every
chunk's CRC and the coder's end state all have to agree), and the work done is bounded by the file's size.
"""

from __future__ import annotations

import hashlib
import math
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowlib.coding import (
    CorruptStreamError,
    LogisticMixtures,
    VectorRANS,
    pack,
    pop_escapes,
    push_escapes,
    unpack,
)
from flowlib.coding.logistic import HALF_WIDTHS, TICK_BITS
from flowlib.distributions.discretized import DiscretizedLogisticMixture
from flowlib.models.idf import IDF, PIXEL_OFFSET, ExactArithmeticError

__all__ = [
    "CHUNK_IMAGES",
    "CODING_SCHEME",
    "PRECISION",
    "RawChunkWarning",
    "compress",
    "decompress",
    "load_model",
    "model_fingerprint",
    "num_lanes_for",
    "table_code_length",
]

CODING_SCHEME = b"flowlib-idf-rans-v2"  # part of the fingerprint: files of another scheme are refused
PRECISION = 24  # table precision in bits (IDF used 24): ~2e-6 bits per value above the model's code length
MAX_LANES = 64  # interleaved rANS states; each costs ~4-8 bytes at the end of the stream
CHUNK_IMAGES = 256  # images per chunk: one network call, one CRC, one raw-or-coded flag
TAIL_SCALES = 16.0  # a window reaches this many scales of each component (mass left outside: ~e^-16)
LATENT_LIMIT = 1 << 30  # no IDF whose exact path succeeds makes latents this large (shifts stay below 2^22)
_CHUNK_BITS = 33  # each chunk pushes at least its 32-bit CRC and its 1-bit flag
_FRESH_COPY = ": the file is corrupt; get a fresh copy (its checksum holds, so it was altered when it was made or by " \
    "other software)"


class RawChunkWarning(UserWarning):
    """Some chunks were stored as raw pixels: the model would have expanded them (data unlike its training set)."""


# --------------------------------------------------------------------------------------------------------------
# Model identity
# --------------------------------------------------------------------------------------------------------------


def model_fingerprint(model: torch.nn.Module) -> bytes:
    """16 bytes identifying the weights: sha256 over :data:`CODING_SCHEME` and each ``state_dict`` entry (name,
    dtype, shape, bytes) in sorted key order, truncated. Equal fingerprints mean bit-identical weights."""
    digest = hashlib.sha256(CODING_SCHEME)
    for name, value in sorted(model.state_dict().items()):
        value = value.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.digest()[:16]


def num_lanes_for(num_images: int) -> int:
    """rANS lanes for ``num_images`` images: one per image up to :data:`MAX_LANES` (short files waste nothing)."""
    return max(1, min(MAX_LANES, int(num_images)))


def load_model(name: str, directory: Path | str | None = None) -> IDF:
    """The IDF saved as checkpoint ``name`` (e.g. ``"07_idf-mnist-standard"``), rebuilt from the manifest's config."""
    from flowlib.train import checkpoint_metadata, load_checkpoint

    directory = Path(directory) if directory is not None else None
    metadata = checkpoint_metadata(name, directory)
    if "config" not in metadata:
        raise ValueError(f"checkpoint {name!r} has no IDF config in the manifest; it is not an IDF checkpoint")
    config = dict(metadata["config"])
    config["image_shape"] = tuple(config["image_shape"])
    model = IDF(**config)
    load_checkpoint(model, name, directory=directory)
    return model.eval()


# --------------------------------------------------------------------------------------------------------------
# From the model's priors to coding distributions
# --------------------------------------------------------------------------------------------------------------


def _ticks(value: Tensor) -> np.ndarray:
    """A coding-path parameter (float64, a multiple of ``2^-12``) as an integer number of ticks."""
    return (value.detach().double() * (1 << TICK_BITS)).round().to(torch.int64).cpu().numpy()


def _mixtures(distribution) -> LogisticMixtures:
    """The coding distributions of a quantized prior, one mixture per value (flattened; components last)."""
    if isinstance(distribution, DiscretizedLogisticMixture):
        components = distribution.num_components
        means, log_scales, logits = (
            _ticks(value).reshape(-1, components)
            for value in (distribution.means, distribution.log_scales, distribution.logit_weights)
        )
        return LogisticMixtures.from_ticks(means, log_scales, logits)
    return LogisticMixtures.from_ticks(_ticks(distribution.mean).reshape(-1, 1), _ticks(distribution.log_scale)
                                       .reshape(-1, 1))


class _Level:
    """The coding distributions of one level's values (the flattened latent): value ``i`` uses mixture ``rows[i]``
    and the window that starts at ``offsets[i]``; ``groups`` lists the values in coding order as ``(window size,
    items)``, one group per window size.

    ``tables``: whole tables of the mixtures, built once, when they are shared by many values (the top prior's, one
    per dimension): then a value's two entries are looked up instead of computed (the same integers).
    """

    def __init__(self, mixtures: LogisticMixtures, rows: np.ndarray, tables: _Tables | None = None):
        self.mixtures, self.rows, self.tables = mixtures, rows, tables
        offsets, buckets = mixtures.windows(TAIL_SCALES) if tables is None else (tables.offsets, tables.buckets)
        self.offsets, buckets = offsets[rows], buckets[rows]
        self.groups = [
            (2 * HALF_WIDTHS[bucket] + 1, np.flatnonzero(buckets == bucket)) for bucket in np.unique(buckets)
        ]

    def intervals(self, size: int, items: np.ndarray, values: np.ndarray):
        """Symbols (the escape is ``size``) and intervals ``(starts, frequencies)`` of ``values`` at ``items``."""
        rows, offsets = self.rows[items], self.offsets[items]
        if self.tables is None:
            return self.mixtures.intervals(rows, values, offsets, size, PRECISION)
        table, table_rows = self.tables.of(size, rows)
        symbols = values - offsets
        symbols = np.where((symbols < 0) | (symbols >= size), size, symbols)
        starts = table[table_rows, symbols].astype(np.int64)
        return symbols, starts, table[table_rows, symbols + 1] - starts

    def pop(self, coder: VectorRANS, size: int, items: np.ndarray) -> np.ndarray:
        """Pop the symbols of the values at ``items``, pushed with :meth:`intervals`."""
        rows, offsets = self.rows[items], self.offsets[items]
        if self.tables is None:
            return self.mixtures.pop(coder, rows, offsets, size)
        table, table_rows = self.tables.of(size, rows)
        return coder.pop(table, rows=table_rows)


class _Tables:
    """Whole tables of ``mixtures`` with the windows ``offsets, buckets`` (:meth:`LogisticMixtures.windows`), one
    array per window size."""

    def __init__(self, mixtures: LogisticMixtures, offsets: np.ndarray, buckets: np.ndarray):
        self.offsets, self.buckets = offsets, buckets
        self.by_size, self.index = {}, np.empty(len(mixtures), dtype=np.int64)
        for bucket in np.unique(self.buckets):
            rows = np.flatnonzero(self.buckets == bucket)
            size = 2 * HALF_WIDTHS[bucket] + 1
            self.by_size[size] = mixtures.tables(rows, self.offsets[rows], size, PRECISION)
            self.index[rows] = np.arange(len(rows))

    def of(self, size: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The table of window size ``size`` and the positions of mixtures ``rows`` in it."""
        return self.by_size[size], self.index[rows]


class _Priors:
    """The priors of ``model``'s levels as coding distributions for ``num_images`` images; the top level's (one per
    dimension, shared by all images) is computed once, and tabulated when the images are many enough to repay it."""

    def __init__(self, model: IDF, num_images: int):
        self.model = model
        self.top = _mixtures(model.prior(len(model.levels) - 1, None))
        offsets, buckets = self.top.windows(TAIL_SCALES)
        entries = int(np.sum(2 * np.asarray(HALF_WIDTHS)[buckets] + 3))
        self.top_tables = _Tables(self.top, offsets, buckets) if 16 * num_images * len(self.top) >= entries else None

    def level(self, index: int, context: Tensor | None, num_images: int) -> _Level:
        if self.model.levels[index].last:
            return _Level(self.top, np.tile(np.arange(len(self.top)), num_images), self.top_tables)
        mixtures = _mixtures(self.model.prior(index, context))
        return _Level(mixtures, np.arange(len(mixtures)))


# --------------------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------------------


def compress(images: Tensor | np.ndarray, model: IDF, *, allow_raw: bool = True) -> bytes:
    """A flowlib file holding ``images`` (``uint8``, ``(N, C, H, W)`` or greyscale ``(N, H, W)``), coded with ``model``.

    The model is used as it is (its mode, device and weights stay untouched); its networks run on its device,
    in exact arithmetic, so a GPU and a CPU write the same file. A chunk the model would code in more than 8 bits
    per pixel is stored raw, with a :class:`RawChunkWarning` (``allow_raw=False``: code every chunk with the model,
    e.g. to measure it). Raises ``TypeError``/``ValueError`` for images of the wrong type or shape, and
    :class:`flowlib.models.idf.ExactArithmeticError` (a ``ValueError``) for a model whose weights have diverged.

    Example:
        >>> model = IDF((1, 8, 8), num_levels=2, num_couplings=1, hidden_channels=4)
        >>> images = torch.full((3, 1, 8, 8), 128, dtype=torch.uint8)
        >>> bool(torch.equal(decompress(compress(images, model), model), images))
        True
    """
    images = _as_images(images, model)
    coder = VectorRANS(num_lanes_for(len(images)), PRECISION)
    raw_chunks = _encode(images, model, coder, allow_raw)
    if raw_chunks:
        chunks = math.ceil(len(images) / CHUNK_IMAGES)
        warnings.warn(
            f"{raw_chunks} of {chunks} chunks of {CHUNK_IMAGES} images were stored as raw pixels (8 bits/dim): the "
            "model would have spent more on them. These images look unlike the data the model was trained on; "
            "use a model trained on such images.",
            RawChunkWarning,
            stacklevel=2,
        )
    fingerprint = model_fingerprint(model)
    return pack(coder.to_bytes(), shape=model.image_shape, count=len(images), model_fingerprint=fingerprint)


def _encode(images: Tensor, model: IDF, coder, allow_raw: bool) -> int:
    """Push ``images`` onto ``coder``, chunk by chunk; returns the number of chunks stored raw."""
    priors, raw_chunks = _Priors(model, len(images)), 0
    for first in range(0, len(images), CHUNK_IMAGES):
        chunk = images[first : first + CHUNK_IMAGES]
        latents, contexts = model.forward_integer(chunk.to(_device(model)), return_contexts=True)
        pushes, bits = [], 0.0
        for index, (latent, context) in enumerate(zip(latents, contexts)):  # z_1 first: it is decoded last
            values = latent.reshape(-1).cpu().numpy()
            if np.abs(values).max(initial=0) >= LATENT_LIMIT:
                raise ExactArithmeticError("the model maps these images to latents beyond 2^30: retrain it")
            level = priors.level(index, context, len(chunk))
            for size, items in level.groups:
                push = _Push(level, size, items, values[items])
                pushes.append(push)
                bits += push.bits
        raw = allow_raw and bits > 8 * chunk.numel()
        if raw:
            coder.push_uniform(chunk.reshape(-1).numpy(), 8)
        else:
            for push in pushes:
                push.onto(coder)
        checksum = zlib.crc32(chunk.numpy().tobytes())
        coder.push_uniform(np.array([checksum >> 16, checksum & 0xFFFF]), 16)
        coder.push_uniform(np.array([int(raw)]), 1)  # decoded first
        raw_chunks += raw
    return raw_chunks


class _Push:
    """What one group of values puts on the stack: the escaped values' raw distances, then every value's
    interval (two table entries computed directly), with its information content in ``bits``."""

    def __init__(self, level: _Level, size: int, items: np.ndarray, values: np.ndarray):
        offsets = level.offsets[items]
        symbols, self.starts, self.frequencies = level.intervals(size, items, values)
        escaped = symbols == size
        self.escaped, self.low, self.high = values[escaped], offsets[escaped], offsets[escaped] + size - 1
        distances = np.maximum(self.low - 1 - self.escaped, self.escaped - self.high - 1).astype(np.uint64)
        num_bytes = 1 + (distances[:, None] >> np.arange(8, 64, 8, dtype=np.uint64) > 0).sum(axis=1)
        self.bits = float(np.sum(PRECISION - np.log2(self.frequencies)) + np.sum(4 + 8 * num_bytes))

    def onto(self, coder) -> None:
        push_escapes(coder, self.escaped, self.low, self.high)
        coder.push_intervals(self.starts, self.frequencies)


# --------------------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------------------


def decompress(data: bytes, model: IDF) -> Tensor:
    """The ``uint8`` images ``(N, C, H, W)`` stored in ``data`` by :func:`compress` with the same ``model``.

    Raises :class:`flowlib.coding.container.ContainerError` (not a flowlib file, truncated, checksum or model mismatch) or
    :class:`flowlib.coding.rans.CorruptStreamError` (the stream does not decode to the images that were stored). Work
    and memory are bounded by the size of ``data``: each chunk costs at least 33 bits of it.

    Example:
        >>> from flowlib.coding import ContainerError
        >>> model = IDF((1, 4, 4), num_levels=1, num_couplings=1, hidden_channels=4)
        >>> try:
        ...     decompress(b"PNG", model)
        ... except ContainerError as error:
        ...     print(type(error).__name__)
        NotAFlowlibFileError
    """
    container = unpack(data, expected_fingerprint=model_fingerprint(model))
    if tuple(container.shape) != model.image_shape:
        raise CorruptStreamError(
            f"the file holds images of shape {container.shape}, the model codes {model.image_shape}{_FRESH_COPY}"
        )
    num_chunks = math.ceil(container.count / CHUNK_IMAGES)
    if num_chunks > 8 * len(container.payload) // _CHUNK_BITS + 1:
        raise CorruptStreamError(
            f"the header announces {container.count} images, more than a {len(container.payload)}-byte stream can "
            f"hold{_FRESH_COPY}"
        )
    coder = VectorRANS.from_bytes(container.payload, num_lanes_for(container.count), PRECISION)
    priors, chunks = _Priors(model, container.count), []
    for chunk in reversed(range(num_chunks)):
        size = min(CHUNK_IMAGES, container.count - chunk * CHUNK_IMAGES)
        chunks.append(_decode_chunk(coder, model, priors, size))
    coder.check_finished()
    if not chunks:
        return torch.empty((0, *model.image_shape), dtype=torch.uint8)
    return torch.cat(chunks[::-1])


def _decode_chunk(coder: VectorRANS, model: IDF, priors: _Priors, num_images: int) -> Tensor:
    """Pop one chunk of ``num_images`` images (pushed by :func:`_encode`) and check its CRC."""
    raw = coder.pop_uniform(1, 1)[0]
    high, low = coder.pop_uniform(2, 16)
    if raw:
        images = torch.from_numpy(coder.pop_uniform(num_images * model.num_dims, 8).astype(np.uint8))
        images = images.view(num_images, *model.image_shape)
    else:
        try:
            pixels = _decode_levels(coder, model, priors, num_images) + PIXEL_OFFSET
        except ExactArithmeticError:  # the exact networks refuse inputs that no image can produce
            message = f"the stream decodes to latents this model cannot have made{_FRESH_COPY}"
            raise CorruptStreamError(message) from None
        if pixels.min() < 0 or pixels.max() > 255:
            raise CorruptStreamError(f"the stream decodes to values outside 0..255{_FRESH_COPY}")
        images = pixels.to(torch.uint8).cpu()
    if (int(high) << 16 | int(low)) != zlib.crc32(images.numpy().tobytes()):
        raise CorruptStreamError(f"the decoded images fail their checksum{_FRESH_COPY}")
    return images


def _decode_levels(coder: VectorRANS, model: IDF, priors: _Priors, num_images: int) -> Tensor:
    """Pop the latents of one chunk, ``z_L`` first, each level given the ones above it, and invert the flow:
    the centred pixels (float64, on the model's device)."""
    y = None
    for index in reversed(range(len(model.levels))):
        shape = (num_images, *model.levels[index].latent_shape)
        level = priors.level(index, y, num_images)
        values = np.empty(math.prod(shape), dtype=np.int64)
        for size, items in reversed(level.groups):
            offsets = level.offsets[items]
            symbols = level.pop(coder, size, items)
            escaped = symbols == size
            symbols = symbols + offsets
            symbols[escaped] = pop_escapes(coder, offsets[escaped], offsets[escaped] + size - 1)
            values[items] = symbols
        if np.abs(values).max(initial=0) >= LATENT_LIMIT:
            raise CorruptStreamError(f"the stream decodes to latents no model makes{_FRESH_COPY}")
        y = model.inverse_latent_level(index, y, torch.from_numpy(values).view(shape).to(_device(model)))
    return y


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def _device(model: IDF) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _as_images(images: Tensor | np.ndarray, model: IDF) -> Tensor:
    """``images`` as a contiguous CPU ``uint8`` tensor ``(N, C, H, W)`` of the model's image shape."""
    images = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images)
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 pixels in 0..255, got dtype {images.dtype}; convert them first")
    if images.dim() == 3 and model.image_shape[0] == 1:
        images = images.unsqueeze(1)  # (N, H, W) greyscale
    if images.dim() != 4 or tuple(images.shape[1:]) != model.image_shape:
        expected = ", ".join(map(str, model.image_shape))
        hint = ""
        if images.dim() == 4 and tuple(images.shape[1:]) == (*model.image_shape[1:], model.image_shape[0]):
            hint = "; these look channels-last: pass images.permute(0, 3, 1, 2) (NumPy: transpose(0, 3, 1, 2))"
        raise ValueError(f"this model compresses images of shape (N, {expected}), got {tuple(images.shape)}{hint}")
    return images.cpu().contiguous()


class _InformationCounter:
    """Stands in for the coder and adds up the information content ``-log2(f / 2^p)`` of everything pushed."""

    def __init__(self, precision: int):
        self.precision = precision
        self.bits = 0.0

    def push_intervals(self, starts: np.ndarray, frequencies: np.ndarray) -> None:
        self.bits += float(np.sum(self.precision - np.log2(frequencies)))

    def push_uniform(self, values: np.ndarray, bits: int) -> None:
        self.bits += bits * len(values)


def table_code_length(images: Tensor | np.ndarray, model: IDF, *, allow_raw: bool = True) -> float:
    """Bits that :func:`compress` spends on ``images`` before the coder's final states and the header: the sum of
    ``-log2(f / 2^PRECISION)`` over every coded symbol of the quantised tables (escapes, the per-chunk CRCs and
    flags included). The file holds this plus about 4-8 bytes per rANS lane plus the 64-byte header."""
    counter = _InformationCounter(PRECISION)
    _encode(_as_images(images, model), model, counter, allow_raw)
    return counter.bits
