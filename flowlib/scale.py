"""Run scales: ``quick`` (CI, seconds), ``standard`` (a laptop CPU, minutes) and ``full`` (paper scale on a GPU).

The scale comes from the environment variable ``FLOWLIB_SCALE``; without it, ``full`` when CUDA is available and
``standard`` otherwise. Every chapter looks up its sizes (epochs, subset sizes, widths) here, in :data:`SIZES`,
so the three scales of the whole book can be read side by side in one table.
"""

from __future__ import annotations

import os
import platform
from types import SimpleNamespace
from typing import Literal

import torch

from flowlib.device import default_device

__all__ = ["SCALES", "SIZES", "current_scale", "sizes", "describe_run"]

Scale = Literal["quick", "standard", "full"]
SCALES: tuple[Scale, ...] = ("quick", "standard", "full")

# chapter -> scale -> sizes. Every chapter keeps its own entry; keys are whatever that chapter needs.
SIZES: dict[str, dict[Scale, dict]] = {
    "00_change_of_variables": {
        "quick": dict(toy_samples=2_000, fit_steps=150, histogram_samples=20_000),
        "standard": dict(toy_samples=20_000, fit_steps=2_000, histogram_samples=200_000),
        "full": dict(toy_samples=50_000, fit_steps=5_000, histogram_samples=1_000_000),
    },
    "01_coupling_layers": {
        "quick": dict(
            toy_samples=2_000, toy_steps=60, toy_batch_size=256, toy_couplings=4, toy_hidden=32,
            train_subset=1_024, test_subset=256, batch_size=64,
            nice_hidden=64, nice_hidden_layers=2, nice_epochs=1,
            realnvp_hidden=8, realnvp_blocks=1, realnvp_steps=6,
            mask_hidden=8, mask_couplings=2, mask_steps=6,
        ),
        "standard": dict(
            toy_samples=20_000, toy_steps=1_200, toy_batch_size=256, toy_couplings=8, toy_hidden=64,
            train_subset=None, test_subset=None, batch_size=64,
            nice_hidden=128, nice_hidden_layers=4, nice_epochs=4,
            realnvp_hidden=16, realnvp_blocks=1, realnvp_steps=300,
            mask_hidden=16, mask_couplings=4, mask_steps=250,
        ),
        "full": dict(
            toy_samples=100_000, toy_steps=10_000, toy_batch_size=512, toy_couplings=12, toy_hidden=128,
            train_subset=None, test_subset=None, batch_size=128,
            nice_hidden=1_000, nice_hidden_layers=5, nice_epochs=100,
            realnvp_hidden=64, realnvp_blocks=4, realnvp_steps=50_000,
            mask_hidden=64, mask_couplings=4, mask_steps=10_000,
        ),
    },
    "02_multiscale_flows": {
        "quick": dict(
            train_subset=1_024, test_subset=256, batch_size=64, lr=1e-3, max_grad_norm=50.0,
            ablation_mixings=("reverse", "householder", "lu"), ablation_num_steps=2, ablation_hidden=16,
            ablation_steps=6, main_num_steps=2, main_hidden=16, main_steps=10,
        ),
        "standard": dict(
            train_subset=None, test_subset=None, batch_size=64, lr=1e-3, max_grad_norm=50.0,
            ablation_mixings=("reverse", "householder", "lu"), ablation_num_steps=4, ablation_hidden=64,
            ablation_steps=350, main_num_steps=6, main_hidden=64, main_steps=800,
        ),
        "full": dict(
            train_subset=None, test_subset=None, batch_size=128, lr=1e-3, max_grad_norm=50.0,
            ablation_mixings=("reverse", "permutation", "householder", "lu"), ablation_num_steps=8,
            ablation_hidden=256, ablation_steps=20_000, main_num_steps=10, main_hidden=256, main_steps=100_000,
        ),
    },
    "03_pie": {
        "quick": dict(
            train_subset=2_000, test_subset=200, pie_batch_size=32, pie_steps=12, pie_lr=2e-3,
            hidden_channels=4, num_residual_blocks=0, hidden_features=16,
            ae_batch_size=32, ae_steps=12, ae_lr=1e-3, ae_base_channels=4,
            num_sharpness_samples=200, num_umap_points=200, toy_steps=60,
        ),
        "standard": dict(
            train_subset=None, test_subset=2_000, pie_batch_size=64, pie_steps=1_800, pie_lr=2e-3,
            hidden_channels=16, num_residual_blocks=0, hidden_features=96,
            ae_batch_size=128, ae_steps=1_500, ae_lr=1e-3, ae_base_channels=32,
            num_sharpness_samples=2_000, num_umap_points=2_000, toy_steps=600,
        ),
        "full": dict(
            train_subset=None, test_subset=None, pie_batch_size=64, pie_steps=30_000, pie_lr=1e-3,
            hidden_channels=64, num_residual_blocks=1, hidden_features=256,
            ae_batch_size=100, ae_steps=30_000, ae_lr=1e-3, ae_base_channels=64,
            num_sharpness_samples=10_000, num_umap_points=10_000, toy_steps=2_000,
        ),
    },
    # Chapter 6: every model of flowlib.recipes.selfvae.MODELS on each dataset for num_seeds seeds (36 trainings at
    # standard: ~100 minutes on one CPU thread). Test evaluation: the ELBO terms on elbo_images test images, the
    # importance-weighted bound with iw_samples draws on iw_images of them (the paper: 512 on the whole test set),
    # proxy FID of fid_images samples against as many test images, operations on operation_images test images.
    # gpu (reasoned, not run): these DenseNet VAEs are launch-bound on one H100 like the other chapters' models,
    # ~100 convolutions per selfVAE step, ~15 ms per step forward, backward and Adamax; 12 trainings (one seed) x
    # 1,500 steps x ~15 ms is about 5 minutes.
    "06_selfvae": {
        "quick": dict(
            datasets=("mnist", "fashion_mnist"), num_seeds=1, train_subset=1_024, batch_size=32, steps=4, lr=2e-3,
            max_grad_norm=200.0, latent_channels=2, width=4, growth_rate=2, num_layers=1, num_components=2,
            prior_couplings=2, prior_hidden_channels=4, elbo_images=64, iw_images=16, iw_samples=4,
            fid_images=64, operation_images=32,
        ),
        "standard": dict(
            datasets=("mnist", "fashion_mnist"), num_seeds=3, train_subset=None, batch_size=64, steps=1_500, lr=2e-3,
            max_grad_norm=200.0, latent_channels=4, width=16, growth_rate=8, num_layers=2, num_components=5,
            prior_couplings=4, prior_hidden_channels=32, elbo_images=2_000, iw_images=300, iw_samples=32,
            fid_images=2_000, operation_images=1_000,
        ),
        "gpu": dict(
            datasets=("mnist", "fashion_mnist"), num_seeds=1, train_subset=None, batch_size=128, steps=1_500,
            lr=2e-3, max_grad_norm=200.0, latent_channels=8, width=32, growth_rate=16, num_layers=2,
            num_components=10, prior_couplings=6, prior_hidden_channels=64, elbo_images=10_000, iw_images=2_000,
            iw_samples=128, fid_images=10_000, operation_images=10_000,
        ),
        "full": dict(
            datasets=("mnist", "fashion_mnist"), num_seeds=3, train_subset=None, batch_size=64, steps=200_000,
            lr=2e-3, max_grad_norm=200.0, latent_channels=16, width=64, growth_rate=32, num_layers=4,
            num_components=10, prior_couplings=8, prior_hidden_channels=128, elbo_images=10_000,
            iw_images=10_000, iw_samples=512, fid_images=10_000, operation_images=10_000,
        ),
    },
    "07_lossless_compression": {
        "quick": dict(
            hidden_channels=8, num_couplings=1, num_levels=2, num_components=5, factor_components=1, epochs=1,
            max_steps=30, batch_size=32, lr=3e-3, train_subset=2_048, eval_images=64, test_images=64,
            determinism_images=16,
        ),
        "standard": dict(
            hidden_channels=40, num_couplings=4, num_levels=2, num_components=5, factor_components=3, epochs=1,
            max_steps=1_500, batch_size=32, lr=3e-3, train_subset=None, eval_images=1_000, test_images=10_000,
            determinism_images=256,
        ),
        "full": dict(
            hidden_channels=128, num_couplings=8, num_levels=2, num_components=5, factor_components=5, epochs=100,
            max_steps=None, batch_size=64, lr=1e-3, train_subset=None, eval_images=10_000, test_images=10_000,
            determinism_images=1_000,
        ),
    },
}


