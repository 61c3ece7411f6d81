"""Training throughput of flowlib's Glow against normflows' Glow, same architecture, measured in the same run.

One training step = log-likelihood of a batch (forward), backward, Adam update. Both models are multi-scale Glows
for ``(1, 28, 28)`` images: per level a squeeze, ``K`` steps of [ActNorm, LU 1x1 convolution, affine coupling whose
network is conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero conv3x3 on half of the channels], and a split between levels.
Differences that remain: normflows scales with ``sigmoid(raw + 2)`` and has a learned per-channel Gaussian for each
level; flowlib scales with ``exp(2 tanh(raw / 2))`` and is run here with ``N(0, I)`` priors (``learned_prior=False``).
Both parameter counts are printed.

The two models alternate step by step (so both see the same machine load); each gets ``--warmup`` untimed steps and
``--steps`` timed steps; the median step time gives images/s. The ratio printed is ours / normflows (> 1: flowlib is
faster).

Usage::

    python benchmarks/train_throughput.py                 # defaults: 1 thread, batch 64, L=2, K=4, hidden 64
    python benchmarks/train_throughput.py --threads 4 --steps 50
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from flowlib.models.glow import glow

__all__ = ["build_flowlib", "build_normflows", "main"]

IMAGE_SHAPE = (1, 28, 28)


LogProb = Callable[[Tensor], Tensor]


def build_flowlib(num_levels: int, num_steps: int, hidden_channels: int) -> tuple[nn.Module, LogProb]:
    """flowlib's Glow and its per-example log-likelihood function."""
    model = glow(
        IMAGE_SHAPE,
        num_levels=num_levels,
        num_steps=num_steps,
        hidden_channels=hidden_channels,
        mixing="lu",
        logit_alpha=None,
        learned_prior=False,
    )
    return model, model.log_prob


def build_normflows(num_levels: int, num_steps: int, hidden_channels: int) -> tuple[nn.Module, LogProb]:
    """normflows' Glow (its ``MultiscaleFlow`` example configured like ours) and its log-likelihood function.

    normflows composes latent -> data, so the levels are listed from the coarsest (index 0) to the finest, each as
    its steps followed by a ``Squeeze`` (which un-squeezes in that direction).
    """
    import normflows as nf

    channels, height, width = IMAGE_SHAPE
    bases, flows, merges = [], [], []
    for index in range(num_levels):
        level_channels = channels * 2 ** (num_levels + 1 - index)  # channels after this level's squeeze
        steps = [
            nf.flows.GlowBlock(level_channels, hidden_channels, split_mode="channel", scale=True, use_lu=True)
            for _ in range(num_steps)
        ]
        flows.append(steps + [nf.flows.Squeeze()])
        if index > 0:
            merges.append(nf.flows.Merge())
            factor = 2 ** (num_levels - index)
            latent_shape = (channels * factor, height // factor, width // factor)
        else:
            factor = 2**num_levels
            latent_shape = (channels * 2 * factor, height // factor, width // factor)
        bases.append(nf.distributions.GlowBase(latent_shape))
    model = nf.MultiscaleFlow(bases, flows, merges, class_cond=False)
    return model, lambda x: model.log_prob(x, None)


def _count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def _step(model: nn.Module, log_prob: LogProb, optimizer: torch.optim.Optimizer, x: Tensor) -> float:
    """One timed training step; returns its wall time in seconds."""
    start = time.perf_counter()
    loss = -log_prob(x).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    elapsed = time.perf_counter() - start
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{type(model).__name__}: non-finite loss {loss.item()} during the benchmark")
    return elapsed


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--levels", type=int, default=2, help="L (28x28 allows at most 2)")
    parser.add_argument("--steps-per-level", type=int, default=4, help="K")
    parser.add_argument("--hidden", type=int, default=64, help="hidden channels of each coupling network")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)  # normflows calls the deprecated torch.lu
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, *IMAGE_SHAPE)  # throughput does not depend on the pixel values
    models = {
        "flowlib": build_flowlib(args.levels, args.steps_per_level, args.hidden),
        "normflows": build_normflows(args.levels, args.steps_per_level, args.hidden),
    }
    optimizers = {name: torch.optim.Adam(model.parameters(), lr=1e-3) for name, (model, _) in models.items()}
    for name, (model, log_prob) in models.items():
        model.train()
        with torch.no_grad():
            log_prob(x)  # data-dependent ActNorm initialisation, outside the timing
        print(f"{name:10s} parameters: {_count(model):,}")

    times: dict[str, list[float]] = {name: [] for name in models}
    for round_index in range(args.warmup + args.steps):
        for name, (model, log_prob) in models.items():  # alternate, so both see the same machine load
            elapsed = _step(model, log_prob, optimizers[name], x)
            if round_index >= args.warmup:
                times[name].append(elapsed)

    print(
        f"batch {args.batch_size} x {IMAGE_SHAPE}, L={args.levels}, K={args.steps_per_level}, hidden={args.hidden}, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}; median of {args.steps} steps after "
        f"{args.warmup} warm-up steps"
    )
    throughput = {}
    for name, samples in times.items():
        median = statistics.median(samples)
        throughput[name] = args.batch_size / median
        print(f"{name:10s} {median * 1e3:8.1f} ms/step  {throughput[name]:8.1f} images/s")
    ratio = throughput["flowlib"] / throughput["normflows"]
    print(f"ratio flowlib / normflows: {ratio:.2f}x ({'faster' if ratio >= 1 else 'slower'})")
    return {**{f"{name}_images_per_second": value for name, value in throughput.items()}, "ratio": ratio}


if __name__ == "__main__":
    main()
