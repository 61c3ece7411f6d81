"""The command line: ``python -m flowlib.compress encode|decode ...`` (or ``flowlib-compress``).

::

    python -m flowlib.compress encode digits/ more.png batch.npy --model 07_idf-mnist-standard --output x.flz
    python -m flowlib.compress decode x.flz --model 07_idf-mnist-standard --output decoded/      # PNG files
    python -m flowlib.compress decode x.flz --model 07_idf-mnist-standard --output decoded.npy   # (N, C, H, W)

Inputs are PNG files (8-bit greyscale or RGB), ``.npy`` arrays of ``uint8`` (``(H, W)``, ``(N, H, W)`` or
``(N, C, H, W)``) and folders of them (read in name order). The command never destroys data: it refuses an output
that is one of its inputs, refuses to replace an existing file unless given ``--force``, writes through a
temporary file that is renamed into place only when complete, and decodes into a new or empty folder only. A
compressed file is read by its header: exactly the bytes it announces, nothing more. Errors print one line that
says what is wrong and exit with status 1.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from torch import Tensor

from flowlib.coding import HEADER_SIZE, TruncatedFileError
from flowlib.coding.container import file_length
from flowlib.compress.codec import compress, decompress, load_model
from flowlib.extras import require

__all__ = ["main", "read_compressed", "read_images"]

IMAGE_SUFFIXES = (".png", ".npy")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``)."""
    invoked_as = Path(sys.argv[0]).name
    prog = "flowlib-compress" if invoked_as.startswith("flowlib-compress") else "python -m flowlib.compress"
    parser = argparse.ArgumentParser(prog=prog, description="Lossless image compression with IDF + rANS.")
    commands = parser.add_subparsers(dest="command", required=True)
    encode = commands.add_parser("encode", help="compress PNG files, .npy arrays and folders of them into one file")
    encode.add_argument("inputs", nargs="+", help="PNG files, .npy uint8 arrays, folders of them")
    decode = commands.add_parser("decode", help="decompress a file into a new folder of PNGs or a .npy array")
    decode.add_argument("input", help="a file made by 'encode'")
    for command in (encode, decode):
        command.add_argument("--model", required=True, help="checkpoint name, e.g. 07_idf-mnist-standard")
        command.add_argument("--output", required=True, help="encode: the file to write; decode: a folder or a .npy")
        command.add_argument("--checkpoint-dir", default=None, help="checkpoint folder (default: found/downloaded)")
        command.add_argument("--force", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    try:
        output = Path(args.output)
        inputs = [Path(name) for name in (args.inputs if args.command == "encode" else [args.input])]
        _check_output(output, inputs, args.force, folder=args.command == "decode" and output.suffix.lower() != ".npy")
        model = load_model(args.model, args.checkpoint_dir)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if args.command == "encode":
                images = read_images(inputs)
                data = compress(images, model)
                _write_file(output, lambda file: file.write(data))
                bits = 8 * len(data) / max(1, images.size)
                print(f"{len(images)} images -> {output} ({len(data)} bytes, {bits:.4f} bits/dim)")
            else:
                images = decompress(read_compressed(inputs[0]), model)
                _write_images(images, output)
                print(f"{inputs[0]} -> {len(images)} images in {output}")
        for warning in caught:
            print(f"{parser.prog} {args.command}: warning: {warning.message}", file=sys.stderr)
    except (OSError, ValueError, TypeError, RuntimeError, pickle.UnpicklingError) as error:
        # ContainerError, CorruptStreamError, ExactArithmeticError are ValueErrors; CheckpointError a RuntimeError
        parser.exit(1, f"{parser.prog} {args.command}: error: {type(error).__name__}: {error}\n")


# --------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------


def read_compressed(path: Path) -> bytes:
    """The flowlib file at ``path``, read by its header: the header, then exactly the bytes it announces (so a
    huge or endless input costs nothing beyond them). Raises a ContainerError if the file is shorter or longer."""
    with open(path, "rb") as file:
        header = file.read(HEADER_SIZE)
        length = file_length(header)
        if path.is_file() and path.stat().st_size < length:
            raise TruncatedFileError(
                f"{path} is {path.stat().st_size} bytes but its header announces {length}: it was truncated; copy or "
                "download it again"
            )
        data = header + file.read(length - HEADER_SIZE)
        if len(data) < length:
            raise TruncatedFileError(f"{path} ends after {len(data)} of the {length} bytes its header announces")
        if file.read(1):
            raise ValueError(f"{path} holds more than the {length} bytes its header announces; pass one flowlib file")
    return data


def read_images(paths: Sequence[Path]) -> np.ndarray:
    """Images ``(N, C, H, W)`` uint8 from PNG files, ``.npy`` arrays and folders of them (in name order)."""
    images: list[np.ndarray] = []
    for path in paths:
        if path.is_dir():
            files = sorted(entry for entry in path.iterdir() if not entry.name.startswith("."))
            others = [entry.name for entry in files if entry.suffix.lower() not in IMAGE_SUFFIXES or entry.is_dir()]
            if others:
                raise ValueError(
                    f"{path} holds entries that are neither .png nor .npy files ({', '.join(others[:3])}"
                    f"{', ...' if len(others) > 3 else ''}); move them out or name the images one by one"
                )
            if not files:
                raise FileNotFoundError(f"{path} holds no .png or .npy files")
            for file in files:
                images.extend(_read_file(file))
        else:
            images.extend(_read_file(path))
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise ValueError(f"all images must have one shape, got {sorted(shapes)}")
    return np.stack(images) if images else np.zeros((0, 1, 1, 1), dtype=np.uint8)


def _read_file(path: Path) -> list[np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file (a device, pipe or socket); give PNG files or .npy arrays")
    suffix = path.suffix.lower()
    if suffix == ".png":
        return [_read_png(path)]
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        if array.dtype != np.uint8:
            raise ValueError(f"{path}: arrays must be uint8, got {array.dtype}")
        if array.ndim == 2:
            array = array[None, None]
        elif array.ndim == 3:
            array = array[:, None]
        elif array.ndim != 4:
            raise ValueError(f"{path}: expected (H, W), (N, H, W) or (N, C, H, W), got shape {array.shape}")
        return list(array)
    raise ValueError(f"{path}: give PNG files, .npy arrays or folders of them")


def _read_png(path: Path) -> np.ndarray:
    Image = require("PIL.Image", "the compressor's PNG input and output")  # noqa: N806

    with Image.open(path) as image:
        if image.mode not in ("L", "RGB"):
            raise ValueError(f"{path}: PNG mode {image.mode!r} is not supported; save it as 8-bit greyscale (L) or RGB")
        array = np.asarray(image)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # (C, H, W)


# --------------------------------------------------------------------------------------------------------------
# Writing, without destroying anything
# --------------------------------------------------------------------------------------------------------------


def _check_output(output: Path, inputs: Sequence[Path], force: bool, folder: bool) -> None:
    """Refuse an output that is one of the inputs (or a folder holding one), an existing file without ``force``,
    and a folder that is not empty."""
    for path in inputs:
        same = output.resolve() == path.resolve() or (path.exists() and output.exists() and output.samefile(path))
        if same:
            raise ValueError(f"the output {output} is one of the inputs; choose another output")
        if output.is_dir() and path.resolve().is_relative_to(output.resolve()):
            raise ValueError(f"the output folder {output} holds the input {path}; choose another output")
    if folder:
        if output.exists() and (not output.is_dir() or any(output.iterdir())):
            raise FileExistsError(
                f"{output} exists and is not an empty folder; decode into a new or empty folder (or a .npy file)"
            )
    elif output.exists():
        if output.is_dir():
            raise IsADirectoryError(f"{output} is a folder; give a file name")
        if not force:
            raise FileExistsError(f"{output} exists; pass --force to replace it")


def _write_file(output: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temporary file beside ``output``, then rename it into place (atomic on one file system):
    ``output`` is either untouched or complete."""
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_images(images: Tensor, output: Path) -> None:
    """``images`` as one ``.npy`` file, or as PNG files ``image_000000.png, ...`` in a new folder ``output``
    (written in a temporary folder beside it, then renamed)."""
    array = images.numpy()
    if output.suffix.lower() == ".npy":
        _write_file(output, lambda file: np.save(file, array))
        return
    Image = require("PIL.Image", "the compressor's PNG input and output")  # noqa: N806

    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp"))
    try:
        for index, image in enumerate(array):
            pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
            Image.fromarray(pixels).save(temporary / f"image_{index:06d}.png")
        if output.exists():
            output.rmdir()  # empty (checked before decoding); fails, keeping everything, if something appeared since
        os.replace(temporary, output)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
