"""Lossless image compression with an Integer Discrete Flow and rANS: files on disk, and a command line.

How a file is made (:func:`compress`), for images ``x`` of one shape:

1. The IDF maps each image to integer latents ``z_1, ..., z_L`` on its exact coding path
   (:meth:`flowlib.models.idf.IDF.forward_integer`); each ``z_l`` has a prior whose parameters are multiples of
   ``2^-12`` computed in exact arithmetic, so the decoder can rebuild the very same tables.
2. Every latent value is pushed onto ONE vectorised rANS stack (:class:`flowlib.coding.VectorRANS`, precision 24)
   for all images together. rANS is last-in-first-out, and the decoder must decode ``z_L`` first (its prior is
   unconditional), then ``z_{L-1}`` given ``y_{L-1}`` recomputed from ``z_L``, and so on; so the encoder pushes
   ``z_1`` first and ``z_L`` last, image chunk after image chunk, and the decoder walks everything backwards.
3. A table covers a window of ``K`` integers around each value's distribution (``+-16`` scales; the window width
   comes from the quantized scale, so the decoder knows it); the rare value outside its window is escaped
   (:func:`flowlib.coding.push_with_escape`). Windows keep the tables small: most latents are nearly certain. A
   mixture's window spans its components of non-negligible weight; tables are built in batches of at most
   :data:`TABLE_ENTRIES` entries, so memory stays bounded however wide the windows are.
4. A CRC-32 of the pixels goes in first (so it is decoded last and checked), and the stream is wrapped in the
   flowlib container (:func:`flowlib.coding.pack`) with the model's fingerprint (:func:`model_fingerprint`).

Decoding a file made by another model, a truncated, corrupted or foreign file raises an error
(:class:`flowlib.coding.ContainerError` or :class:`flowlib.coding.CorruptStreamError`); wrong pixels are never
returned silently (the container's checksum, the coder's end state and the pixel CRC all have to agree).

Command line (``--model`` names a committed checkpoint)::

    python -m flowlib.compress encode digits/ more.png batch.npy --model 07_idf-mnist-standard --output x.flz
    python -m flowlib.compress decode x.flz --model 07_idf-mnist-standard --output decoded/      # PNG files
    python -m flowlib.compress decode x.flz --model 07_idf-mnist-standard --output decoded.npy   # (N, C, H, W)

:func:`classical_codec_sizes` measures PNG, WebP, JPEG-XL, JPEG 2000, gzip, bz2 and lzma on the same images.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import io
import lzma
import math
import sys
import types
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowlib.coding import (
    CorruptStreamError,
    VectorRANS,
    discretized_logistic_cdf_table,
    discretized_logistic_mixture_cdf_table,
    pack,
    pop_with_escape,
    push_with_escape,
    unpack,
)
from flowlib.distributions.discretized import DiscretizedLogistic, DiscretizedLogisticMixture
from flowlib.extras import require
from flowlib.models.idf import IDF, PIXEL_OFFSET

__all__ = [
    "CODING_SCHEME",
    "PRECISION",
    "classical_codec_sizes",
    "compress",
    "image_encoders",
    "decompress",
    "load_model",
    "main",
    "model_fingerprint",
    "num_lanes_for",
    "table_code_length",
]

CODING_SCHEME = b"flowlib-idf-rans-v1"  # part of the fingerprint: files of another scheme are refused
PRECISION = 24  # table precision in bits (IDF used 24): ~2e-5 bits per symbol above the model's code length
MAX_LANES = 64  # interleaved rANS states; each costs ~4-8 bytes at the end of the stream
TAIL_SCALES = 16.0  # a window reaches this many logistic scales from the mean (mass beyond ~2e-7)
HALF_WIDTHS = tuple(2**k for k in range(2, 15))  # window half-widths W = 4 .. 16384: tables of K = 2W + 1 values
CHUNK_IMAGES = 256  # images per network call
TABLE_ENTRIES = 1 << 22  # tables are built and coded in batches of at most this many entries (16 MiB of uint32)
MIN_TOP_WEIGHT = 1e-7  # top-prior components below this weight do not widen a window (their values are escaped)
MIN_FACTOR_WEIGHT = 1e-2  # the same for the factor-out mixtures (tables built per value: speed matters; their
# broad low-weight components would widen most windows to ~1000 values; escaping their rare values costs little)


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
# Windows and tables: which integers each latent's table covers
# --------------------------------------------------------------------------------------------------------------


def _bucket(required_half_width: np.ndarray) -> np.ndarray:
    """Index into :data:`HALF_WIDTHS` of the smallest window at least ``required_half_width`` (capped at the last)."""
    index = np.searchsorted(np.asarray(HALF_WIDTHS, dtype=np.float64), required_half_width, side="left")
    return np.minimum(index, len(HALF_WIDTHS) - 1)


def _logistic_plan(distribution: DiscretizedLogistic) -> tuple[np.ndarray, np.ndarray, Callable]:
    """Per element: window offset (the value of table symbol 0), bucket, and a table builder for a selection."""
    mean = distribution.mean.reshape(-1).double().cpu().numpy()
    log_scale = distribution.log_scale.reshape(-1).double().cpu().numpy()
    centre = np.rint(mean)
    bucket = _bucket(TAIL_SCALES * np.exp(log_scale))
    half_width = np.asarray(HALF_WIDTHS, dtype=np.int64)[bucket]
    offset = centre.astype(np.int64) - half_width

    def tables(selection: np.ndarray, size: int) -> np.ndarray:
        shifted = mean[selection] - offset[selection]  # the mean relative to the window's first value
        return discretized_logistic_cdf_table(shifted, log_scale[selection], 0, size - 1, PRECISION)

    return offset, bucket, tables


def _mixture_parameters(distribution: DiscretizedLogisticMixture) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means, log-scales and weight logits of a mixture as float64 arrays ``(N, M)``."""
    components = distribution.num_components
    return tuple(
        value.reshape(-1, components).double().cpu().numpy()
        for value in (distribution.means, distribution.log_scales, distribution.logit_weights)
    )


