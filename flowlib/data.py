"""Datasets used by the book: MNIST, Fashion-MNIST (and CIFAR-10 for online readers), sklearn's 8x8 digits and 2-D
toy densities.

Images come back as ``uint8`` tensors of shape ``(N, C, H, W)`` exactly as stored; the model-facing forms are made
per batch by :func:`image_loader`:

* ``"uint8"``: integers in ``{0, ..., 255}`` (discrete models, the compressor);
* ``"dequantized"``: ``(x + u) / 256`` with fresh ``u ~ U[0, 1)`` every time a batch is drawn (continuous flows);
* ``"unit"``: ``x / 255`` in ``[0, 1]`` (auto-encoders).

Your own data goes through :func:`as_batches`, which turns a tensor, a ``(inputs, labels)`` pair of tensors, a
``Dataset`` or a ``DataLoader`` into re-iterable batches; :func:`batch_inputs` picks the model input out of a batch.

Images need the ``data`` extra (torchvision; scikit-learn for the 8x8 digits and two of the toy densities):
``pip install "flows-and-bottlenecks[data]"``.

Where the files live: ``$FLOWLIB_DATA_DIR`` if set, else ``~/.cache/flowlib/data``. The root uses torchvision's
layout (``MNIST/raw/...``, ``FashionMNIST/raw/...``); torchvision downloads the data there when the machine is
online and the files are missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from flowlib.extras import require

__all__ = [
    "DataCorruptError",
    "DataNotFoundError",
    "IMAGE_DATASETS",
    "TOY_DENSITIES",
    "TensorBatches",
    "as_batches",
    "batch_inputs",
    "data_root",
    "dequantize",
    "digits_8x8",
    "image_loader",
    "load_images",
    "toy_2d",
]

ImageForm = Literal["uint8", "dequantized", "unit"]
IMAGE_DATASETS = ("mnist", "fashion_mnist", "cifar10")
TOY_DENSITIES = ("moons", "circles", "eight_gaussians", "checkerboard", "two_spirals", "pinwheel")

_TORCHVISION = {"mnist": ("MNIST", "MNIST"), "fashion_mnist": ("FashionMNIST", "FashionMNIST"),
                "cifar10": ("CIFAR10", "cifar-10-batches-py")}


class DataNotFoundError(FileNotFoundError):
    """The dataset is not on disk and could not be downloaded; the message says where it was looked for."""


class DataCorruptError(ValueError):
    """The dataset's files are on disk but cannot be read (truncated or damaged); the message names the files."""


