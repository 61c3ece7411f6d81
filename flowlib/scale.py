"""Run scales: ``quick`` (CI, seconds), ``standard`` (a laptop CPU, minutes), ``gpu`` (one GPU, minutes) and
``full`` (the papers' sizes, hours of GPU).

The scale comes from the environment variable ``FLOWLIB_SCALE``; without it, ``gpu`` when CUDA is available and
``standard`` otherwise (``full`` is always opt-in). Every chapter looks up its sizes (epochs, subset sizes, widths)
here, in :data:`SIZES`, so the four scales of the whole book can be read side by side in one table.

How the ``gpu`` sizes were chosen. A chapter's trainings should take about 5 minutes on one H100 (two chapters per
10-minute run) and 30-40 minutes on a Colab T4. The reference measurements (one H200, torch 2.11, eager mode):

* a Glow training step (L=2, K=10, hidden 256, batch 128, 1.75M parameters) takes ~66 ms, and one with K=4,
  hidden 64 at batch 64 ~30 ms: the step is bound by kernel launches and host work, so its time grows with the
  number of layers (~3.3 ms per step of flow, forward, backward and Adam) and hardly with the width or batch.
  Hence the ``gpu`` scale uses the papers' widths where the checkpoint stays under ~5 MB and batches of 128, and
  chooses steps by counting layers; 150 s of that Glow reached 1.55 bits/dim on the MNIST test set;
* an IDF step at the ``full`` sizes (hidden 128, 8 couplings per level, batch 64) takes ~31 ms.

An H100 has the same launch-bound step time (its lower memory bandwidth does not matter for these models), so the
budgets below are H200 eager figures; ``torch.compile`` (``fit(compile=...)``) can only shorten them. A T4 has ~8x
less float32 throughput than an H200, so the widest models become compute-bound there: the Glow step above needs
~150 GFLOP (1.2 GFLOP per image, forward and backward), about 40 ms at half of a T4's peak on top of a slower host,
which keeps a T4 within ~3-6x of the H200 times, 15-30 minutes per chapter.
"""

from __future__ import annotations

import os
import platform
from types import SimpleNamespace
from typing import Literal

import torch

from flowlib.device import default_device

__all__ = ["SCALES", "SIZES", "current_scale", "sizes", "describe_run"]

Scale = Literal["quick", "standard", "gpu", "full"]
SCALES: tuple[Scale, ...] = ("quick", "standard", "gpu", "full")