def _mixture_windows(
    means: np.ndarray, log_scales: np.ndarray, logits: np.ndarray, min_weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per mixture ``(N, M)``: window offset, bucket and size covering every component of weight ``w >= min_weight``
    to ``TAIL_SCALES + log(w)`` of its scales (so each component leaves at most ``e^-TAIL_SCALES`` of mass outside).
    Components of smaller weight do not widen the window; their rare far values are escaped."""
    log_weights = logits - logits.max(axis=1, keepdims=True)
    log_weights = log_weights - np.log(np.exp(log_weights).sum(axis=1, keepdims=True))
    reach = np.maximum(TAIL_SCALES + log_weights, 0.0) * np.exp(log_scales)
    active = log_weights > math.log(min_weight)
    low = np.floor(np.where(active, means - reach, np.inf).min(axis=1))
    high = np.ceil(np.where(active, means + reach, -np.inf).max(axis=1))
    bucket = _bucket((high - low) / 2)
    size = 2 * np.asarray(HALF_WIDTHS, dtype=np.int64)[bucket] + 1
    offset = (np.floor((low + high) / 2) - size // 2).astype(np.int64)
    return offset, bucket, size


def _mixture_plan(distribution: DiscretizedLogisticMixture, num_images: int) -> tuple[np.ndarray, np.ndarray, Callable]:
    """Like :func:`_logistic_plan` for the top prior: one window per dimension, shared by all images."""
    means, log_scales, logits = _mixture_parameters(distribution)
    offset, bucket, size = _mixture_windows(means, log_scales, logits, MIN_TOP_WEIGHT)
    per_dim = {}
    for index in np.unique(bucket):  # one table per dimension, built once
        dims = np.flatnonzero(bucket == index)
        shifted = means[dims] - offset[dims, None]
        per_dim[index] = (dims, discretized_logistic_mixture_cdf_table(
            shifted, log_scales[dims], logits[dims], 0, int(size[dims[0]]) - 1, PRECISION
        ))
    row_of_dim = np.empty(len(means), dtype=np.int64)
    for dims, _ in per_dim.values():
        row_of_dim[dims] = np.arange(len(dims))
    num_dims = len(means)

    def tables(selection: np.ndarray, size: int) -> np.ndarray:
        dims = selection % num_dims
        return per_dim[bucket[dims[0]]][1][row_of_dim[dims]]

    return np.tile(offset, num_images), np.tile(bucket, num_images), tables


def _conditional_mixture_plan(distribution: DiscretizedLogisticMixture) -> tuple[np.ndarray, np.ndarray, Callable]:
    """Like :func:`_logistic_plan` for a factor-out mixture (Eq. 5b of the IDF module): one mixture per value."""
    means, log_scales, logits = _mixture_parameters(distribution)
    offset, bucket, _ = _mixture_windows(means, log_scales, logits, MIN_FACTOR_WEIGHT)

    def tables(selection: np.ndarray, size: int) -> np.ndarray:
        shifted = means[selection] - offset[selection, None]  # the means relative to the window's first value
        return discretized_logistic_mixture_cdf_table(
            shifted, log_scales[selection], logits[selection], 0, size - 1, PRECISION
        )

    return offset, bucket, tables


def _plan(distribution, num_images: int, shared: bool):
    """Window offsets, buckets and a table builder for one level; ``shared``: one distribution for all images."""
    if isinstance(distribution, DiscretizedLogisticMixture):
        return _mixture_plan(distribution, num_images) if shared else _conditional_mixture_plan(distribution)
    return _logistic_plan(distribution)


def _batches(selection: np.ndarray, size: int) -> list[np.ndarray]:
    """``selection`` split into consecutive batches whose tables hold at most :data:`TABLE_ENTRIES` entries."""
    step = max(1, TABLE_ENTRIES // (size + 2))
    return [selection[first : first + step] for first in range(0, len(selection), step)]


def _push_level(coder: VectorRANS, values: Tensor, distribution, num_images: int, shared: bool) -> None:
    """Push the latents ``values`` (B, ...) of one level, bucket by bucket and batch by batch (popped in reverse)."""
    values = values.reshape(-1).cpu().numpy()
    offset, bucket, tables = _plan(distribution, num_images, shared)
    for index in range(len(HALF_WIDTHS)):
        size = 2 * HALF_WIDTHS[index] + 1
        for batch in _batches(np.flatnonzero(bucket == index), size):
            push_with_escape(coder, values[batch] - offset[batch], tables(batch, size), 0, size - 1)


def _pop_level(coder: VectorRANS, distribution, num_images: int, num_values: int, shared: bool) -> np.ndarray:
    """Pop the ``num_values`` latents of one level pushed by :func:`_push_level` with the same distribution."""
    offset, bucket, tables = _plan(distribution, num_images, shared)
    values = np.empty(num_values, dtype=np.int64)
    for index in reversed(range(len(HALF_WIDTHS))):
        size = 2 * HALF_WIDTHS[index] + 1
        for batch in reversed(_batches(np.flatnonzero(bucket == index), size)):
            values[batch] = pop_with_escape(coder, tables(batch, size), 0, size - 1) + offset[batch]
    return values


# --------------------------------------------------------------------------------------------------------------
# compress / decompress
# --------------------------------------------------------------------------------------------------------------


def _as_images(images: Tensor | np.ndarray, model: IDF) -> Tensor:
    images = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images)
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 pixels in 0..255, got dtype {images.dtype}; convert them first")
    if images.dim() == 3 and model.image_shape[0] == 1:
        images = images.unsqueeze(1)  # (N, H, W) greyscale
    if images.dim() != 4 or tuple(images.shape[1:]) != model.image_shape:
        expected = ", ".join(map(str, model.image_shape))
        raise ValueError(f"this model compresses images of shape (N, {expected}), got {tuple(images.shape)}")
    return images.cpu().contiguous()


def _pixel_checksum(images: Tensor) -> int:
    return zlib.crc32(images.numpy().tobytes())


def compress(images: Tensor | np.ndarray, model: IDF) -> bytes:
    """A flowlib file holding ``images`` (``uint8``, ``(N, C, H, W)`` or greyscale ``(N, H, W)``), coded with ``model``.

    All images share one rANS stream; the network runs on chunks of :data:`CHUNK_IMAGES` images.
    """
    images = _as_images(images, model)
    model = model.cpu().eval()
    coder = VectorRANS(num_lanes_for(len(images)), PRECISION)
    _encode(images, model, coder)
    fingerprint = model_fingerprint(model)
    return pack(coder.to_bytes(), shape=model.image_shape, count=len(images), model_fingerprint=fingerprint)


def _encode(images: Tensor, model: IDF, coder) -> None:
    """Push ``images`` onto ``coder``: the pixel CRC first, then chunk after chunk ``z_1, ..., z_L``."""
    checksum = _pixel_checksum(images)
    coder.push_uniform(np.array([checksum >> 16, checksum & 0xFFFF]), 16)  # decoded last, then checked
    for first in range(0, len(images), CHUNK_IMAGES):
        chunk = images[first : first + CHUNK_IMAGES]
        latents, contexts = model.forward_integer(chunk, return_contexts=True)
        for index, (latent, context) in enumerate(zip(latents, contexts)):  # z_1 first: it is decoded last
            _push_level(coder, latent, model.prior(index, context), len(chunk), model.levels[index].last)


class _InformationCounter:
    """Stands in for the coder and adds up the information content ``-log2(f / 2^p)`` of everything pushed."""

    def __init__(self, precision: int):
        self.precision = precision
        self.bits = 0.0

    def push(self, symbols: np.ndarray, cdf: np.ndarray) -> None:
        rows = np.arange(len(symbols))
        frequencies = cdf[rows, symbols + 1].astype(np.int64) - cdf[rows, symbols].astype(np.int64)
        self.bits += float(np.sum(self.precision - np.log2(frequencies)))

    def push_uniform(self, values: np.ndarray, bits: int) -> None:
        self.bits += bits * len(values)


def table_code_length(images: Tensor | np.ndarray, model: IDF) -> float:
    """Bits that :func:`compress` spends on ``images`` before the coder's final states and the header: the sum of
    ``-log2(f / 2^PRECISION)`` over every coded symbol of the quantised tables (escapes and the CRC included).
    The file holds this plus about 4-8 bytes per rANS lane plus the 64-byte header."""
    images = _as_images(images, model)
    counter = _InformationCounter(PRECISION)
    _encode(images, model.cpu().eval(), counter)
    return counter.bits


def decompress(data: bytes, model: IDF) -> Tensor:
    """The ``uint8`` images ``(N, C, H, W)`` stored in ``data`` by :func:`compress` with the same ``model``.

    Raises :class:`flowlib.coding.ContainerError` (not a flowlib file, truncated, checksum or model mismatch) or
    :class:`flowlib.coding.CorruptStreamError` (the stream does not decode to the images that were stored).
    """
    model = model.cpu().eval()
    container = unpack(data, expected_fingerprint=model_fingerprint(model))
    if tuple(container.shape) != model.image_shape:
        raise CorruptStreamError(
            f"the file holds images of shape {container.shape}, the model codes {model.image_shape}"
        )
    coder = VectorRANS.from_bytes(container.payload, num_lanes_for(container.count), PRECISION)
    chunks = []
    firsts = list(range(0, container.count, CHUNK_IMAGES))
    for first in reversed(firsts):
        size = min(CHUNK_IMAGES, container.count - first)
        y = None
        for index in reversed(range(len(model.levels))):
            shape = (size, *model.levels[index].latent_shape)
            distribution = model.prior(index, y)
            values = _pop_level(coder, distribution, size, math.prod(shape), model.levels[index].last)
            y = model.inverse_latent_level(index, y, torch.from_numpy(values).view(shape))
        pixels = y + PIXEL_OFFSET
        if pixels.min() < 0 or pixels.max() > 255:
            raise CorruptStreamError("the stream decodes to values outside 0..255: it is corrupt")
        chunks.append(pixels.to(torch.uint8))
    images = torch.cat(chunks[::-1]) if chunks else torch.empty((0, *model.image_shape), dtype=torch.uint8)
    high, low = coder.pop_uniform(2, 16)
    coder.check_finished()
    if (int(high) << 16 | int(low)) != _pixel_checksum(images):
        raise CorruptStreamError("the decoded images fail their checksum: the file is corrupt or the model differs")
    return images


# --------------------------------------------------------------------------------------------------------------
# Classical codecs, measured on the same images
# --------------------------------------------------------------------------------------------------------------


def classical_codec_sizes(images: Tensor | np.ndarray) -> dict[str, int | None]:
    """Bytes used by classical lossless codecs on ``images`` (``uint8`` ``(N, C, H, W)`` or ``(N, H, W)``).

    Image codecs compress each image into its own file (sizes summed): PNG (Pillow, ``optimize=True``), WebP
    lossless (Pillow, ``method=6``), JPEG-XL lossless (imagecodecs, effort 7) and JPEG 2000 lossless (imagecodecs,
    reversible wavelet, raw J2K codestream). General-purpose compressors see the raw bytes of all images at once:
    gzip -9, bz2 -9, lzma -9e. A codec that is not installed gives ``None``.

    Example:
        >>> import numpy as np
        >>> sizes = classical_codec_sizes(np.zeros((2, 8, 8), dtype=np.uint8))
        >>> sorted(sizes), sizes["gzip"] < 128
        (['bz2', 'gzip', 'jpeg_2000', 'jpeg_xl', 'lzma', 'png', 'webp'], True)
    """
    array = np.asarray(images.cpu() if isinstance(images, Tensor) else images)
    if array.dtype != np.uint8 or array.ndim not in (3, 4):
        raise ValueError(f"images must be uint8 of shape (N, C, H, W) or (N, H, W), got {array.dtype} {array.shape}")
    if array.ndim == 4:
        if array.shape[1] not in (1, 3):
            raise ValueError(f"image codecs need 1 or 3 channels, got {array.shape[1]}")
        array = array[:, 0] if array.shape[1] == 1 else array.transpose(0, 2, 3, 1)  # (N, H, W[, 3])
    array = np.ascontiguousarray(array)
    raw = array.tobytes()
    sizes: dict[str, int | None] = {name: None for name in ("png", "webp", "jpeg_xl", "jpeg_2000")}
    for name, encode in image_encoders().items():
        sizes[name] = sum(len(encode(image)) for image in array)
    sizes["gzip"] = len(gzip.compress(raw, compresslevel=9, mtime=0))
    sizes["bz2"] = len(bz2.compress(raw, compresslevel=9))
    sizes["lzma"] = len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))
    return sizes


def image_encoders() -> dict[str, Callable[[np.ndarray], bytes]]:
    """The per-image lossless encoders available here, by name: ``(H, W)`` or ``(H, W, 3)`` uint8 -> bytes."""
    encoders: dict[str, Callable[[np.ndarray], bytes]] = {"png": _png, "webp": _webp}
    try:
        import imagecodecs
    except ImportError:
        return encoders
    if imagecodecs.JPEGXL.available:
        encoders["jpeg_xl"] = lambda image: imagecodecs.jpegxl_encode(image, lossless=True, effort=7)
    if imagecodecs.JPEG2K.available:
        encoders["jpeg_2000"] = lambda image: imagecodecs.jpeg2k_encode(
            image, level=0, reversible=True, codecformat="J2K"
        )
    return encoders


def _png(image: np.ndarray) -> bytes:
    Image = require("PIL.Image", "the compressor's PNG/WebP input and output")  # noqa: N806

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _webp(image: np.ndarray) -> bytes:
    Image = require("PIL.Image", "the compressor's PNG/WebP input and output")  # noqa: N806

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="WEBP", lossless=True, quality=100, method=6)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def _read_png(path: Path) -> np.ndarray:
    Image = require("PIL.Image", "the compressor's PNG/WebP input and output")  # noqa: N806

    with Image.open(path) as image:
        if image.mode not in ("L", "RGB"):
            raise ValueError(f"{path}: PNG mode {image.mode!r} is not supported; save it as 8-bit greyscale (L) or RGB")
        array = np.asarray(image)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # (C, H, W)


def _read_inputs(paths: Sequence[str]) -> np.ndarray:
    """Images ``(N, C, H, W)`` uint8 from PNG files, folders of PNGs (sorted by name) and ``.npy`` arrays."""
    images: list[np.ndarray] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files = sorted(path.glob("*.png"))
            if not files:
                raise FileNotFoundError(f"{path} holds no .png files")
            images.extend(_read_png(file) for file in files)
        elif path.suffix.lower() == ".png":
            images.append(_read_png(path))
        elif path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
            if array.dtype != np.uint8:
                raise ValueError(f"{path}: arrays must be uint8, got {array.dtype}")
            if array.ndim == 2:
                array = array[None, None]
            elif array.ndim == 3:
                array = array[:, None]
            elif array.ndim != 4:
                raise ValueError(f"{path}: expected (H, W), (N, H, W) or (N, C, H, W), got shape {array.shape}")
            images.extend(array)
        else:
            raise ValueError(f"{path}: give PNG files, folders of PNGs or .npy arrays")
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise ValueError(f"all images must have one shape, got {sorted(shapes)}")
    return np.stack(images)


def _write_outputs(images: Tensor, output: Path) -> None:
    array = images.numpy()
    if output.suffix.lower() == ".npy":
        np.save(output, array)
        return
    Image = require("PIL.Image", "the compressor's PNG/WebP input and output")  # noqa: N806

    output.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(array):
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        Image.fromarray(pixels).save(output / f"image_{index:06d}.png")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m flowlib.compress encode|decode ...`` (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m flowlib.compress", description="Lossless image compression with IDF + rANS."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    encode = commands.add_parser("encode", help="compress PNG files, folders of PNGs and .npy arrays into one file")
    encode.add_argument("inputs", nargs="+", help="PNG files, folders of PNGs, .npy uint8 arrays")
    decode = commands.add_parser("decode", help="decompress a file into a folder of PNGs or a .npy array")
    decode.add_argument("input", help="a file made by 'encode'")
    for command in (encode, decode):
        command.add_argument("--model", required=True, help="checkpoint name, e.g. 07_idf-mnist-standard")
        command.add_argument("--output", required=True, help="encode: the file to write; decode: a folder or a .npy")
        command.add_argument("--checkpoint-dir", default=None, help="folder of checkpoints (default: the repository's)")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model, args.checkpoint_dir)
        output = Path(args.output)
        if args.command == "encode":
            images = _read_inputs(args.inputs)
            data = compress(images, model)
            output.write_bytes(data)
            bits = 8 * len(data) / images.size
            print(f"{len(images)} images -> {output} ({len(data)} bytes, {bits:.4f} bits/dim)")
        else:
            images = decompress(Path(args.input).read_bytes(), model)
            _write_outputs(images, output)
            print(f"{args.input} -> {len(images)} images in {output}")
    except (OSError, ValueError, TypeError, RuntimeError) as error:  # ContainerError, CorruptStreamError, ...
        parser.exit(1, f"{parser.prog} {args.command}: error: {type(error).__name__}: {error}\n")


class _CallableModule(types.ModuleType):
    """``flowlib.compress`` is this module (so ``python -m flowlib.compress`` runs :func:`main`), and calling it,
    ``flowlib.compress(images, model)``, calls :func:`compress`."""

    def __call__(self, images: Tensor | np.ndarray, model: IDF) -> bytes:
        return compress(images, model)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    main()
