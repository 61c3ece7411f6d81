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
            train_subset=1_024, test_subset=256, batch_size=64, lr=1e-3, warmup_steps=5,
            nice_hidden=64, nice_hidden_layers=2, nice_epochs=1,
            realnvp_hidden=8, realnvp_blocks=1, realnvp_steps=6,
            mask_hidden=8, mask_couplings=2, mask_steps=6, mask_seeds=1, quality_images=100,
        ),
        # NICE ~4 min, RealNVP ~15 min, mask comparison 9 x ~40 s, toys 6 x ~15 s: ~27 min on one CPU thread
        "standard": dict(
            toy_samples=20_000, toy_steps=1_200, toy_batch_size=256, toy_couplings=8, toy_hidden=64,
            train_subset=None, test_subset=None, batch_size=64, lr=1e-3, warmup_steps=200,
            nice_hidden=128, nice_hidden_layers=5, nice_epochs=10,
            realnvp_hidden=32, realnvp_blocks=1, realnvp_steps=3_500,
            mask_hidden=16, mask_couplings=4, mask_steps=400, mask_seeds=3, quality_images=1_000,
        ),
        "full": dict(
            toy_samples=100_000, toy_steps=10_000, toy_batch_size=512, toy_couplings=12, toy_hidden=128,
            train_subset=None, test_subset=None, batch_size=128, lr=1e-3, warmup_steps=500,
            nice_hidden=1_000, nice_hidden_layers=5, nice_epochs=100,
            realnvp_hidden=64, realnvp_blocks=4, realnvp_steps=50_000,
            mask_hidden=64, mask_couplings=4, mask_steps=10_000, mask_seeds=3, quality_images=10_000,
        ),
    },
    "02_multiscale_flows": {
        "quick": dict(
            train_subset=1_024, test_subset=256, batch_size=64, lr=1e-3, warmup_steps=5, max_grad_norm=50.0,
            ablation_mixings=("reverse", "householder", "lu"), ablation_num_steps=2, ablation_hidden=16,
            ablation_steps=6, ablation_seeds=1, main_num_steps=2, main_hidden=16, main_steps=10,
            quality_images=100,
        ),
        # main Glow ~17 min, ablation 3 mixings x 3 seeds x ~35 s: ~22 min on one CPU thread
        "standard": dict(
            train_subset=None, test_subset=None, batch_size=64, lr=1e-3, warmup_steps=200, max_grad_norm=50.0,
            ablation_mixings=("reverse", "householder", "lu"), ablation_num_steps=4, ablation_hidden=64,
            ablation_steps=400, ablation_seeds=3, main_num_steps=6, main_hidden=64, main_steps=10_000,
            quality_images=1_000,
        ),
        "full": dict(
            train_subset=None, test_subset=None, batch_size=128, lr=1e-3, warmup_steps=500, max_grad_norm=50.0,
            ablation_mixings=("reverse", "permutation", "householder", "lu"), ablation_num_steps=8,
            ablation_hidden=256, ablation_steps=20_000, ablation_seeds=3, main_num_steps=10, main_hidden=256,
            main_steps=100_000, quality_images=10_000,
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
    "07_lossless_compression": {
        "quick": dict(
            hidden_channels=8, num_couplings=1, num_levels=2, num_components=5, factor_components=1, epochs=1,
            max_steps=30, batch_size=32, lr=3e-3, train_subset=2_048, eval_images=64, test_images=64,
            determinism_images=16, mosaic_side=8,
        ),
        "standard": dict(
            hidden_channels=40, num_couplings=4, num_levels=2, num_components=5, factor_components=3, epochs=1,
            max_steps=1_500, batch_size=32, lr=3e-3, train_subset=None, eval_images=1_000, test_images=10_000,
            determinism_images=256, mosaic_side=10,
        ),
        "full": dict(
            hidden_channels=128, num_couplings=8, num_levels=2, num_components=5, factor_components=5, epochs=100,
            max_steps=None, batch_size=64, lr=1e-3, train_subset=None, eval_images=10_000, test_images=10_000,
            determinism_images=1_000, mosaic_side=10,
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
    # The release a reader can `pip install` ("2.14.1"), then the build's local tag ("cu130", "cpu") if any.
    release, _, build = torch.__version__.partition("+")
    return (
        f"scale: {current_scale()} | device: {device.type} ({name}, {torch.get_num_threads()} threads) | "
        f"torch {release}{f' ({build} build)' if build else ''} | python {platform.python_version()}"
    )
