"""A small training loop shared by every model, plus checkpoints that notebooks load by default.

* :func:`fit` runs a loss over a data loader with Adam (or a given optimiser), gradient clipping, a tqdm bar and a
  clear :class:`NonFiniteLossError` naming the step at which the loss stopped being finite.
* :func:`save_checkpoint`, :func:`load_checkpoint` and :func:`train_or_load` (what notebooks call: load the
  checkpoint for the active scale if there is one, otherwise, or with ``FLOWLIB_RETRAIN=1``, train and save) live
  in :mod:`flowlib.checkpoints`, which documents where checkpoints are found; they are re-exported here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flowlib.checkpoints import CheckpointError, checkpoint_metadata, load_checkpoint, save_checkpoint, train_or_load
from flowlib.device import default_device

__all__ = [
    "CheckpointError",
    "History",
    "NonFiniteLossError",
    "check_finite",
    "checkpoint_metadata",
    "default_device",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
    "seed_everything",
    "train_or_load",
]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and suggests what to try."""


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); returns a CPU ``torch.Generator`` seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def check_finite(loss: Tensor, step: int) -> None:
    """Raise :class:`NonFiniteLossError` if ``loss`` is NaN or inf (use in hand-written loops too)."""
    if not torch.isfinite(loss).all():
        raise NonFiniteLossError(
            f"loss is {loss.detach().flatten()[0].item()} at step {step}: lower the learning rate, clip gradients "
            "(max_grad_norm), or check the data range and dequantization"
        )


@dataclass
class History:
    """Per-step training losses and per-epoch evaluation values recorded by :func:`fit`."""

    train_loss: list[float] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"train_loss": self.train_loss, "eval_loss": self.eval_loss, "seconds": self.seconds}

    def curve(self, num_points: int = 10, decimals: int = 4) -> list[float]:
        """The training loss as about ``num_points`` means over consecutive chunks of steps (for checkpoint metadata).

        Example:
            >>> History(train_loss=[4.0, 2.0, 3.0, 1.0]).curve(num_points=2)
            [3.0, 2.0]
        """
        losses = self.train_loss
        chunk = max(1, len(losses) // num_points)
        return [round(sum(losses[i : i + chunk]) / len(losses[i : i + chunk]), decimals)
                for i in range(0, len(losses), chunk)]


def fit(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    data: Iterable,
    *,
    epochs: int = 1,
    max_steps: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    max_grad_norm: float | None = None,
    scheduler: Any | None = None,
    eval_fn: Callable[[nn.Module], float] | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    desc: str = "train",
) -> History:
    """Minimise ``loss_fn(model, batch)`` over ``data`` for ``epochs`` passes (or ``max_steps`` steps).

    Arguments:
        model: the module to train (moved to ``device``).
        loss_fn: returns a scalar loss for one batch; the batch is moved to the model's device first.
        data: an iterable of batches (tensors, or tuples/lists of tensors), e.g. a ``DataLoader``.
        optimizer: defaults to ``Adam(model.parameters(), lr)``.
        max_grad_norm: clip the global gradient norm to this value if given.
        scheduler: stepped once per optimisation step if given.
        eval_fn: called with the model in eval mode after each epoch; its value is recorded in ``eval_loss``.
    Returns:
        the :class:`History` of losses.
    """
    try:  # the progress bar is optional (the ``progress`` extra); without tqdm the loop runs silently
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = _no_progress_bar

    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    history = History()
    start = time.perf_counter()
    step = 0
    for epoch in range(epochs):
        model.train()
        bar = tqdm(data, desc=f"{desc} {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for batch in bar:
            loss = loss_fn(model, _to_device(batch, device))
            check_finite(loss, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            history.train_loss.append(loss.item())
            bar.set_postfix(loss=f"{history.train_loss[-1]:.4g}")
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        if eval_fn is not None:
            model.eval()
            with torch.no_grad():
                history.eval_loss.append(float(eval_fn(model)))
        if max_steps is not None and step >= max_steps:
            break
    model.eval()
    history.seconds = time.perf_counter() - start
    return history


class _no_progress_bar:  # noqa: N801 - stands in for the tqdm class
    """What :func:`fit` iterates through when tqdm is not installed: the data itself, no bar."""

    def __init__(self, iterable: Iterable, **kwargs: Any):
        self.iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self.iterable)

    def set_postfix(self, **kwargs: Any) -> None:
        pass


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    return batch
