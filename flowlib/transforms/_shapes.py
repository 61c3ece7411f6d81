"""Shape checks shared by the transforms (private); each raises ``InputShapeError`` naming the expected shape."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowlib.transforms.base import InputDtypeError, InputShapeError

__all__ = [
    "channels_last_hint", "check_dtype", "check_nonempty", "check_event_shape", "check_channels", "module_dtype",
    "sum_except_batch",
]


def _format(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(str(size) for size in shape) + ")"


def channels_last_hint(shape: Sequence[int], expected: Sequence[int]) -> str | None:
    """A hint when ``shape`` (one example) is the channels-last ``(H, W, C)`` form of ``expected`` ``(C, H, W)``."""
    shape, expected = tuple(shape), tuple(expected)
    if len(shape) == len(expected) == 3 and shape != expected and shape == (*expected[1:], expected[0]):
        return (
            f"the data looks channels-last (H, W, C) = {shape}: convert it to channels-first with "
            f"x.permute(0, 3, 1, 2) (images are (B, C, H, W) throughout flowlib)"
        )
    return None


def check_event_shape(layer: str, x: Tensor, event_shape: Sequence[int]) -> None:
    """Raise unless ``x`` has shape ``(B, *event_shape)``."""
    if tuple(x.shape[1:]) != tuple(event_shape) or x.dim() != len(event_shape) + 1:
        hint = channels_last_hint(x.shape[1:], event_shape)
        raise InputShapeError(
            f"{layer} expects input of shape {_format(['B', *event_shape])}, got {tuple(x.shape)}; "
            + (hint or "build the layer for this shape (its mask/event shape must match the data)")
        )


def check_channels(layer: str, x: Tensor, num_channels: int) -> None:
    """Raise unless ``x`` is ``(B, num_channels)`` or ``(B, num_channels, H, W)``."""
    if x.dim() not in (2, 4) or x.shape[1] != num_channels:
        raise InputShapeError(
            f"{layer} expects input of shape (B, {num_channels}) or (B, {num_channels}, H, W), got {tuple(x.shape)}; "
            f"it was built for {num_channels} channels"
        )


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum over every dimension but the first: ``(B, ...) -> (B,)`` (also for ``B = 0``)."""
    return x.flatten(1).sum(dim=1) if x.dim() > 1 else x


def module_dtype(module: nn.Module) -> torch.dtype | None:
    """The floating dtype of ``module``'s first floating parameter or buffer (``None`` if it has none)."""
    tensors = itertools.chain(module.parameters(), module.buffers())  # lazily: usually the first one answers
    return next((tensor.dtype for tensor in tensors if tensor.is_floating_point()), None)


def check_dtype(model: str, x: Tensor, dtype: torch.dtype | None) -> None:
    """Raise :class:`InputDtypeError` unless ``x`` is of the model's floating ``dtype``; the message says what to do.

    flowlib's policy: a model works in the dtype of its parameters (float32 by default, float64 after
    ``model.double()``); data of another dtype is refused rather than silently cast.
    """
    if dtype is None or x.dtype == dtype:
        return
    if not x.is_floating_point():
        raise InputDtypeError(
            f"{model} takes floating-point data ({dtype}), got {x.dtype}; for uint8 images use "
            "flowlib.data.dequantize(x) (continuous flows) or x.float() / 255"
        )
    name = {torch.float64: "double", torch.float32: "float", torch.float16: "half", torch.bfloat16: "bfloat16"}
    raise InputDtypeError(
        f"{model} has {dtype} parameters but got {x.dtype} data: convert the data with x.to({dtype}) or the model "
        f"with model.{name.get(x.dtype, 'to')}()"
    )


def check_nonempty(quantity: str, x: Tensor) -> None:
    """Raise a ``ValueError`` for a batch of 0 examples where ``quantity`` is a mean over the batch (a loss).

    flowlib's policy: per-example results (``log_prob``, ``encode``, ``sample(0)``) of an empty batch are empty
    tensors; a batch mean would be NaN, so a loss of an empty batch is refused instead.
    """
    if x.shape[0] == 0:
        raise ValueError(f"{quantity} of an empty batch (0 examples) is undefined: skip empty batches")
