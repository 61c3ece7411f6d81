"""Classical lossless codecs measured on the same images as flowlib's IDF compressor: the baselines.

PNG and WebP come from Pillow, JPEG-XL and JPEG 2000 from imagecodecs (the ``book`` extra), gzip, bz2 and lzma
from Python's standard library. Each image codec compresses each image into its own file (the way one would store
them); the general-purpose compressors see the raw bytes of all images at once.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from collections.abc import Callable

import numpy as np
from torch import Tensor

from flowlib.extras import require

__all__ = ["classical_codec_sizes", "image_encoders"]


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
    Image = require("PIL.Image", "the PNG and WebP baselines")  # noqa: N806

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _webp(image: np.ndarray) -> bytes:
    Image = require("PIL.Image", "the PNG and WebP baselines")  # noqa: N806

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="WEBP", lossless=True, quality=100, method=6)
    return buffer.getvalue()
