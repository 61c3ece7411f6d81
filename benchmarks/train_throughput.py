"""Training throughput of flowlib's Glow against normflows' Glow, same architecture, measured in the same run.

One training step = log-likelihood of a batch (forward), backward, Adam update. Both models are multi-scale Glows
for ``(1, 28, 28)`` images: per level a squeeze, ``K`` steps of [ActNorm, LU 1x1 convolution, affine coupling whose
network is conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero conv3x3 on half of the channels], and a split between levels.
Differences that remain: normflows scales with ``sigmoid(raw + 2)`` and has a learned per-channel Gaussian for each
level; flowlib scales with ``exp(2 tanh(raw / 2))`` and is run here with ``N(0, I)`` priors (``learned_prior=False``).
Both parameter counts are printed.

flowlib's step is :class:`flowlib.train.TrainStep`, the step :func:`flowlib.train.fit` takes (Adam; fused on CUDA),
eager and, with ``--compile``, through ``torch.compile`` (on CUDA by default with ``mode="reduce-overhead"``: CUDA
graphs replay each forward and backward pass with one launch). normflows' step is the plain eager loop its examples
use. Two configurations (``--config``): ``small`` (batch 64, L=2, K=4, hidden 64) and ``large`` (batch 128, L=2,
K=10, hidden 256, 1.74M parameters).

The models alternate block by block (so all see the same machine load); each block is ``--block`` steps, timed
with the device synchronised before and after; after ``--warmup`` untimed blocks (which include compilation),
``--steps`` blocks are timed and the median step time gives images/s. The ratios printed are flowlib / normflows
(> 1: flowlib is faster).

Usage::

    python benchmarks/train_throughput.py                           # CPU, 1 thread, both configurations
    python benchmarks/train_throughput.py --device cuda             # + flowlib compiled (reduce-overhead)
    python benchmarks/train_throughput.py --device cuda --config large --batch-size 512
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
from flowlib.train import TrainStep, default_optimizer

__all__ = ["CONFIGS", "build_flowlib", "build_normflows", "main"]

IMAGE_SHAPE = (1, 28, 28)
CONFIGS = {  # name -> (batch size, L, K, hidden channels)
    "small": (64, 2, 4, 64),
    "large": (128, 2, 10, 256),
}

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


def _reference_step(log_prob: LogProb, optimizer: torch.optim.Optimizer) -> Callable[[Tensor], Tensor]:
    """normflows' training step, as its examples write it."""

    def step(x: Tensor) -> Tensor:
        loss = -log_prob(x).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_config(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Time one configuration; returns images/s per model and the ratios to normflows."""
    batch_size, num_levels, num_steps, hidden = CONFIGS[name]
    batch_size = args.batch_size or batch_size
    torch.manual_seed(0)
    x = torch.rand(batch_size, *IMAGE_SHAPE, device=device)  # throughput does not depend on the pixel values
    steps: dict[str, Callable[[Tensor], Tensor]] = {}
    variants = {"flowlib": False, **({f"flowlib {args.compile}": args.compile} if args.compile != "none" else {})}
    for label, compile_mode in variants.items():
        model, log_prob = build_flowlib(num_levels, num_steps, hidden)
        model.to(device).train()
        steps[label] = TrainStep(lambda batch, log_prob=log_prob: -log_prob(batch).mean(), model.parameters(),
                                 default_optimizer(model.parameters(), 1e-3, device),
                                 compile=compile_mode, check_every_step=False)
        parameters = _count(model)
    reference, reference_log_prob = build_normflows(num_levels, num_steps, hidden)
    reference.to(device).train()
    with torch.no_grad():
        reference_log_prob(x)  # normflows' data-dependent ActNorm initialisation, outside the timing
    steps["normflows"] = _reference_step(reference_log_prob, torch.optim.Adam(reference.parameters(), lr=1e-3))
    print(f"\n[{name}] batch {batch_size} x {IMAGE_SHAPE}, L={num_levels}, K={num_steps}, hidden={hidden}; "
          f"parameters: flowlib {parameters:,}, normflows {_count(reference):,}")

    times: dict[str, list[float]] = {label: [] for label in steps}
    last_loss: dict[str, Tensor] = {}
    for round_index in range(args.warmup + args.steps):
        for label, step in steps.items():  # alternate, so every model sees the same machine load
            _synchronize(device)
            start = time.perf_counter()
            for _ in range(args.block):
                last_loss[label] = step(x)
            _synchronize(device)
            if round_index >= args.warmup:
                times[label].append((time.perf_counter() - start) / args.block)
    for label, loss in last_loss.items():
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{label}: non-finite loss {loss.item()} during the benchmark")

    throughput = {label: batch_size / statistics.median(samples) for label, samples in times.items()}
    for label, samples in times.items():
        print(f"  {label:28s} {statistics.median(samples) * 1e3:9.2f} ms/step  {throughput[label]:10.1f} images/s")
    results = {f"{label} images/s": value for label, value in throughput.items()}
    for label in variants:
        ratio = throughput[label] / throughput["normflows"]
        results[f"{label} / normflows"] = ratio
        print(f"  ratio {label} / normflows: {ratio:.2f}x ({'faster' if ratio >= 1 else 'slower'})")
    return results


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--config", choices=(*CONFIGS, "both"), default="both")
    parser.add_argument("--batch-size", type=int, help="override the configuration's batch size")
    parser.add_argument("--compile", help="torch.compile mode for an extra flowlib run, or none (default: "
                                          "reduce-overhead on CUDA, none on CPU, where compiling takes minutes)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU (default 1)")
    parser.add_argument("--warmup", type=int, help="untimed blocks per model (default 3 on CPU, 5 on CUDA)")
    parser.add_argument("--steps", type=int, default=10, help="timed blocks per model (default 10)")
    parser.add_argument("--block", type=int, help="steps per timed block (default 1 on CPU, 10 on CUDA)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    on_cuda = device.type == "cuda"
    args.compile = args.compile or ("reduce-overhead" if on_cuda else "none")
    args.warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 3)
    args.block = args.block or (10 if on_cuda else 1)

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)  # normflows calls the deprecated torch.lu
    where = torch.cuda.get_device_name(device) if on_cuda else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"training throughput on {where}, torch {torch.__version__}; median of {args.steps} blocks of "
          f"{args.block} step(s) after {args.warmup} warm-up blocks; flowlib compile: {args.compile}")
    configs = list(CONFIGS) if args.config == "both" else [args.config]
    return {name: run_config(name, args, device) for name in configs}


if __name__ == "__main__":
    main()
