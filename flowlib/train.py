"""A small training loop shared by every model, plus checkpoints that notebooks load by default.

* :func:`fit` runs a loss over a data loader with Adam (or a given optimiser), gradient clipping, a tqdm bar and a
  clear :class:`NonFiniteLossError` naming the step at which the loss stopped being finite. It trains on any device
  without the host waiting for the GPU inside the loop, optionally through ``torch.compile`` (CUDA graphs) and
  TF32, and unchanged under ``torchrun`` (DistributedDataParallel, :mod:`flowlib.distributed`). Each step is a
  :class:`TrainStep`, which benchmarks time on their own.
* :func:`save_checkpoint`, :func:`load_checkpoint` and :func:`train_or_load` (what notebooks call: load the
  checkpoint for the active scale if there is one, otherwise, or with ``FLOWLIB_RETRAIN=1``, train and save) live
  in :mod:`flowlib.checkpoints`, which documents where checkpoints are found; they are re-exported here.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from flowlib.checkpoints import CheckpointError, checkpoint_metadata, load_checkpoint, save_checkpoint, train_or_load
from flowlib.device import default_device, resolve_device

__all__ = [
    "PRECISIONS",
    "CheckpointError",
    "History",
    "NonFiniteLossError",
    "TrainStep",
    "check_finite",
    "checkpoint_metadata",
    "default_device",
    "default_optimizer",
    "fit",
    "float32_precision",
    "load_checkpoint",
    "progress_bars",
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
        raise NonFiniteLossError(_non_finite_message(loss.detach().flatten()[0].item(), step))


def _non_finite_message(value: float, step: int) -> str:
    return (f"loss is {value} at step {step}: lower the learning rate, clip gradients (max_grad_norm), or check the "
            "data range and dequantization")


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


Precision = Literal["float32", "tf32"]
PRECISIONS: tuple[str, ...] = ("float32", "tf32")
_PROGRESS: ContextVar[bool | None] = ContextVar("flowlib_progress", default=None)


@contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Show (or hide) the bars of every :func:`fit` inside the block that does not pass ``progress`` itself.

    ``python -m flowlib.pretrain`` turns them on around a chapter's recipes; notebooks leave them off.
    """
    token = _PROGRESS.set(enabled)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


@contextmanager
def float32_precision(precision: Precision) -> Iterator[None]:
    """Within the block, CUDA float32 matrix products and convolutions run in IEEE float32 (``"float32"``) or may
    use TensorFloat-32 (``"tf32"``: 10-bit mantissas, on Ampere and later GPUs); the previous setting is restored.

    TF32 is offered for training only. In a flow it perturbs the coupling networks' outputs, which leaves the
    change of variables exact (the log-det is the sum of whatever log-scales the network gave), and the 1x1
    convolutions' products, which the log-det does not see: emulating it (inputs of every convolution and 1x1
    mixing rounded to 10 mantissa bits) moves the bits/dim of the chapter-2 Glow on MNIST by 6e-4 on average
    (3e-3 at most), against 2e-6 for float32 vs float64. bfloat16 autocast moves them by 0.017 (0.046 at most),
    1 % of the value, so flowlib does not offer it: report likelihoods in float32. IDF's coding path is float64
    and never affected.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    setting = "tf32" if precision == "tf32" else "ieee"
    if hasattr(torch.backends, "fp32_precision"):  # torch >= 2.9; mixing it with allow_tf32 is an error
        backends = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
        previous = [backend.fp32_precision for backend in backends]
        for backend in backends:
            backend.fp32_precision = setting
        try:
            yield
        finally:
            for backend, value in zip(backends, previous):
                backend.fp32_precision = value
    else:
        previous_flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = setting == "tf32"
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous_flags


def default_optimizer(parameters: Iterable[nn.Parameter], lr: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam at ``lr``; on CUDA its fused implementation (one kernel per step instead of several per tensor)."""
    return torch.optim.Adam(parameters, lr=lr, fused=True) if device.type == "cuda" else torch.optim.Adam(
        parameters, lr=lr)


