"""flowlib, zuko and normflows side by side on one conditional 2-D density: lines, test NLL, ms/step, sampling.

The task: two interleaved half-moons, the context a one-hot label saying which moon (``c`` of shape ``(B, 2)``);
each library fits ``p(x | c)`` on the same 500 batches of 256 points (Adam, learning rate 1e-3) and is scored on
the same 4,096 test points. Three model families, built as alike as each library allows:

* ``affine``: 8 affine couplings, conditioners MLPs of two hidden layers of 64 units (flowlib, zuko; normflows'
  affine coupling takes no context, so it sits this one out);
* ``spline``: 4 rational-quadratic spline layers of 8 bins, two hidden layers of 64 units (flowlib and normflows:
  couplings with linear tails on ``[-3, 3]``; zuko's ``NSF`` is autoregressive, with tails on ``[-5, 5]``);
* ``maf``: 5 masked affine autoregressive layers, MADEs of two hidden layers of 64 units (normflows' MADE uses
  residual blocks).

Columns: ``lines`` is the number of code lines of the function that builds, trains and exposes the model for that
library (below, counted from its source); ``NLL`` the test negative log-likelihood in nats (lower is better);
``ms/step`` the mean training step (forward, backward, Adam); ``sample+logp`` the time to draw 10,000 samples,
each with its own context, together with their log-densities (best of 3, no gradients). The libraries are run one
after the other on the same thread, so their timings are comparable within one run.

Usage::

    python benchmarks/conditional_2d.py               # 1 thread, 500 steps
    python benchmarks/conditional_2d.py --steps 50    # a quick check
"""

from __future__ import annotations

import argparse
import inspect
import math
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["conditional_moons", "main"]

Batches = list[tuple[Tensor, Tensor]]
LogProb = Callable[[Tensor, Tensor], Tensor]  # (x, c) -> (B,)
SampleLogProb = Callable[[Tensor], tuple[Tensor, Tensor]]  # c (N, 2) -> x (N, 2), log p (N,)


