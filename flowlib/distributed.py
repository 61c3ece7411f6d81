"""Training on several processes: what :func:`flowlib.train.fit` needs to run unchanged under ``torchrun``.

``torchrun --nproc_per_node=N script.py`` starts ``N`` copies of a script and tells each its ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` through the environment. :func:`flowlib.train.fit` then joins the process group
(NCCL on GPUs, gloo on CPUs), gives every process an equal share of each batch and averages the gradients with
:class:`torch.nn.parallel.DistributedDataParallel`, so ``N`` processes take the same steps as one process on the
whole batch. Only the main process (rank 0) writes checkpoints: :func:`is_main_process`.

Outside ``torchrun`` every function here describes a single process (rank 0 of 1), so scripts need no branches.
"""

from __future__ import annotations

import atexit
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_reduce_sum", "is_main_process", "launched_by_torchrun", "rank", "setup", "shard", "world_size"]


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE`` above 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world_size() -> int:
    """The number of processes training together (1 without ``torchrun``)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's index among :func:`world_size` processes (0 without ``torchrun``)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True in the process that writes files (checkpoints, manifests, figures): rank 0, or the only process.

    Example:
        >>> is_main_process()  # outside torchrun
        True
    """
    return rank() == 0


def setup(device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes, if any; returns whether training is distributed.

    The backend is NCCL for CUDA devices and gloo otherwise. A group the caller created already is used as it is;
    one created here is destroyed when the interpreter exits.
    """
    if not launched_by_torchrun():
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if not dist.is_available():
        raise RuntimeError("torchrun started several processes, but this torch build has no torch.distributed")
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(_destroy)
    return dist.get_world_size() > 1


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(batch: Any) -> tuple[Any, float]:
    """This process's share of a global ``batch`` and its weight ``n_local / n_global``.

    Every tensor in ``batch`` (a tensor, or tuples/lists/dicts of them) is cut along dim 0 into
    :func:`world_size` nearly equal parts (``torch.tensor_split``); this process keeps part :func:`rank`. A loss that
    is a mean over examples, multiplied by ``weight * world_size`` before the gradients are averaged over the
    processes, gives exactly the gradient of the mean over the global batch, even when the batch size is not a
    multiple of the number of processes.

    Example:
        >>> part, weight = shard((torch.arange(6), torch.zeros(6)))  # one process: the whole batch
        >>> part[0].tolist(), weight
        ([0, 1, 2, 3, 4, 5], 1.0)
    """
    count, index = world_size(), rank()
    sizes: list[int] = []

    def cut(value: Any) -> Any:
        if isinstance(value, Tensor):
            if value.dim() == 0 or value.shape[0] < count:
                raise ValueError(
                    f"a batch of {value.shape[0] if value.dim() else 0} examples cannot be shared among {count} "
                    "processes; use a batch size of at least the number of processes"
                )
            sizes.append(value.shape[0])
            return value.tensor_split(count)[index] if count > 1 else value
        if isinstance(value, (list, tuple)):
            return type(value)(cut(item) for item in value)
        if isinstance(value, dict):
            return {key: cut(item) for key, item in value.items()}
        return value

    part = cut(batch)
    if not sizes:
        return part, 1.0
    total = sizes[0]
    local = total // count + (1 if index < total % count else 0)  # the size of tensor_split's part
    return part, local / total


def all_reduce_sum(value: Tensor) -> Tensor:
    """The sum of ``value`` over all processes (``value`` itself when there is one)."""
    if world_size() > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value