class TrainStep:
    """One optimisation step as :func:`fit` takes it: loss, backward, gradient clipping, optimiser, scheduler.

    Arguments:
        compute_loss: maps a batch (already on the device) to a scalar loss.
        parameters: the parameters to clip (``max_grad_norm``).
        optimizer, scheduler, max_grad_norm: as in :func:`fit`.
        compile: ``False``; ``True`` for ``torch.compile`` with its default mode; a mode such as
            ``"reduce-overhead"`` (CUDA graphs: one launch replays a whole forward or backward pass, which is what a
            small flow on a GPU needs; its step is otherwise bound by kernel launches); or a dict of
            ``torch.compile`` keyword arguments (e.g. ``{"mode": "reduce-overhead", "fullgraph": True}``). The first
            step always runs eagerly so data-dependent initialisations (ActNorm) happen outside the compiled graph.
        check_every_step: raise :class:`NonFiniteLossError` before the update when the loss is not finite. This
            reads the loss back to the host, which on a GPU stalls the pipeline, so :func:`fit` does it on CPUs only
            and checks the recorded losses every few steps elsewhere.

    ``step(batch)`` returns the detached loss, still on the device.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> step = TrainStep(lambda x: model(x).square().mean(), model.parameters(), optimizer)
        >>> step(torch.ones(4, 2)).shape
        torch.Size([])
    """

    def __init__(
        self,
        compute_loss: Callable[[Any], Tensor],
        parameters: Iterable[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        *,
        scheduler: Any | None = None,
        max_grad_norm: float | None = None,
        compile: bool | str | dict[str, Any] = False,
        check_every_step: bool = True,
    ):
        self.compute_loss = compute_loss
        self.parameters = list(parameters)
        self.optimizer, self.scheduler, self.max_grad_norm = optimizer, scheduler, max_grad_norm
        self.check_every_step = check_every_step
        if compile is False or compile is None:
            self.compile_options: dict[str, Any] | None = None
        elif compile is True:
            self.compile_options = {}
        elif isinstance(compile, str):
            self.compile_options = {"mode": compile}
        else:
            self.compile_options = dict(compile)
        self.compiled: Callable[[Any], Tensor] | None = None
        self.steps = 0

    def _loss(self, batch: Any) -> Tensor:
        if self.compile_options is None or self.steps == 0:
            return self.compute_loss(batch)
        if self.compiled is None:
            self.compiled = torch.compile(self.compute_loss, **self.compile_options)
        if "reduce-overhead" in str(self.compile_options.get("mode")):
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs may be overwritten
        return self.compiled(batch)

    def __call__(self, batch: Any) -> Tensor:
        loss = self._loss(batch)
        if self.check_every_step:
            check_finite(loss, self.steps)
        value = loss.detach().clone()  # a copy: CUDA-graph outputs are overwritten by the next replay
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.steps += 1
        return value


class _LossModule(nn.Module):
    """``loss_fn(model, batch)`` as a module's forward, so DistributedDataParallel sees every call of the model
    (``loss_fn`` may call ``model.log_prob`` or any other method, which DDP would not see on its own)."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor]):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Any) -> Tensor:
        return self.loss_fn(self.model, batch)


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
    progress: bool | None = None,
    desc: str = "train",
    compile: bool | str | dict[str, Any] = False,
    precision: Precision = "float32",
    sync_every: int | None = None,
) -> History:
    """Minimise ``loss_fn(model, batch)`` over ``data`` for ``epochs`` passes (or ``max_steps`` steps).

    Arguments:
        model: the module to train (moved to ``device``).
        loss_fn: returns a scalar loss for one batch; the batch is moved to the model's device first.
        data: an iterable of batches (tensors, or tuples/lists/dicts of tensors), e.g. a ``DataLoader``; for
            MNIST-sized data on a GPU, :func:`flowlib.data.image_loader` with ``device=`` keeps the whole set there.
        optimizer: defaults to :func:`default_optimizer` (Adam at ``lr``).
        max_grad_norm: clip the global gradient norm to this value if given.
        scheduler: stepped once per optimisation step if given.
        eval_fn: called with the model in eval mode (no gradients, strict float32) after each epoch; its value is
            recorded in ``eval_loss``.
        device: where to train; see :func:`flowlib.device.resolve_device` (default: a GPU if there is one; under
            ``torchrun``, this process's GPU).
        progress: show a tqdm bar; ``None``: as set by :func:`progress_bars`, else shown.
        compile: ``torch.compile`` the loss (``True``, or a mode such as ``"reduce-overhead"``); see
            :class:`TrainStep`.
        precision: ``"float32"`` (default) or ``"tf32"`` for training steps on CUDA; see :func:`float32_precision`.
        sync_every: read the losses back to the host (and check that they are finite) every this many steps.
            Default: every step on a CPU, where it costs nothing and a NaN stops a single process before the
            update; every 50 steps elsewhere, so the host never waits for the GPU inside the loop. A non-finite
            loss then raises :class:`NonFiniteLossError` naming its step up to 50 steps later (the parameters are
            NaN by then: restart with a lower learning rate).
    Returns:
        the :class:`History` of losses (``train_loss`` per step, ``eval_loss`` per epoch, ``seconds``).

    Several processes: under ``torchrun`` (see :mod:`flowlib.distributed`) every process must iterate the same
    global batches (same data and seed); each one computes the loss on its share of every batch and
    DistributedDataParallel averages the gradients, so the steps equal those of one process on the whole batch for
    a loss that is a mean over examples. The first batch initialises data-dependent layers (ActNorm) once, whole,
    before training. ``train_loss`` holds the global batch's losses in every process.
    """
    try:  # the progress bar is optional (the ``progress`` extra); without tqdm the loop runs silently
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = _no_progress_bar

    from flowlib import distributed

    device = resolve_device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    sync_every = sync_every or (1 if device.type == "cpu" else 50)
    progress = progress if progress is not None else _PROGRESS.get() is not False
    model.to(device)
    is_distributed = distributed.setup(device)
    optimizer = optimizer or default_optimizer(model.parameters(), lr, device)
    history = History()
    start = time.perf_counter()
    step, pending = 0, []  # pending: losses of the last steps, on the device, not yet read by the host
    train_step: TrainStep | None = None

    def read_pending(bar: Any) -> None:
        if not pending:
            return
        losses = torch.stack(pending)
        values = (distributed.all_reduce_sum(losses) if is_distributed else losses).tolist()
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                raise NonFiniteLossError(_non_finite_message(value, step - len(pending) + offset))
        history.train_loss.extend(values)
        pending.clear()
        bar.set_postfix(loss=f"{history.train_loss[-1]:.4g}", refresh=False)

    with float32_precision(precision):
        for epoch in range(epochs):
            model.train()
            bar = tqdm(data, desc=f"{desc} {epoch + 1}/{epochs}", disable=not progress, leave=False)
            for batch in bar:
                batch = _to_device(batch, device)
                if train_step is None:
                    train_step = _make_train_step(model, loss_fn, batch, optimizer, scheduler, max_grad_norm,
                                                  compile, sync_every == 1, is_distributed)
                if is_distributed:
                    batch, weight = distributed.shard(batch)
                    count = distributed.world_size()
                    pending.append(train_step((batch, weight * count)) / count)  # summed over processes below
                else:
                    pending.append(train_step(batch))
                step += 1
                if len(pending) >= sync_every:
                    read_pending(bar)
                if max_steps is not None and step >= max_steps:
                    break
            read_pending(bar)
            if eval_fn is not None:
                model.eval()
                with torch.no_grad(), float32_precision("float32"):
                    history.eval_loss.append(float(eval_fn(model)))
            if max_steps is not None and step >= max_steps:
                break
    model.eval()
    history.seconds = time.perf_counter() - start
    return history


def _make_train_step(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    batch: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    max_grad_norm: float | None,
    compile: bool | str | dict[str, Any],
    check_every_step: bool,
    is_distributed: bool,
) -> TrainStep:
    """The :class:`TrainStep` of :func:`fit`; under DDP, after initialising the model on the whole first batch."""
    if not is_distributed:
        return TrainStep(lambda batch: loss_fn(model, batch), model.parameters(), optimizer, scheduler=scheduler,
                         max_grad_norm=max_grad_norm, compile=compile, check_every_step=check_every_step)
    from torch.nn.parallel import DistributedDataParallel

    # Data-dependent initialisation (ActNorm) on the whole first batch, identical in every process and equal to
    # what one process does in its first step; the backward pass finds parameters the loss does not use.
    loss_fn(model, batch).backward()
    unused = any(parameter.requires_grad and parameter.grad is None for parameter in model.parameters())
    optimizer.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    device_ids = [device.index] if device.type == "cuda" else None
    wrapped = DistributedDataParallel(_LossModule(model, loss_fn), device_ids=device_ids,
                                      find_unused_parameters=unused)

    def compute_loss(weighted_batch: tuple[Any, float]) -> Tensor:
        batch, scale = weighted_batch
        return wrapped(batch) * scale  # scale = n_local / n_global * world_size: the mean over the global batch

    return TrainStep(compute_loss, model.parameters(), optimizer, scheduler=scheduler,
                     max_grad_norm=max_grad_norm, compile=compile, check_every_step=False)



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
