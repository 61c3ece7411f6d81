"""Device choice, in one place: the rest of flowlib asks :func:`default_device` which device to use."""

from __future__ import annotations

import os

import torch

__all__ = ["default_device", "resolve_device"]


def default_device() -> torch.device:
    """``cuda`` if available, else Apple's ``mps``, else ``cpu``.

    Under ``torchrun`` (``LOCAL_RANK`` set) each process gets its own GPU, ``cuda:<LOCAL_RANK>``.

    Example:
        >>> default_device().type in ("cuda", "mps", "cpu")
        True
    """
    if torch.cuda.is_available():
        local_rank = os.environ.get("LOCAL_RANK")
        return torch.device("cuda", int(local_rank)) if local_rank is not None else torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """The device to train on: ``device`` as given, :func:`default_device` for ``None``; under ``torchrun`` a bare
    ``"cuda"`` means this process's GPU, ``cuda:<LOCAL_RANK>``.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None:
        return default_device()
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device
