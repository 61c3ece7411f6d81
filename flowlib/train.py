"""A small training loop shared by every model, plus checkpoints that notebooks load by default.

* :func:`fit` runs a loss over a data loader with Adam (or a given optimiser), gradient clipping, a tqdm bar and a
  clear :class:`NonFiniteLossError` naming the step at which the loss stopped being finite.
* :func:`save_checkpoint` / :func:`load_checkpoint` store ``state_dict`` files whose sha256 is recorded in
  ``checkpoints/MANIFEST.json``; loading verifies the hash and uses ``torch.load(weights_only=True)``.
* :func:`train_or_load` is what notebooks call: load the committed checkpoint for the active scale if there is
  one, otherwise (or with ``FLOWLIB_RETRAIN=1``) train and save.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flowlib.device import default_device
from flowlib.scale import current_scale

__all__ = [
    "CHECKPOINT_DIR",
    "CheckpointError",
    "History",
    "NonFiniteLossError",
    "check_finite",
    "default_device",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
    "seed_everything",
    "train_or_load",
]

CHECKPOINT_DIR = Path(os.environ.get("FLOWLIB_CHECKPOINT_DIR", Path(__file__).resolve().parent.parent / "checkpoints"))


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and suggests what to try."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing from the manifest, or its bytes do not match the recorded sha256."""


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


# --- checkpoints -----------------------------------------------------------------------------------------------


def _manifest_path(directory: Path) -> Path:
    return directory / "MANIFEST.json"


def _read_manifest(directory: Path) -> dict[str, dict[str, Any]]:
    path = _manifest_path(directory)
    return json.loads(path.read_text()) if path.exists() else {}


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive OS-level lock on ``path`` (released when the file is closed, even if the process dies)."""
    with open(path, "a+") as handle:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_checkpoint(
    model: nn.Module, name: str, *, metadata: dict[str, Any] | None = None, directory: Path | None = None
) -> Path:
    """Save ``model.state_dict()`` as ``<directory>/<name>.pt`` and record its sha256 (and ``metadata``) in the
    manifest. Returns the file's path."""
    directory = Path(directory or CHECKPOINT_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.pt"
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    torch.save(state, path)
    entry = {"file": path.name, "sha256": _sha256(path), "bytes": path.stat().st_size, **(metadata or {})}
    # Several trainings may finish at once: lock the manifest for the read-modify-write and replace it atomically.
    with _exclusive_lock(directory / ".MANIFEST.lock"):
        manifest = _read_manifest(directory)
        manifest[name] = entry
        temporary = _manifest_path(directory).with_suffix(".json.tmp")
        temporary.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
        os.replace(temporary, _manifest_path(directory))
    return path


def checkpoint_metadata(name: str, directory: Path | None = None) -> dict[str, Any]:
    """The manifest entry of checkpoint ``name`` (sha256, size and whatever metadata was saved with it)."""
    manifest = _read_manifest(Path(directory or CHECKPOINT_DIR))
    if name not in manifest:
        raise CheckpointError(f"no checkpoint named {name!r} in the manifest; train it with FLOWLIB_RETRAIN=1")
    return manifest[name]


def load_checkpoint(model: nn.Module, name: str, *, directory: Path | None = None) -> nn.Module:
    """Load checkpoint ``name`` into ``model`` after checking its sha256 against the manifest."""
    directory = Path(directory or CHECKPOINT_DIR)
    entry = checkpoint_metadata(name, directory)
    path = directory / entry["file"]
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} is missing; retrain with FLOWLIB_RETRAIN=1")
    digest = _sha256(path)
    if digest != entry["sha256"]:
        raise CheckpointError(
            f"checkpoint {path} has sha256 {digest[:12]}..., the manifest says {entry['sha256'][:12]}...: the file "
            "is corrupt or was replaced; restore it from git or retrain with FLOWLIB_RETRAIN=1"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model


def train_or_load(
    model: nn.Module,
    name: str,
    train: Callable[[nn.Module], dict[str, Any] | None],
    *,
    retrain: bool | None = None,
    save: bool | None = None,
    directory: Path | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load checkpoint ``name`` into ``model`` if the manifest has it, else call ``train(model)`` and save.

    Name checkpoints after chapter, model and scale (``"03_pie-eps0.1-standard"``) so each scale has its own.
    ``train`` may return a dict of metadata (training time, final loss, a short loss curve) that is stored in the
    manifest and returned, so a notebook that loads weights can still show how they were obtained.
    ``retrain`` defaults to the environment variable ``FLOWLIB_RETRAIN`` (``1`` forces training); ``save``
    defaults to True except at the ``quick`` scale, whose throw-away weights never enter the committed manifest.
    Returns ``(model, metadata)``; the model is in eval mode.
    """
    directory = Path(directory or CHECKPOINT_DIR)
    if retrain is None:
        retrain = os.environ.get("FLOWLIB_RETRAIN", "0") not in ("", "0", "false", "False")
    if save is None:
        save = current_scale() != "quick"
    if not retrain and name in _read_manifest(directory):
        load_checkpoint(model, name, directory=directory)
        metadata = {"loaded": True, **checkpoint_metadata(name, directory)}
    else:
        metadata = _json_safe(dict(train(model) or {}))
        if save:
            save_checkpoint(model, name, metadata=metadata, directory=directory)
        metadata = {"loaded": False, **metadata}
    model.eval()
    return model, metadata


def _json_safe(value: Any) -> Any:
    """Metadata must be JSON: floats stay floats (NaN becomes None), tensors become lists."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, Tensor):
        return _json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value
