"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node=2``: fit a small flow with ActNorm through
train_or_load, then write this process's parameters and whether it saved the checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from flowlib import checkpoints, distributed, train
from flowlib.distributions import StandardNormal
from flowlib.models.flow import Flow
from flowlib.nets import MLP
from flowlib.transforms import ActNorm, AffineCoupling, Compose, Reverse, half_mask


def build() -> Flow:
    torch.manual_seed(0)
    layers = []
    for _ in range(2):
        layers += [ActNorm(4), AffineCoupling(half_mask(4), MLP(4, 8, hidden_features=16, zero_init_last=False)),
                   Reverse()]
    return Flow(Compose(*layers), StandardNormal(4))


def batches() -> list[torch.Tensor]:
    """Six batches of 16 and one of 9 (not a multiple of the number of processes)."""
    generator = torch.Generator().manual_seed(1)
    data = 2.0 + 3.0 * torch.randn(105, 4, generator=generator)
    return list(data.split(16))


def train_flow(model: Flow) -> dict:
    history = train.fit(model, lambda m, x: -m.log_prob(x).mean(), batches(), epochs=2, lr=1e-2,
                        max_grad_norm=5.0, device="cpu", progress=False)
    return {"train_loss": history.train_loss}


def main(out: Path) -> None:
    saved_by: list[int] = []
    save = checkpoints.save_checkpoint

    def recording_save(*args, **kwargs):
        saved_by.append(distributed.rank())
        return save(*args, **kwargs)

    checkpoints.save_checkpoint = recording_save
    model, metadata = checkpoints.train_or_load(build(), "ddp-demo", train_flow, retrain=True, save=True,
                                          directory=out / "checkpoints")
    torch.save({"state": model.state_dict(), "train_loss": metadata["train_loss"], "saved_by": saved_by,
                "world_size": distributed.world_size()}, out / f"rank{distributed.rank()}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