# chapter -> scale -> sizes. Every chapter keeps its own entry; keys are whatever that chapter needs.
SIZES: dict[str, dict[Scale, dict]] = {
    "00_change_of_variables": {
        "quick": dict(toy_samples=2_000, fit_steps=150, histogram_samples=20_000),
        "standard": dict(toy_samples=20_000, fit_steps=2_000, histogram_samples=200_000),
        # 6 couplings of a small MLP: ~4 ms per step on a GPU, 5,000 steps in ~20 s
        "gpu": dict(toy_samples=50_000, fit_steps=5_000, histogram_samples=1_000_000),
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
        # measured on one CPU thread: NICE 2 min, RealNVP 18 min, mask comparison 9 x 10-26 s, toys 6 x ~5 s: 23 min
        "standard": dict(
            toy_samples=20_000, toy_steps=1_200, toy_batch_size=256, toy_couplings=8, toy_hidden=64,
            train_subset=None, test_subset=None, batch_size=64, lr=1e-3, warmup_steps=200,
            nice_hidden=128, nice_hidden_layers=5, nice_epochs=10,
            realnvp_hidden=32, realnvp_blocks=1, realnvp_steps=3_500,
            mask_hidden=16, mask_couplings=4, mask_steps=400, mask_seeds=3, quality_images=1_000,
        ),
        # 6 toy flows x 3,000 steps (~4 ms each: 70 s), NICE 20 epochs of 469 steps (~5 ms: 45 s; wider MLPs would
        # exceed the 5 MB checkpoint limit, 1000 x 5 is 89 MB), RealNVP 2,000 steps (~16 coupling ResNets, ~60 ms:
        # 120 s), two mask models 1,000 steps (~30 ms: 60 s): ~5 minutes
        "gpu": dict(
            toy_samples=50_000, toy_steps=3_000, toy_batch_size=512, toy_couplings=8, toy_hidden=128,
            train_subset=None, test_subset=None, batch_size=128, lr=1e-3, warmup_steps=200,
            nice_hidden=128, nice_hidden_layers=5, nice_epochs=20,
            realnvp_hidden=32, realnvp_blocks=2, realnvp_steps=2_000,
            mask_hidden=32, mask_couplings=4, mask_steps=1_000, mask_seeds=3, quality_images=10_000,
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
        # measured on one CPU thread: main Glow 21 min, ablation 3 mixings x 3 seeds x 37-74 s: 28 min
        "standard": dict(
            train_subset=None, test_subset=None, batch_size=64, lr=1e-3, warmup_steps=200, max_grad_norm=50.0,
            ablation_mixings=("reverse", "householder", "lu"), ablation_num_steps=4, ablation_hidden=64,
            ablation_steps=400, ablation_seeds=3, main_num_steps=6, main_hidden=64, main_steps=10_000,
            quality_images=1_000,
        ),
        # ablation: 4 Glows with K=4 (~30 ms per step) x 1,000 steps: 120 s; main Glow K=10 (~66 ms) x 2,000 steps:
        # 130 s (4.3 epochs; 150 s of the hidden-256 model gave 1.55 bits/dim). Hidden 192 keeps the checkpoint
        # at 4.3 MB (1.07M parameters; 256 would be 7 MB) for about the same step time.
        "gpu": dict(
            train_subset=None, test_subset=None, batch_size=128, lr=1e-3, warmup_steps=200, max_grad_norm=50.0,
            ablation_mixings=("reverse", "permutation", "householder", "lu"), ablation_num_steps=4,
            ablation_hidden=128, ablation_steps=1_000, ablation_seeds=3, main_num_steps=10, main_hidden=192,
            main_steps=2_000, quality_images=10_000,
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
        # the full widths for a tenth of the full steps: chosen by reasoning (three PIE models, the WAE and the VAE
        # at a few tens of ms per step on one GPU), not yet measured on one.
        "gpu": dict(
            train_subset=None, test_subset=None, pie_batch_size=64, pie_steps=3_000, pie_lr=1e-3,
            hidden_channels=64, num_residual_blocks=1, hidden_features=256,
            ae_batch_size=100, ae_steps=3_000, ae_lr=1e-3, ae_base_channels=64,
            num_sharpness_samples=10_000, num_umap_points=10_000, toy_steps=2_000,
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
            max_steps=30, batch_size=32, lr=3e-3, warmup_steps=0, train_subset=2_048, eval_images=64, test_images=64,
            determinism_images=16, mosaic_side=8,
        ),
        # four IDFs (mixture and single-logistic factor-out priors, MNIST and Fashion-MNIST), 61-92 s each on one
        # CPU thread: 5 min
        "standard": dict(
            hidden_channels=40, num_couplings=4, num_levels=2, num_components=5, factor_components=3, epochs=1,
            max_steps=1_500, batch_size=32, lr=3e-3, warmup_steps=0, train_subset=None, eval_images=1_000,
            test_images=10_000, determinism_images=256, mosaic_side=10,
        ),
        # the paper's widths (436k parameters, 1.7 MB); ~31 ms per step at batch 64: 4,000 steps (4.3 epochs) in
        # ~125 s per dataset, both in ~4 minutes. lr 1e-3 as in the paper, a short warm-up, cosine to zero.
        "gpu": dict(
            hidden_channels=128, num_couplings=8, num_levels=2, num_components=5, factor_components=5, epochs=5,
            max_steps=4_000, batch_size=64, lr=1e-3, warmup_steps=200, train_subset=None, eval_images=10_000,
            test_images=10_000, determinism_images=1_000, mosaic_side=10,
        ),
        "full": dict(
            hidden_channels=128, num_couplings=8, num_levels=2, num_components=5, factor_components=5, epochs=100,
            max_steps=None, batch_size=64, lr=1e-3, warmup_steps=0, train_subset=None, eval_images=10_000,
            test_images=10_000, determinism_images=1_000, mosaic_side=10,
        ),
    },
}


def current_scale() -> Scale:
    """The active scale: ``FLOWLIB_SCALE`` if set, else ``gpu`` with CUDA and ``standard`` without."""
    value = os.environ.get("FLOWLIB_SCALE", "").strip().lower()
    if not value:
        return "gpu" if torch.cuda.is_available() else "standard"
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
