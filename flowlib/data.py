"""Datasets used by the book: MNIST, Fashion-MNIST (and CIFAR-10 for online readers), sklearn's 8x8 digits and 2-D
toy densities.

Images come back as ``uint8`` tensors of shape ``(N, C, H, W)`` exactly as stored; the model-facing forms are made
per batch by :func:`image_loader`:

* ``"uint8"``: integers in ``{0, ..., 255}`` (discrete models, the compressor);
* ``"dequantized"``: ``(x + u) / 256`` with fresh ``u ~ U[0, 1)`` every time a batch is drawn (continuous flows);
* ``"unit"``: ``x / 255`` in ``[0, 1]`` (auto-encoders).

Where the files live: ``$FLOWLIB_DATA_DIR`` if set, else ``~/.cache/flowlib/data``. The root uses torchvision's
layout (``MNIST/raw/...``, ``FashionMNIST/raw/...``); torchvision downloads the data there when the machine is
online and the files are missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "DataNotFoundError",
    "IMAGE_DATASETS",
    "TOY_DENSITIES",
    "TensorLoader",
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


def data_root() -> Path:
    """The folder holding the datasets: ``$FLOWLIB_DATA_DIR``, else ``~/.cache/flowlib/data``."""
    configured = os.environ.get("FLOWLIB_DATA_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "flowlib" / "data"


def _torchvision_dataset(name: str, train: bool):
    import torchvision

    class_name, folder = _TORCHVISION[name]
    dataset_class = getattr(torchvision.datasets, class_name)
    root = data_root()
    try:
        return dataset_class(root=str(root), train=train, download=True)
    except Exception as error:  # torchvision raises RuntimeError/URLError variants when offline
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
        subset: keep this many examples, drawn at random (reproducibly, from ``seed``) without replacement;
            ``None`` keeps all of them in their original order.
        form: ``"uint8"`` as stored, ``"dequantized"`` (one draw of noise, see :func:`dequantize`) or ``"unit"``.
    Returns:
        ``(images, labels)``: images of shape ``(N, C, H, W)`` in the requested form, ``int64`` labels ``(N,)``.
    """
    if form not in ("uint8", "dequantized", "unit"):
        raise ValueError(f"form must be 'uint8', 'dequantized' or 'unit', got {form!r}")
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(IMAGE_DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
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


class TensorLoader:
    """Shuffled batches of tensors that sit whole in one device's memory: a ``DataLoader`` without the host.

    On a GPU a ``DataLoader`` collates every batch on the CPU and copies it over, which leaves a small model's
    GPU idle between steps. MNIST's 60,000 ``uint8`` images take 47 MB, so they can stay on the GPU: each epoch
    draws a permutation (from a CPU generator seeded with ``seed``, so the order is the same on every device),
    each batch is gathered there and converted by ``transform`` there (e.g. dequantized with noise drawn on the
    device).

    Arguments:
        tensors: tensors with the same first dimension ``N``; each batch is a tuple of their rows.
        batch_size: rows per batch.
        shuffle: a new random order every epoch; otherwise ``0..N-1``.
        drop_last: skip the last batch if it is smaller than ``batch_size``.
        seed: seed of the shuffling.
        transform: applied to the first tensor's rows of every batch.

    Example:
        >>> loader = TensorLoader(torch.arange(10), batch_size=4, shuffle=False)
        >>> len(loader), [batch[0].tolist() for batch in loader]
        (3, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]])
    """

    def __init__(
        self,
        *tensors: Tensor,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        transform: Callable[[Tensor], Tensor] | None = None,
    ):
        if not tensors or any(len(tensor) != len(tensors[0]) for tensor in tensors):
            raise ValueError(f"TensorLoader needs tensors with the same first dimension, got shapes "
                             f"{[tuple(tensor.shape) for tensor in tensors]}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.tensors, self.batch_size, self.shuffle, self.drop_last = tensors, batch_size, shuffle, drop_last
        self.transform = transform
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        count = len(self.tensors[0])
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        count, device = len(self.tensors[0]), self.tensors[0].device
        order = torch.randperm(count, generator=self.generator) if self.shuffle else torch.arange(count)
        order = order.to(device)
        for index in range(len(self)):
            rows = order[index * self.batch_size : (index + 1) * self.batch_size]
            batch = [tensor.index_select(0, rows) for tensor in self.tensors]
            if self.transform is not None:
                batch[0] = self.transform(batch[0])
            yield tuple(batch)


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
) -> DataLoader | TensorLoader:
    """A ``DataLoader`` of ``(images, labels)`` batches in the requested ``form`` (see the module docstring).

    ``shuffle`` defaults to True for the training split. Dequantization noise is drawn afresh for every batch.
    With a ``device``, the whole set is moved there once and batched there: a :class:`TensorLoader` (use it on
    GPUs; CIFAR-10's 150 MB fit as well as MNIST's 47 MB).
    """
    if form not in ("uint8", "dequantized", "unit"):
        raise ValueError(f"form must be 'uint8', 'dequantized' or 'unit', got {form!r}")
    images, labels = load_images(name, split, subset=subset, seed=seed)  # uint8; converted per batch
    shuffle = split == "train" if shuffle is None else shuffle
    if device is not None:
        return TensorLoader(images.to(device), labels.to(device), batch_size=batch_size, shuffle=shuffle,
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
    from sklearn.datasets import load_digits

    digits = load_digits()
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
        from sklearn.datasets import make_moons

        points = make_moons(n, noise=0.05, random_state=seed)[0] * 2.0 - np.array([1.0, 0.5])
    elif name == "circles":
        from sklearn.datasets import make_circles

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

