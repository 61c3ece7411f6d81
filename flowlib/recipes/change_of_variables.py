"""Chapter 0, the change-of-variables formula: one checkpoint, a small RealNVP-style flow fitted to two moons.

The flow is six affine couplings on ``(B, 2)`` points, each followed by a swap of the two coordinates, over a
standard normal base; it is fitted by maximum likelihood on ``toy_samples`` points of :func:`flowlib.data.toy_2d`
``("moons", seed=0)`` with batches of 256 drawn with replacement.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from flowlib.data import toy_2d
from flowlib.distributions import StandardNormal
from flowlib.models.flow import Flow
from flowlib.nets import MLP
from flowlib.recipes import Recipe
from flowlib.train import fit
from flowlib.transforms import AffineCoupling, Compose, Reverse, half_mask

__all__ = ["CHAPTER", "moons_flow", "recipes", "train_moons_flow"]

CHAPTER = "00_change_of_variables"
BATCH_SIZE = 256


def moons_flow(num_couplings: int = 6, hidden_features: int = 64) -> Flow:
    """The chapter's flow: ``num_couplings`` x (affine coupling on a half mask, swap), base ``N(0, I)``.

    Example:
        >>> moons_flow().log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
    """
    layers = []
    for _ in range(num_couplings):
        layers += [AffineCoupling(half_mask(2), MLP(2, 4, hidden_features=hidden_features)), Reverse()]
    return Flow(Compose(*layers), StandardNormal(2))


def train_moons_flow(model: Flow, S: SimpleNamespace, device: torch.device) -> dict:
    """Fit ``model`` to the moons for ``S.fit_steps`` steps (Adam 2e-3, gradients clipped at 10)."""
    points = toy_2d("moons", S.toy_samples, seed=0)
    generator = torch.Generator().manual_seed(0)
    batches = [points[torch.randint(len(points), (BATCH_SIZE,), generator=generator)] for _ in range(S.fit_steps)]
    history = fit(model, lambda m, x: -m.log_prob(x).mean(), batches, lr=2e-3, max_grad_norm=10.0, device=device)
    return {"seconds": history.seconds, "steps": len(history.train_loss),
            "final_train_nll": sum(history.train_loss[-50:]) / len(history.train_loss[-50:]),
            "curve": history.train_loss[:: max(1, len(history.train_loss) // 50)], "device": device.type}


def recipes(S: SimpleNamespace, device: torch.device) -> dict[str, Recipe]:
    """The chapter's one recipe, ``moons_flow``."""

    def build() -> Flow:
        torch.manual_seed(0)
        return moons_flow()

    return {"moons_flow": Recipe(CHAPTER, "moons_flow", build, lambda model: train_moons_flow(model, S, device))}
