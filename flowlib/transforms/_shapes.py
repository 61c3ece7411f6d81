"""Shape checks shared by the transforms (private); each raises ``InputShapeError`` naming the expected shape."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from flowlib.transforms.base import InputShapeError

__all__ = ["check_event_shape", "check_channels", "sum_except_batch"]


def _format(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(str(size) for size in shape) + ")"


def check_event_shape(layer: str, x: Tensor, event_shape: Sequence[int]) -> None:
    """Raise unless ``x`` has shape ``(B, *event_shape)``."""
    if tuple(x.shape[1:]) != tuple(event_shape) or x.dim() != len(event_shape) + 1:
        raise InputShapeError(
            f"{layer} expects input of shape {_format(['B', *event_shape])}, got {tuple(x.shape)}; "
            "build the layer for this shape (its mask/event shape must match the data)"
        )


def check_channels(layer: str, x: Tensor, num_channels: int) -> None:
    """Raise unless ``x`` is ``(B, num_channels)`` or ``(B, num_channels, H, W)``."""
    if x.dim() not in (2, 4) or x.shape[1] != num_channels:
        raise InputShapeError(
            f"{layer} expects input of shape (B, {num_channels}) or (B, {num_channels}, H, W), got {tuple(x.shape)}; "
            f"it was built for {num_channels} channels"
        )


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum over every dimension but the first: ``(B, ...) -> (B,)``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)