def current_scale() -> Scale:
    """The active scale: ``FLOWLIB_SCALE`` if set, else ``full`` with CUDA and ``standard`` without."""
    value = os.environ.get("FLOWLIB_SCALE", "").strip().lower()
    if not value:
        return "full" if torch.cuda.is_available() else "standard"
    if value not in SCALES:
        raise ValueError(f"FLOWLIB_SCALE={value!r} is not a scale; set it to one of {', '.join(SCALES)}")
    return value  # type: ignore[return-value]


def sizes(chapter: str, scale: Scale | None = None) -> SimpleNamespace:
    """The sizes of ``chapter`` at ``scale`` (default: the active scale), as attributes, plus ``.scale``."""
    if chapter not in SIZES:
        raise KeyError(f"no sizes for chapter {chapter!r}; known chapters: {', '.join(sorted(SIZES))}")
    scale = scale or current_scale()
    return SimpleNamespace(scale=scale, **SIZES[chapter][scale])


def describe_run(device: torch.device | str | None = None) -> str:
    """One line naming the scale, device and versions that a notebook's outputs came from (print it at the top)."""
    device = torch.device(device) if device is not None else default_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return (
        f"scale: {current_scale()} | device: {device.type} ({name}, {torch.get_num_threads()} threads) | "
        f"torch {torch.__version__} | python {platform.python_version()}"
    )
