"""Recipes of chapter 2 (multi-scale flows): the chapter's Glow on MNIST and the models of the channel-mixing
ablation.

Checkpoint names are ``02_multiscale_flows-<recipe>-<scale>``:

* ``glow_lu``: a two-level Glow with Glow's LU-parametrised 1x1 convolutions, ``S.main_num_steps`` steps of flow per
  level of width ``S.main_hidden``, trained for ``S.main_steps`` steps;
* ``ablation_<mixing>_seed<k>``: smaller Glows that differ only in the channel mixing (``S.ablation_mixings``),
  ``S.ablation_seeds`` seeds each (the seed sets the initialisation, the data order and the dequantization noise).

All are trained by :func:`flowlib.recipes.coupling_layers.train_on_images` (dequantized MNIST, bits per dimension,
Adam with a warm-up and a cosine decay).

Example:
    >>> from flowlib.scale import sizes
    >>> list(recipes(sizes(CHAPTER, "quick"), torch.device("cpu")))[:3]
    ['glow_lu', 'ablation_reverse_seed0', 'ablation_householder_seed0']
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from flowlib.models.glow import glow
from flowlib.models.realnvp import MultiscaleFlow
from flowlib.recipes import Recipe
from flowlib.recipes.coupling_layers import train_on_images

__all__ = ["CHAPTER", "build_glow", "recipes"]

CHAPTER = "02_multiscale_flows"


def build_glow(num_steps: int, hidden_channels: int, mixing: str = "lu", seed: int = 0) -> MultiscaleFlow:
    """The chapter's Glow for ``(1, 28, 28)`` MNIST: 2 levels of ``num_steps`` steps of flow, coupling networks of
    width ``hidden_channels``, channel ``mixing`` between couplings, conditional Gaussian priors; seeded.

    Example:
        >>> build_glow(num_steps=1, hidden_channels=8).log_prob(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2])
    """
    torch.manual_seed(seed)
    return glow((1, 28, 28), num_levels=2, num_steps=num_steps, hidden_channels=hidden_channels, mixing=mixing)


def recipes(S: SimpleNamespace, device: torch.device) -> dict[str, Recipe]:
    """Every checkpoint chapter 2 loads: the main Glow, then the ablation models, mixing by mixing."""
    result = {
        "glow_lu": Recipe(
            CHAPTER, "glow_lu", lambda: build_glow(S.main_num_steps, S.main_hidden),
            lambda model: train_on_images(model, S, device, steps=S.main_steps, lr=S.lr,
                                          warmup_steps=S.warmup_steps, max_grad_norm=S.max_grad_norm),
        )
    }
    for mixing in S.ablation_mixings:
        for seed in range(S.ablation_seeds):
            name = f"ablation_{mixing}_seed{seed}"
            result[name] = Recipe(
                CHAPTER, name,
                lambda mixing=mixing, seed=seed: build_glow(S.ablation_num_steps, S.ablation_hidden, mixing, seed),
                lambda model, seed=seed: train_on_images(
                    model, S, device, steps=S.ablation_steps, lr=S.lr, warmup_steps=S.warmup_steps, seed=seed,
                    max_grad_norm=S.max_grad_norm,
                ),
            )
    return result