def conditional_moons(num_samples: int, seed: int) -> tuple[Tensor, Tensor]:
    """``(x, c)``: points ``(N, 2)`` on two noisy half-moons and the one-hot moon label ``(N, 2)``."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, num_samples)
    angle = rng.uniform(0, np.pi, num_samples)
    upper = np.stack([np.cos(angle), np.sin(angle)], 1)
    lower = np.stack([1 - np.cos(angle), 0.5 - np.sin(angle)], 1)
    points = np.where(label[:, None] == 0, upper, lower) + 0.1 * rng.standard_normal((num_samples, 2))
    points = 2.0 * (points - np.array([0.5, 0.25]))  # centred, about [-3, 3]
    return torch.as_tensor(points, dtype=torch.float32), torch.eye(2)[torch.as_tensor(label)]


# --- one function per library and family: build, train on `batches`, return log_prob and sample_and_log_prob -----


def flowlib_affine(batches: Batches) -> tuple[LogProb, SampleLogProb]:
    from flowlib.models import realnvp_vector
    from flowlib.train import fit

    flow = realnvp_vector(2, num_couplings=8, hidden_features=64, context_features=2)
    fit(flow, lambda flow, batch: -flow.log_prob(*batch).mean(), batches, device="cpu", progress=False)
    return flow.log_prob, lambda c: flow.sample_and_log_prob(context=c)


def flowlib_spline(batches: Batches) -> tuple[LogProb, SampleLogProb]:
    from flowlib.models import neural_spline_flow
    from flowlib.train import fit

    flow = neural_spline_flow(2, num_couplings=4, num_bins=8, hidden_features=64, context_features=2)
    fit(flow, lambda flow, batch: -flow.log_prob(*batch).mean(), batches, device="cpu", progress=False)
    return flow.log_prob, lambda c: flow.sample_and_log_prob(context=c)


def flowlib_maf(batches: Batches) -> tuple[LogProb, SampleLogProb]:
    from flowlib.models import maf
    from flowlib.train import fit

    flow = maf(2, num_layers=5, hidden_features=64, context_features=2)
    fit(flow, lambda flow, batch: -flow.log_prob(*batch).mean(), batches, device="cpu", progress=False)
    return flow.log_prob, lambda c: flow.sample_and_log_prob(context=c)


def _zuko(flow, batches: Batches) -> tuple[LogProb, SampleLogProb]:
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
    for x, c in batches:
        loss = -flow(c).log_prob(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return lambda x, c: flow(c).log_prob(x), lambda c: flow(c).rsample_and_log_prob()


def zuko_affine(batches: Batches) -> tuple[LogProb, SampleLogProb]:
    import zuko

    flow = zuko.flows.RealNVP(2, context=2, transforms=8, hidden_features=(64, 64))
    return _zuko(flow, batches)


def zuko_spline(batches: Batches) -> tuple[LogProb, SampleLogProb]:
    import zuko

    flow = zuko.flows.NSF(2, context=2, transforms=4, bins=8, hidden_features=(64, 64))
    return _zuko(flow, batches)


def zuko_maf(batches: Batches) -> tuple[LogProb, SampleLogProb]:
    import zuko

    flow = zuko.flows.MAF(2, context=2, transforms=5, hidden_features=(64, 64))
    return _zuko(flow, batches)


def _normflows(layers: list, batches: Batches) -> tuple[LogProb, SampleLogProb]:
    import normflows as nf

    model = nf.ConditionalNormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for x, c in batches:
        loss = model.forward_kld(x, c)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return lambda x, c: model.log_prob(x, c), lambda c: model.sample(len(c), context=c)


def normflows_spline(batches: Batches) -> tuple[LogProb, SampleLogProb]:
    import normflows as nf

    layers = [nf.flows.CoupledRationalQuadraticSpline(2, 2, 64, num_context_channels=2, num_bins=8,
                                                      reverse_mask=index % 2 == 1) for index in range(4)]
    return _normflows(layers, batches)


def normflows_maf(batches: Batches) -> tuple[LogProb, SampleLogProb]:
    import normflows as nf

    layers = []
    for _ in range(5):
        layers += [nf.flows.MaskedAffineAutoregressive(2, 64, context_features=2, num_blocks=2), nf.flows.Permute(2)]
    return _normflows(layers, batches)


RUNS = {
    "affine": {"flowlib": flowlib_affine, "zuko": zuko_affine},
    "spline": {"flowlib": flowlib_spline, "zuko": zuko_spline, "normflows": normflows_spline},
    "maf": {"flowlib": flowlib_maf, "zuko": zuko_maf, "normflows": normflows_maf},
}


def count_lines(function: Callable) -> int:
    """Code lines a user writes for ``function``: its body and the shared helper it calls, without the ``def`` line,
    imports, blank lines or comments."""
    sources = [function]
    for helper in (_zuko, _normflows):
        if helper.__name__ + "(" in inspect.getsource(function):
            sources.append(helper)
    total = 0
    for source in sources:
        lines = inspect.getsource(source).splitlines()[1:]
        total += sum(1 for line in lines if line.strip() and not line.strip().startswith(("#", "import", "from"))
                     and not line.strip().startswith(("return _zuko", "return _normflows")))
    return total


def _best_of(repeats: int, function: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    x_train, c_train = conditional_moons(args.steps * args.batch_size, seed=args.seed)
    batches = list(zip(x_train.split(args.batch_size), c_train.split(args.batch_size)))
    x_test, c_test = conditional_moons(4096, seed=args.seed + 1)
    c_samples = conditional_moons(args.samples, seed=args.seed + 2)[1]
    import normflows  # noqa: F401 - imported before timing, as are flowlib's and zuko's modules
    import zuko  # noqa: F401

    import flowlib.models  # noqa: F401
    import flowlib.train  # noqa: F401

    for runs in RUNS.values():  # warm-up: one-time costs (lazy imports, first kernels) stay out of the timings
        for run in runs.values():
            run(batches[:2])
    print(f"conditional two moons, {args.steps} steps of {args.batch_size}, {torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}")
    header = f"{'family':<8} {'library':<10} {'lines':>5} {'NLL':>7} {'ms/step':>8} {'sample+logp (ms)':>17}"
    print(header)
    print("-" * len(header))
    for family, runs in RUNS.items():
        for library, run in runs.items():
            torch.manual_seed(args.seed)
            start = time.perf_counter()
            log_prob, sample_and_log_prob = run(batches)
            ms_per_step = 1e3 * (time.perf_counter() - start) / args.steps
            with torch.no_grad():
                nll = -log_prob(x_test, c_test).mean().item()
                seconds = _best_of(3, lambda: sample_and_log_prob(c_samples))
                samples, sample_log_prob = sample_and_log_prob(c_samples)
            assert samples.shape == (args.samples, 2) and sample_log_prob.shape == (args.samples,)
            nll_text = f"{nll:7.3f}" if math.isfinite(nll) else "    nan"
            print(f"{family:<8} {library:<10} {count_lines(run):>5} {nll_text} {ms_per_step:8.2f} "
                  f"{1e3 * seconds:17.1f}")


if __name__ == "__main__":
    main()
