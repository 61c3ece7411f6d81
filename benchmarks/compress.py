"""Benchmark flowlib's IDF compressor against classical lossless codecs on the same images, in the same run.

For a dataset's test images (default: all 10,000 MNIST test images) and its committed IDF checkpoint, every codec
encodes and decodes the same images; printed per codec: bits per dimension, encode and decode images/s (wall
clock, best of ``--repeats``), and flowlib's ratios against it (size: flowlib / codec; speed: flowlib / codec).
Every decode is checked bit for bit.

Codecs: flowlib's IDF + rANS (one file for all images; with its compiled loops, and with ``--numpy`` its NumPy
loops too), PNG (Pillow, ``optimize=True``) and WebP lossless (Pillow, ``method=6``) and JPEG-XL lossless
(imagecodecs, effort 7), one file per image, and lzma ``-9e`` on the raw bytes of all images at once.

Run (one thread of a shared machine): ``OMP_NUM_THREADS=1 python benchmarks/compress.py``; ``--threads 2`` lets
the IDF's network use two threads (the other codecs are single-threaded).
"""

from __future__ import annotations

import argparse
import io
import lzma
import time
from collections.abc import Callable

import numpy as np
import torch

from flowlib.coding import compiled
from flowlib.compress import compress, decompress, image_encoders, load_model
from flowlib.data import load_images

__all__ = ["main"]


def best_time(function: Callable, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def image_decoders() -> dict[str, Callable[[bytes], np.ndarray]]:
    from PIL import Image

    decoders = {
        "png": lambda data: np.asarray(Image.open(io.BytesIO(data))),
        "webp": lambda data: np.asarray(Image.open(io.BytesIO(data)).convert("L")),
    }
    try:
        import imagecodecs

        decoders["jpeg_xl"] = imagecodecs.jpegxl_decode
    except ImportError:
        pass
    return decoders


def run_idf(images: torch.Tensor, model, repeats: int, numba: bool) -> dict:
    with compiled.use_numba(numba):
        compress(images[:64], model)  # compile the loops (Numba caches them on disk) and warm the caches
        encode_seconds, data = best_time(lambda: compress(images, model), repeats)
        decode_seconds, decoded = best_time(lambda: decompress(data, model), repeats)
    if not torch.equal(decoded, images):
        raise AssertionError("flowlib's round trip is not bit-exact")
    return dict(bytes=len(data), encode=encode_seconds, decode=decode_seconds)


def run_image_codec(name: str, images: np.ndarray, repeats: int) -> dict:
    encode, decode = image_encoders()[name], image_decoders()[name]
    encode_seconds, files = best_time(lambda: [encode(image) for image in images], repeats)
    decode_seconds, decoded = best_time(lambda: [decode(data) for data in files], repeats)
    if not all(np.array_equal(np.squeeze(a), b) for a, b in zip(decoded, images)):
        raise AssertionError(f"{name} round trip is not bit-exact")
    return dict(bytes=sum(len(data) for data in files), encode=encode_seconds, decode=decode_seconds)


def run_lzma(images: np.ndarray, repeats: int) -> dict:
    raw = images.tobytes()
    encode_seconds, data = best_time(lambda: lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME), repeats)
    decode_seconds, decoded = best_time(lambda: lzma.decompress(data), repeats)
    if decoded != raw:
        raise AssertionError("lzma round trip is not bit-exact")
    return dict(bytes=len(data), encode=encode_seconds, decode=decode_seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    parser.add_argument("--images", type=int, default=10_000, help="test images (the first ones)")
    parser.add_argument("--model", default=None, help="checkpoint (default: 07_idf-<dataset>-standard)")
    parser.add_argument("--threads", type=int, default=1, help="threads for the IDF's network")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many timings")
    parser.add_argument("--numpy", action="store_true", help="also time flowlib's NumPy loops (no Numba)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images, _ = load_images(args.dataset, "test", subset=None if args.images >= 10_000 else args.images)
    model = load_model(args.model or f"07_idf-{args.dataset}-standard")
    pixels = images[:, 0].numpy()  # (N, H, W) for the image codecs
    num_dims = images.numel()

    results = {}
    if compiled.available():
        results["flowlib IDF + rANS (compiled)"] = run_idf(images, model, args.repeats, True)
    if args.numpy or not compiled.available():
        results["flowlib IDF + rANS (NumPy)"] = run_idf(images, model, args.repeats, False)
    reference = next(iter(results.values()))
    names = {"png": "PNG (Pillow, optimize)", "webp": "WebP lossless (method 6)", "jpeg_xl": "JPEG-XL lossless (e7)"}
    for key, label in names.items():
        if key in image_encoders() and key in image_decoders():
            results[label] = run_image_codec(key, pixels, args.repeats)
    results["lzma -9e (raw bytes)"] = run_lzma(pixels, args.repeats)

    count = len(images)
    print(
        f"{args.dataset} test set, {count} images {tuple(images.shape[1:])}, model {args.model or 'standard'}, "
        f"{torch.get_num_threads()} thread(s) for the IDF network, wall clock, best of {args.repeats}"
    )
    header = (
        f"{'codec':<32}{'bits/dim':>9}{'encode img/s':>14}{'decode img/s':>14}"
        f"{'IDF size x':>12}{'IDF enc x':>11}{'IDF dec x':>11}"
    )
    print(header)
    print("-" * len(header))
    for name, result in results.items():
        print(
            f"{name:<32}{8 * result['bytes'] / num_dims:>9.4f}{count / result['encode']:>14,.0f}"
            f"{count / result['decode']:>14,.0f}{reference['bytes'] / result['bytes']:>12.3f}"
            f"{result['encode'] / reference['encode']:>11.2f}{result['decode'] / reference['decode']:>11.2f}"
        )
    print(
        f"flowlib: encode {reference['encode']:.2f} s, decode {reference['decode']:.2f} s for {count} images "
        f"({count / reference['encode']:,.0f} / {count / reference['decode']:,.0f} images/s); "
        "IDF size x < 1: the IDF file is smaller; IDF enc/dec x > 1: flowlib is faster"
    )


if __name__ == "__main__":
    main()
