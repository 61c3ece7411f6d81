"""Evaluation metrics shared by the chapters.

Bits per dimension, the convention used throughout the book
------------------------------------------------------------
Images hold integers ``x in {0, ..., 255}^D``. A continuous model is trained on uniformly dequantized data scaled to
``[0, 1)``: ``y = (x + u) / 256`` with ``u ~ U[0, 1)^D``. Its density ``p(y)`` lives on bins of width ``1/256``, so the
discrete probability it assigns to ``x`` is (in expectation, a lower bound) ``P(x) ~= p(y) * (1/256)^D``. Hence

    bpd = -(log p(y) - D log 256) / (D ln 2)  =  -log2 P(x) / D.

A discrete model (Integer Discrete Flows) gives ``log P(x)`` directly: use ``bin_width=1``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from flowlib.data import as_batches, batch_inputs

__all__ = ["bits_per_dim", "count_parameters", "dataset_bits_per_dim", "sharpness"]


def bits_per_dim(log_prob: Tensor, num_dims: int, bin_width: float = 1 / 256) -> Tensor:
    """Bits per dimension from a log-density (nats) of data whose integer bins have width ``bin_width``.

    Arguments:
        log_prob: ``(B,)`` log-density in nats, of ``[0,1]``-scaled dequantized data by default.
        num_dims: ``D``, the number of dimensions of one example (784 for MNIST).
        bin_width: width of one integer bin in the model's input space: ``1/256`` for data scaled to ``[0, 1)``,
            ``1`` for data in ``[0, 256)`` or for a discrete model's log-probability.
    Returns:
        ``(B,)`` bits per dimension.

    Example:
        >>> float(bits_per_dim(torch.tensor([0.0]), num_dims=1))  # uniform density on [0,1): exactly 8 bits
        8.0
    """
    if num_dims <= 0:
        raise ValueError(f"num_dims must be positive, got {num_dims}")
    return -(log_prob + num_dims * math.log(bin_width)) / (num_dims * math.log(2.0))


LAPLACE_KERNELS: dict[str, list[list[float]]] = {
    "laplace4": [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]],
    "laplace8": [[1.0, 1.0, 1.0], [1.0, -8.0, 1.0], [1.0, 1.0, 1.0]],
}



def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model`` (trainable or not)."""
    return sum(parameter.numel() for parameter in model.parameters())


@torch.no_grad()
def dataset_bits_per_dim(model: nn.Module, batches: Iterable, *, seed: int = 1234, device: torch.device | str = "cpu") -> float:
    """Mean of ``model.bits_per_dim(x)`` over every example of ``batches``: a tensor of examples, a Dataset, or
    batches that are tensors or ``(x, label)`` pairs (e.g. a test loader); see :func:`flowlib.data.as_batches`.

    The global torch RNG is seeded with ``seed`` while the batches are drawn, so the dequantization noise (and hence
    the number) is the same on every run; the caller's RNG state is restored afterwards. The model is put in eval mode.
    """
    model.eval().to(device)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        total, count = 0.0, 0
        for batch in as_batches(batches, batch_size=500):
            bpd = model.bits_per_dim(batch_inputs(batch).to(device))
            total, count = total + bpd.sum().item(), count + len(bpd)
    finally:
        torch.random.set_rng_state(state)
    if count == 0:
        raise ValueError("dataset_bits_per_dim got no examples")
    return total / count


def sharpness(images: Tensor, kernel: str = "laplace4", padding: str = "valid") -> float:
    """Image sharpness of PIE's Table 1: the variance of the Laplace-filtered image, averaged over images.

    Each image is converted to grey (mean over channels), convolved with a 3x3 Laplace kernel and the (population)
    variance of its activations is taken; the result is the mean over the batch. Blurry images have few edges, so
    most activations are near zero and the variance is small. Calibrated on the 10,000 MNIST test digits: the
    4-neighbour kernel on images in ``[0, 1]`` (uint8 / 255) with ``"valid"`` convolution gives 0.18, the paper's
    value for real images (the 8-neighbour kernel gives 1.08; zero padding to the same size gives 0.16).

    Arguments:
        images: ``(N, C, H, W)`` or ``(N, H, W)``; floats in ``[0, 1]`` or ``uint8`` (divided by 255).
        kernel: ``"laplace4"`` (``[[0,1,0],[1,-4,1],[0,1,0]]``) or ``"laplace8"`` (all ones, -8 in the middle).
        padding: ``"valid"`` (no padding, ``(H-2, W-2)`` activations) or ``"same"`` (zero padding).
    Returns:
        the average per-image variance, a Python float.

    Example:
        >>> import torch
        >>> sharpness(torch.full((2, 1, 8, 8), 0.5))  # a constant image has no edges
        0.0
    """
    if kernel not in LAPLACE_KERNELS:
        raise ValueError(f"kernel must be one of {sorted(LAPLACE_KERNELS)}, got {kernel!r}")
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[-1] < 3 or images.shape[-2] < 3:
        raise ValueError(
            f"sharpness expects images of shape (N, C, H, W) or (N, H, W) with H, W >= 3, got {tuple(images.shape)}"
        )
    if images.dtype == torch.uint8:
        images = images.double() / 255.0
    grey = images.double().mean(dim=1, keepdim=True)
    weight = torch.tensor(LAPLACE_KERNELS[kernel], dtype=grey.dtype, device=grey.device).view(1, 1, 3, 3)
    activations = torch.nn.functional.conv2d(grey, weight, padding=0 if padding == "valid" else 1)
    return activations.flatten(1).var(dim=1, unbiased=False).mean().item()
