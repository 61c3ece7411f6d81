"""Checkpoints of chapter 6 (self-supervised VAEs): VAEs with three priors and the selfVAEs, per dataset and seed.

Every model is built by :func:`build_model` and trained by :func:`train_model` on integer images: Adamax (the paper's
optimiser) with a one-cycle schedule peaking at ``S.lr``, minimising the negative ELBO in bits per dimension.
Checkpoint names are ``06_selfvae-<model>-<dataset>-<scale>``, with ``_seed<k>`` appended to the model for seeds
other than 0 (e.g. ``06_selfvae-vae_realnvp_seed1-mnist-standard``).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from flowlib.data import image_loader
from flowlib.models.selfvae import SelfVAE, selfvae, vae
from flowlib.recipes import Recipe
from flowlib.train import fit

__all__ = ["MODELS", "IMAGE_SHAPES", "build_model", "model_name", "recipes", "train_model"]

CHAPTER = "06_selfvae"

# model -> (transform, number of transformations, prior); "vae_*" are the prior ablation of App. A.2, and
# "vae_realnvp" is also the VAE of Table 1.
MODELS: dict[str, tuple[str, int, str]] = {
    "vae_normal": ("none", 0, "normal"),
    "vae_mog": ("none", 0, "mog"),
    "vae_realnvp": ("none", 0, "realnvp"),
    "downscale": ("downscale", 1, "realnvp"),
    "sketch": ("sketch", 1, "realnvp"),
    "downscale_3level": ("downscale", 2, "realnvp"),
}

IMAGE_SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def model_name(model: str, seed: int = 0) -> str:
    """The model part of a checkpoint name: ``model`` for seed 0, ``model_seed<k>`` otherwise.

    Example:
        >>> model_name("sketch"), model_name("sketch", 2)
        ('sketch', 'sketch_seed2')
    """
    return model if seed == 0 else f"{model}_seed{seed}"


def build_model(model: str, dataset: str, S: SimpleNamespace, seed: int = 0) -> SelfVAE:
    """A freshly initialised ``model`` (a key of :data:`MODELS`) for ``dataset`` at the sizes ``S``, seeded."""
    if model not in MODELS:
        raise KeyError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if dataset not in IMAGE_SHAPES:
        raise KeyError(f"unknown dataset {dataset!r}; choose one of {', '.join(IMAGE_SHAPES)}")
    transform, num_levels, prior = MODELS[model]
    torch.manual_seed(seed)
    sizes = dict(latent_channels=S.latent_channels, width=S.width, growth_rate=S.growth_rate,
                 num_layers=S.num_layers, num_components=S.num_components, prior_couplings=S.prior_couplings,
                 prior_hidden_channels=S.prior_hidden_channels)
    shape = IMAGE_SHAPES[dataset]
    if num_levels == 0:
        return vae(shape, prior, **sizes)
    # light-on-dark data (MNIST, Fashion-MNIST) are sketched on their negative (see flowlib.models.selfvae.Sketch)
    return selfvae(shape, transform, num_levels=num_levels, prior=prior, invert_sketch=dataset != "cifar10",
                   **sizes)


def train_model(model: SelfVAE, dataset: str, S: SimpleNamespace, device: torch.device, seed: int = 0) -> dict:
    """Train ``model`` in place for ``S.steps`` steps on the training split of ``dataset``; returns the metadata
    stored with the checkpoint (seconds, steps, final loss in bits/dim, a 20-point loss curve)."""
    torch.manual_seed(seed)
    loader = image_loader(dataset, "train", batch_size=S.batch_size, subset=S.train_subset, form="uint8",
                          seed=seed, drop_last=True)
    optimizer = torch.optim.Adamax(model.parameters(), lr=S.lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=S.lr, total_steps=S.steps, pct_start=0.05)
    history = fit(model, lambda m, batch: m.loss(batch[0]), loader, epochs=math.ceil(S.steps / len(loader)),
                  max_steps=S.steps, optimizer=optimizer, scheduler=scheduler, max_grad_norm=S.max_grad_norm,
                  device=device, progress=False, desc=f"{CHAPTER} {dataset}")
    losses = history.train_loss
    return {"seconds": round(history.seconds, 1), "steps": len(losses), "seed": seed, "dataset": dataset,
            "final_loss": round(float(np.mean(losses[-100:])), 4), "curve": history.curve(20)}


def recipes(S: SimpleNamespace, device: torch.device) -> dict[str, Recipe]:
    """Every model of :data:`MODELS` on every dataset of ``S.datasets`` for seeds ``0 .. S.num_seeds - 1``; keys are
    the recipe names ``<model>-<dataset>`` (``<model>_seed<k>-<dataset>`` for seed ``k > 0``)."""
    table: dict[str, Recipe] = {}
    for dataset in S.datasets:
        for model in MODELS:
            for seed in range(S.num_seeds):
                name = f"{model_name(model, seed)}-{dataset}"
                table[name] = Recipe(
                    CHAPTER, name,
                    build=lambda model=model, dataset=dataset, seed=seed: build_model(model, dataset, S, seed),
                    train=lambda network, dataset=dataset, seed=seed: train_model(network, dataset, S, device, seed),
                )
    return table