def data_root() -> Path:
    """The folder holding the datasets: ``$FLOWLIB_DATA_DIR``, else ``~/.cache/flowlib/data``."""
    configured = os.environ.get("FLOWLIB_DATA_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "flowlib" / "data"


def _dataset_files(name: str, train: bool) -> list[Path]:
    """The files torchvision reads for ``name``'s split (in its layout under :func:`data_root`)."""
    _, folder = _TORCHVISION[name]
    if name == "cifar10":
        batches = [f"data_batch_{index}" for index in range(1, 6)] if train else ["test_batch"]
        return [data_root() / folder / file for file in (*batches, "batches.meta")]
    prefix = "train" if train else "t10k"
    return [data_root() / folder / "raw" / f"{prefix}-{kind}-ubyte" for kind in ("images-idx3", "labels-idx1")]


def _torchvision_dataset(name: str, train: bool):
    torchvision = require("torchvision.datasets", f"load_images({name!r})")

    class_name, folder = _TORCHVISION[name]
    dataset_class = getattr(torchvision, class_name)
    root = data_root()
    files = _dataset_files(name, train)
    try:
        return dataset_class(root=str(root), train=train, download=True)
    except Exception as error:  # torchvision raises RuntimeError/URLError variants when offline
        if all(file.is_file() for file in files):
            raise DataCorruptError(
                f"{class_name} files are under {root} but could not be read: {', '.join(str(f) for f in files)}. "
                "One of them is truncated or damaged: delete it (it is downloaded again when online) or copy it "
                f"again from a good source. Original error: {error}"
            ) from error
        layout = f"{folder}/data_batch_1, ..." if name == "cifar10" else f"{folder}/raw/train-images-idx3-ubyte, ..."
        raise DataNotFoundError(
            f"could not find or download {class_name} under {root}. Set FLOWLIB_DATA_DIR to a folder in "
            f"torchvision's layout ({layout}) or connect to the internet. Original error: {error}"
        ) from error


def load_images(
    name: str,
    split: Literal["train", "test"] = "train",
    subset: int | None = None,
    seed: int = 0,
    form: ImageForm = "uint8",
) -> tuple[Tensor, Tensor]:
    """Load a whole image dataset into memory.

    Arguments:
        name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
        split: ``"train"`` or ``"test"``.
        subset: keep this many examples (a positive integer), drawn at random (reproducibly, from ``seed``)
            without replacement; ``None``, or a number at least the dataset's size, keeps all of them in their
            original order.
        form: ``"uint8"`` as stored, ``"dequantized"`` (one draw of noise, see :func:`dequantize`) or ``"unit"``.
    Returns:
        ``(images, labels)``: images of shape ``(N, C, H, W)`` in the requested form, ``int64`` labels ``(N,)``.
    Raises:
        ValueError: an unknown ``name``, ``split`` or ``form``, or a ``subset`` that is not a positive integer.
        DataNotFoundError: the files are missing and could not be downloaded.
        DataCorruptError: the files are there but damaged.
    """
    if form not in ("uint8", "dequantized", "unit"):
        raise ValueError(f"form must be 'uint8', 'dequantized' or 'unit', got {form!r}")
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(IMAGE_DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if subset is not None and (not isinstance(subset, (int, np.integer)) or isinstance(subset, bool) or subset < 1):
        raise ValueError(f"subset must be a positive number of images (or None for all of them), got {subset!r}")
    dataset = _torchvision_dataset(name, train=split == "train")
    images = torch.as_tensor(np.asarray(dataset.data))
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # CIFAR is stored NHWC
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    if subset is not None and subset < len(images):
        index = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:subset]
        images, labels = images[index], labels[index]
    return _convert(images.contiguous(), form), labels


def dequantize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantization: ``(x + u) / 256`` with ``u ~ U[0, 1)``, mapping ``uint8`` data into ``[0, 1)``.

    A continuous density on the result, times the bin volume ``256^-D``, lower-bounds the discrete probability of
    ``x`` (see :func:`flowlib.metrics.bits_per_dim`). Shapes are preserved.
    """
    noise = torch.rand(x.shape, generator=generator, device=x.device if generator is None else "cpu")
    x = x.float()
    # In float32, x + u rounds up to x + 1 for u within 2^-17 of 1: keep every value strictly inside its own bin.
    upper = torch.nextafter((x + 1.0) / 256.0, torch.zeros((), device=x.device))
    return torch.minimum((x + noise.to(x.device)) / 256.0, upper)


def _convert(images: Tensor, form: ImageForm) -> Tensor:
    """``uint8`` images in the requested form (see the module docstring)."""
    if form == "dequantized":
        return dequantize(images)
    if form == "unit":
        return images.float() / 255.0
    return images


def _collate(form: ImageForm):
    def collate(batch: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        images = torch.stack([item[0] for item in batch])
        labels = torch.stack([item[1] for item in batch])
        return _convert(images, form), labels

    return collate


def image_loader(
    name: str,
    split: Literal["train", "test"] = "train",
    batch_size: int = 64,
    *,
    subset: int | None = None,
    form: ImageForm = "dequantized",
    shuffle: bool | None = None,
    seed: int = 0,
    drop_last: bool = False,
    device: torch.device | str | None = None,
) -> DataLoader | TensorBatches:
    """A ``DataLoader`` of ``(images, labels)`` batches in the requested ``form`` (see the module docstring).

    ``shuffle`` defaults to True for the training split. Dequantization noise is drawn afresh for every batch.
    With a ``device``, the whole set is moved there once and batched there, conversion included: a
    :class:`TensorBatches`. Use it on GPUs, where a ``DataLoader`` collates every batch on the CPU and copies it
    over, which leaves a small model's GPU idle between steps; MNIST's 60,000 images take 47 MB (CIFAR-10's 150 MB).
    """
    if form not in ("uint8", "dequantized", "unit"):
        raise ValueError(f"form must be 'uint8', 'dequantized' or 'unit', got {form!r}")
    images, labels = load_images(name, split, subset=subset, seed=seed)  # uint8; converted per batch
    shuffle = split == "train" if shuffle is None else shuffle
    if device is not None:
        return TensorBatches((images.to(device), labels.to(device)), batch_size, shuffle=shuffle,
                             drop_last=drop_last, seed=seed, transform=lambda batch: _convert(batch, form))
    return DataLoader(
        TensorDataset(images, labels),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=_collate(form),
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
    )


def digits_8x8() -> tuple[Tensor, Tensor]:
    """scikit-learn's 1,797 handwritten 8x8 digits (no download needed): ``uint8`` ``(N, 1, 8, 8)`` with values
    rescaled from ``{0..16}`` to ``{0..255}``, and ``int64`` labels ``(N,)``."""
    digits = require("sklearn.datasets", "digits_8x8()").load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(digits.target).long()


def toy_2d(name: str, num_samples: int, seed: int = 0) -> Tensor:
    """Samples ``(num_samples, 2)`` from a 2-D toy density, scaled to lie roughly in ``[-4, 4]^2``.

    ``name`` is one of ``moons``, ``circles``, ``eight_gaussians``, ``checkerboard``, ``two_spirals``, ``pinwheel``.
    """
    if name not in TOY_DENSITIES:
        raise ValueError(f"unknown toy density {name!r}; choose one of {', '.join(TOY_DENSITIES)}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    rng = np.random.default_rng(seed)
    n = num_samples
    if name == "moons":
        make_moons = require("sklearn.datasets", "toy_2d('moons')").make_moons
        points = make_moons(n, noise=0.05, random_state=seed)[0] * 2.0 - np.array([1.0, 0.5])
    elif name == "circles":
        make_circles = require("sklearn.datasets", "toy_2d('circles')").make_circles
        points = make_circles(n, factor=0.5, noise=0.04, random_state=seed)[0] * 3.0
    elif name == "eight_gaussians":
        angles = 2 * np.pi * rng.integers(0, 8, n) / 8
        points = 2.5 * np.stack([np.cos(angles), np.sin(angles)], 1) + 0.25 * rng.standard_normal((n, 2))
    elif name == "checkerboard":  # a 4x4 board of unit squares, alternate squares filled, scaled by 2
        x1 = rng.uniform(-2, 2, n)
        x2 = rng.uniform(0, 1, n) - 2 * rng.integers(0, 2, n) + np.floor(x1) % 2
        points = 2.0 * np.stack([x1, x2], 1)
    elif name == "two_spirals":
        t = np.sqrt(rng.uniform(0, 1, n)) * 3 * np.pi
        sign = np.where(rng.uniform(size=n) < 0.5, 1.0, -1.0)[:, None]
        points = sign * np.stack([t * np.cos(t), t * np.sin(t)], 1) / 3.0 + 0.1 * rng.standard_normal((n, 2))
    else:  # pinwheel
        num_arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
        arm = rng.integers(0, num_arms, n)
        features = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std]) + np.array([1.0, 0.0])
        angles = 2 * np.pi * arm / num_arms + rate * np.exp(features[:, 0])
        rotations = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)], 1).reshape(n, 2, 2)
        points = 2.0 * np.einsum("ti,tij->tj", features, rotations)
    return torch.as_tensor(points, dtype=torch.float32)



# --- your own data -----------------------------------------------------------------------------------------------


class TensorBatches:
    """Re-iterable mini-batches of in-memory tensors, drawn by slicing (no per-example collation).

    Each pass yields ``tensors[0][index]`` alone when one tensor was given, else a tuple with every tensor indexed
    the same way. ``shuffle`` draws a fresh order every pass from a generator seeded with ``seed``, so two objects
    built alike yield the same batches. Made by :func:`as_batches`; ``len()`` is the number of batches per pass.
    Batches are drawn where the tensors are, so tensors on a GPU give batches on it without the host; ``transform``,
    if given, converts the first tensor's part of every batch there (e.g. :func:`dequantize`).

    Example:
        >>> batches = TensorBatches((torch.arange(5),), batch_size=2)
        >>> [batch.tolist() for batch in batches], len(batches)
        ([[0, 1], [2, 3], [4]], 3)
    """

    def __init__(
        self, tensors: Sequence[Tensor], batch_size: int, *, shuffle: bool = False, drop_last: bool = False,
        seed: int = 0, transform: Callable[[Tensor], Tensor] | None = None,
    ):
        self.tensors = tuple(tensors)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)
        self.transform = transform

    @property
    def num_examples(self) -> int:
        return len(self.tensors[0])

    def __len__(self) -> int:
        whole, remainder = divmod(self.num_examples, self.batch_size)
        return whole + (remainder > 0 and not self.drop_last)

    def __iter__(self) -> Iterator[Tensor | tuple[Tensor, ...]]:
        order = torch.randperm(self.num_examples, generator=self.generator) if self.shuffle else None
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            if order is None:
                parts = tuple(tensor[start : start + self.batch_size] for tensor in self.tensors)
            else:
                index = order[start : start + self.batch_size].to(self.tensors[0].device)
                parts = tuple(tensor[index] for tensor in self.tensors)
            if self.transform is not None:
                parts = (self.transform(parts[0]), *parts[1:])
            yield parts[0] if len(parts) == 1 else parts


def as_batches(
    data: Tensor | np.ndarray | tuple[Tensor, ...] | Dataset | DataLoader | Iterable,
    batch_size: int = 64,
    *,
    shuffle: bool = False,
    drop_last: bool = False,
    seed: int = 0,
) -> Iterable:
    """Turn your data into re-iterable mini-batches, the form every flowlib trainer takes.

    Arguments:
        data: a tensor or NumPy array of examples ``(N, ...)`` (batches are tensors ``(batch_size, ...)``); a
            tuple or list of tensors with the same first size, e.g. ``(images, labels)`` or ``(inputs, context)``
            (batches are tuples of tensors indexed alike); a ``torch.utils.data.Dataset``, map-style or iterable
            (batched by a ``DataLoader`` with the default collation, so a dataset of ``(image, label)`` pairs gives
            ``(images, labels)`` batches); or a ``DataLoader`` or any other re-iterable of batches, returned
            unchanged (``batch_size``, ``shuffle``, ``drop_last`` and ``seed`` are then the loader's own).
        batch_size: examples per batch (the last one may be smaller unless ``drop_last``).
        shuffle: draw a fresh random order every pass (reproducible from ``seed``).
    Returns:
        an iterable that can be looped over once per epoch; ``len()`` works except for iterable datasets.
    Raises:
        ValueError: ``batch_size`` below 1, no examples, or tensors of different lengths.
        TypeError: ``data`` is none of the above (a one-pass iterator, such as a generator, is refused too because a
            second epoch would silently see no data).

    Example:
        >>> images = torch.zeros(10, 1, 28, 28, dtype=torch.uint8)
        >>> [tuple(batch.shape) for batch in as_batches(images, batch_size=4)]
        [(4, 1, 28, 28), (4, 1, 28, 28), (2, 1, 28, 28)]
        >>> inputs, labels = next(iter(as_batches((images, torch.arange(10)), batch_size=3)))
        >>> labels.tolist()
        [0, 1, 2]
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if isinstance(data, Tensor):
        data = (data,)
    if isinstance(data, (tuple, list)) and data and all(isinstance(item, (Tensor, np.ndarray)) for item in data):
        tensors = [torch.as_tensor(item) for item in data]
        if any(tensor.dim() == 0 for tensor in tensors):
            raise ValueError("as_batches needs tensors of examples (N, ...), got a 0-dimensional tensor")
        lengths = {len(tensor) for tensor in tensors}
        if len(lengths) > 1:
            raise ValueError(f"as_batches got tensors of different lengths {sorted(lengths)}; they must pair up")
        if lengths == {0}:
            raise ValueError("as_batches got no examples (a tensor of length 0)")
        return TensorBatches(tensors, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Dataset):
        if hasattr(data, "__len__") and len(data) == 0:  # type: ignore[arg-type]
            raise ValueError("as_batches got an empty Dataset")
        iterable = isinstance(data, torch.utils.data.IterableDataset)
        return DataLoader(
            data, batch_size=batch_size, shuffle=False if iterable else shuffle, drop_last=drop_last,
            generator=torch.Generator().manual_seed(seed),
        )
    if isinstance(data, Iterable) and not isinstance(data, (Iterator, str, bytes, dict)):
        return data
    raise TypeError(
        f"as_batches takes a tensor, a NumPy array, a tuple of tensors, a Dataset or a DataLoader, got "
        f"{type(data).__name__}" + (" (a one-pass iterator: wrap the data in a list or a DataLoader so that every "
                                    "epoch sees it)" if isinstance(data, Iterator) else "")
    )


def batch_inputs(batch: Any) -> Tensor:
    """The model input of a batch: the batch itself if it is a tensor, else its first element (``(x, label)``).

    Example:
        >>> batch_inputs(torch.ones(2)).tolist(), batch_inputs((torch.zeros(2), torch.ones(2))).tolist()
        ([1.0, 1.0], [0.0, 0.0])
    """
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    if isinstance(batch, dict):
        raise TypeError("batch_inputs cannot pick the input out of a dict batch; yield (inputs, ...) tuples instead")
    raise TypeError(f"a batch must be a tensor or a tuple/list starting with a tensor, got {type(batch).__name__}")
