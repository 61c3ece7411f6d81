"""Recipes of chapter 1 (coupling layers): NICE and RealNVP on three 2-D toy densities and on MNIST, and the flows of
the mask comparison.

Checkpoint names are ``01_coupling_layers-<recipe>-<scale>``:

* ``nice_<density>`` and ``realnvp_<density>`` for the toy densities of ``TOY_DENSITIES``;
* ``nice_mnist`` (the paper's MNIST architecture at the width ``S.nice_hidden``) and ``realnvp_mnist`` (the
  multi-scale RealNVP of Section 3.6 at the width ``S.realnvp_hidden``);
* ``mask_<variant>_seed<k>`` for the variants of ``MASK_VARIANTS``, ``S.mask_seeds`` seeds each.

:func:`train_on_images` is the maximum-likelihood loop on dequantized MNIST that chapter 2 uses too.

Example:
    >>> from flowlib.scale import sizes
    >>> names = list(recipes(sizes(CHAPTER, "quick"), torch.device("cpu")))
    >>> names[:2], names[6:8], names[-1]
    (['nice_moons', 'realnvp_moons'], ['nice_mnist', 'realnvp_mnist'], 'mask_realnvp_seed0')
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flowlib.data import image_loader, toy_2d
from flowlib.distributions import StandardNormal
from flowlib.models.flow import Flow
from flowlib.models.nice import initialize_scaling, nice
from flowlib.models.realnvp import MultiscaleFlow, realnvp, realnvp_vector
from flowlib.nets import ConvNet
from flowlib.recipes import Recipe
from flowlib.train import fit
from flowlib.transforms import AffineCoupling, Compose, Logit, Squeeze, Transform, channel_mask, checkerboard_mask

__all__ = [
    "CHAPTER",
    "MASK_VARIANTS",
    "TOY_DENSITIES",
    "build_mask_flow",
    "build_nice_mnist",
    "build_realnvp_mnist",
    "build_toy_flow",
    "recipes",
    "train_on_images",
    "warmup_cosine",
]

CHAPTER = "01_coupling_layers"
TOY_DENSITIES: tuple[str, ...] = ("moons", "eight_gaussians", "checkerboard")
# How the couplings of the mask comparison split a 28x28 image (see build_mask_flow).
MASK_VARIANTS: tuple[str, ...] = ("checkerboard", "channel", "realnvp")


def warmup_cosine(
    optimizer: torch.optim.Optimizer, steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate ``lr * min(1, (t + 1) / warmup_steps) * (1 + cos(pi t / steps)) / 2`` at step ``t``: a linear
    warm-up, then a cosine decay to zero at the last step.

    Example:
        >>> optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> scheduler = warmup_cosine(optimizer, steps=4, warmup_steps=2)
        >>> rates = []
        >>> for _ in range(4):
        ...     rates.append(round(optimizer.param_groups[0]["lr"], 3))
        ...     optimizer.step()
        ...     scheduler.step()
        >>> rates
        [0.5, 0.854, 0.5, 0.146]
    """
    if steps < 1 or warmup_steps < 0:
        raise ValueError(f"need steps >= 1 and warmup_steps >= 0, got steps={steps}, warmup_steps={warmup_steps}")

    def factor(step: int) -> float:
        warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
        return warmup * 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_on_images(
    model: nn.Module,
    S: SimpleNamespace,
    device: torch.device,
    *,
    steps: int,
    lr: float,
    warmup_steps: int,
    seed: int = 0,
    max_grad_norm: float = 50.0,
) -> dict[str, Any]:
    """Maximum likelihood on uniformly dequantized MNIST (``S.train_subset`` images, batches of ``S.batch_size``):
    the loss is the batch mean of bits per dimension; Adam at ``lr`` with :func:`warmup_cosine`, gradients clipped
    to ``max_grad_norm``. ``seed`` fixes the data order and the dequantization noise.

    Returns the metadata stored beside the weights: wall time, steps, images and epochs seen, the training curve
    (means of consecutive chunks of steps), device and thread count.
    """
    torch.manual_seed(seed)
    loader = image_loader("mnist", "train", S.batch_size, subset=S.train_subset, seed=seed, drop_last=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = fit(model, lambda model, batch: model.bits_per_dim(batch[0]).mean(), loader,
                  epochs=math.ceil(steps / len(loader)), max_steps=steps, optimizer=optimizer,
                  scheduler=warmup_cosine(optimizer, steps, warmup_steps), max_grad_norm=max_grad_norm,
                  device=device, progress=False)
    steps_done = len(history.train_loss)
    curve = history.curve(20)
    return {"seconds": round(history.seconds, 1), "steps": steps_done, "batch_size": S.batch_size,
            "images_seen": steps_done * S.batch_size,
            "epochs": round(steps_done * S.batch_size / len(loader.dataset), 2), "lr": lr,
            "warmup_steps": warmup_steps, "schedule": "linear warm-up, cosine decay to 0",
            "final_train_bpd": curve[-1], "train_bpd_curve": curve, "device": device.type,
            "threads": torch.get_num_threads()}


def build_toy_flow(S: SimpleNamespace, model: str) -> Flow:
    """The toy flow ``model`` (``"nice"`` or ``"realnvp"``) on ``(B, 2)`` points: ``S.toy_couplings`` couplings with
    alternating half masks and MLPs of width ``S.toy_hidden``; NICE has a logistic prior, RealNVP a Gaussian one."""
    torch.manual_seed(0)
    if model == "nice":
        return nice(2, num_couplings=S.toy_couplings, hidden_features=S.toy_hidden, num_hidden_layers=2)
    if model == "realnvp":
        return realnvp_vector(2, num_couplings=S.toy_couplings, hidden_features=S.toy_hidden)
    raise ValueError(f"model must be 'nice' or 'realnvp', got {model!r}")


def _train_toy(model: Flow, S: SimpleNamespace, density: str, device: torch.device) -> dict[str, Any]:
    """Maximum likelihood on ``S.toy_samples`` points of ``density`` (seed 0), Adam 1e-3, ``S.toy_steps`` steps."""
    points = toy_2d(density, S.toy_samples, seed=0)
    loader = DataLoader(TensorDataset(points), batch_size=S.toy_batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    history = fit(model, lambda model, batch: -model.log_prob(batch[0]).mean(), loader,
                  epochs=math.ceil(S.toy_steps / len(loader)), max_steps=S.toy_steps, lr=1e-3, device=device,
                  progress=False)
    last = history.train_loss[-50:]
    return {"seconds": round(history.seconds, 1), "steps": len(history.train_loss),
            "final_train_nll": round(sum(last) / len(last), 4)}


def build_nice_mnist(S: SimpleNamespace) -> Flow:
    """NICE's MNIST model (Section 5.1): 4 additive couplings on odd/even pixels, MLPs of ``S.nice_hidden_layers``
    hidden layers of width ``S.nice_hidden``, a diagonal scaling and a logistic prior."""
    torch.manual_seed(0)
    return nice((1, 28, 28), hidden_features=S.nice_hidden, num_hidden_layers=S.nice_hidden_layers)


def _train_nice(model: Flow, S: SimpleNamespace, device: torch.device) -> dict[str, Any]:
    """Start the scaling from the data (:func:`~flowlib.models.nice.initialize_scaling`), then ``S.nice_epochs``."""
    first_batch = next(iter(image_loader("mnist", "train", 1_000, subset=S.train_subset, seed=1)))[0]
    initialize_scaling(model, first_batch)
    steps_per_epoch = (S.train_subset or 60_000) // S.batch_size
    return train_on_images(model, S, device, steps=S.nice_epochs * steps_per_epoch, lr=S.lr,
                           warmup_steps=S.warmup_steps)


def build_realnvp_mnist(S: SimpleNamespace) -> MultiscaleFlow:
    """RealNVP's multi-scale model (Section 3.6) for MNIST: 2 scales and a final one, ResNet conditioners of width
    ``S.realnvp_hidden`` with ``S.realnvp_blocks`` residual blocks, logit pre-processing."""
    torch.manual_seed(0)
    return realnvp((1, 28, 28), num_scales=2, hidden_channels=S.realnvp_hidden, num_blocks=S.realnvp_blocks)


def build_mask_flow(S: SimpleNamespace, variant: str, seed: int = 0) -> Flow:
    """A single-scale flow of ``S.mask_couplings`` affine couplings on MNIST that differ only in how they split
    the image (every coupling network a ResNet of width ``S.mask_hidden`` with one block):

    * ``"checkerboard"``: alternating checkerboard masks on the ``1 x 28 x 28`` image;
    * ``"channel"``: a squeeze to ``4 x 14 x 14``, then alternating channel-wise masks;
    * ``"realnvp"``: half of the couplings with checkerboard masks, a squeeze, the other half with channel-wise
      masks: the order of one scale of RealNVP (Section 3.6).

    Logit pre-processing first, a standard normal prior last.

    Example:
        >>> from flowlib.scale import sizes
        >>> flow = build_mask_flow(sizes(CHAPTER, "quick"), "realnvp")
        >>> [type(layer).__name__ for layer in flow.transform]
        ['Logit', 'AffineCoupling', 'Squeeze', 'AffineCoupling']
    """
    if variant not in MASK_VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(MASK_VARIANTS)}, got {variant!r}")
    torch.manual_seed(seed)
    num_checkerboard = {"checkerboard": S.mask_couplings, "channel": 0, "realnvp": S.mask_couplings // 2}[variant]
    layers: list[Transform] = [Logit(0.05)]
    shape = (1, 28, 28)
    for index in range(S.mask_couplings):
        if index == num_checkerboard:
            layers.append(Squeeze(2))
            shape = (4, 14, 14)
        make_mask = checkerboard_mask if index < num_checkerboard else channel_mask
        conditioner = ConvNet(shape[0], 2 * shape[0], S.mask_hidden, num_blocks=1)
        layers.append(AffineCoupling(make_mask(*shape, parity=index % 2), conditioner))
    return Flow(Compose(*layers), StandardNormal(shape))


def recipes(S: SimpleNamespace, device: torch.device) -> dict[str, Recipe]:
    """Every checkpoint chapter 1 loads: the six toy flows, NICE and RealNVP on MNIST, the mask-comparison flows."""
    result: dict[str, Recipe] = {}
    for density in TOY_DENSITIES:
        for model in ("nice", "realnvp"):
            name = f"{model}_{density}"
            result[name] = Recipe(CHAPTER, name, lambda model=model: build_toy_flow(S, model),
                                  lambda flow, density=density: _train_toy(flow, S, density, device))
    result["nice_mnist"] = Recipe(CHAPTER, "nice_mnist", lambda: build_nice_mnist(S),
                                  lambda flow: _train_nice(flow, S, device))
    result["realnvp_mnist"] = Recipe(
        CHAPTER, "realnvp_mnist", lambda: build_realnvp_mnist(S),
        lambda flow: train_on_images(flow, S, device, steps=S.realnvp_steps, lr=S.lr, warmup_steps=S.warmup_steps),
    )
    for variant in MASK_VARIANTS:
        for seed in range(S.mask_seeds):
            name = f"mask_{variant}_seed{seed}"
            result[name] = Recipe(
                CHAPTER, name, lambda variant=variant, seed=seed: build_mask_flow(S, variant, seed),
                lambda flow, seed=seed: train_on_images(flow, S, device, steps=S.mask_steps, lr=S.lr,
                                                        warmup_steps=S.warmup_steps, seed=seed),
            )
    return result
