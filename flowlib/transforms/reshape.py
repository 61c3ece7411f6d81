"""Volume-preserving rearrangements: squeezing space into channels, flattening and reshaping (log-det 0)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from flowlib.transforms._shapes import check_event_shape
from flowlib.transforms.base import InputShapeError, Transform, batch_zeros

__all__ = ["Squeeze", "Flatten", "Reshape"]

SQUEEZE_PATTERNS = ("space_to_depth", "checkerboard")


def _checkerboard_order(factor: int) -> Tensor:
    """Offsets ``k = i * factor + j`` of an ``f x f`` block, those with ``(i + j)`` even first, then the odd ones."""
    offsets = [(i, j) for i in range(factor) for j in range(factor)]
    even = [i * factor + j for i, j in offsets if (i + j) % 2 == 0]
    odd = [i * factor + j for i, j in offsets if (i + j) % 2 == 1]
    return torch.tensor(even + odd)


class Squeeze(Transform):
    """Trade space for channels: ``(B, C, H, W) -> (B, C * f * f, H / f, W / f)``, a pure permutation (log-det 0).

    Two pixel orders:

    * ``"space_to_depth"``: output channel ``c * f * f + i * f + j`` holds pixel ``(i, j)`` of each ``f x f`` block
      of input channel ``c`` (``torch.nn.functional.pixel_unshuffle``; RealNVP's and Glow's squeeze).
    * ``"checkerboard"``: the block offsets are ordered "black squares first": all offsets with ``i + j`` even, then
      the odd ones, offset-major (output channel ``rank(i, j) * C + c``). The first half of the output channels then
      holds exactly the pixels of ``checkerboard_mask(C, H, W, parity=0)``, so a channel-wise split after this squeeze
      equals a checkerboard split before it (the downsampling of i-RevNet and PIE).

    Arguments:
        factor: ``f``; ``H`` and ``W`` must be divisible by it.
        pattern: ``"space_to_depth"`` or ``"checkerboard"``.

    Shapes: ``(B, C, H, W) -> (B, C f^2, H/f, W/f)``, log-det ``(B,)`` of zeros.

    References:
        Density estimation using Real NVP. Dinh, Sohl-Dickstein, Bengio, 2016. arXiv:1605.08803 (Section 3.6).
        i-RevNet: Deep Invertible Networks. Jacobsen, Smeulders, Oyallon, 2018. arXiv:1802.07088.

    Example:
        >>> import torch
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> Squeeze(pattern="space_to_depth")(x)[0].flatten().tolist()
        [0.0, 1.0, 2.0, 3.0]
        >>> Squeeze(pattern="checkerboard")(x)[0].flatten().tolist()
        [0.0, 3.0, 1.0, 2.0]
    """

    def __init__(self, factor: int = 2, pattern: str = "space_to_depth"):
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        if pattern not in SQUEEZE_PATTERNS:
            raise ValueError(f"pattern must be one of {SQUEEZE_PATTERNS}, got {pattern!r}")
        self.factor = factor
        self.pattern = pattern
        order = _checkerboard_order(factor) if pattern == "checkerboard" else torch.arange(factor * factor)
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("inverse_order", torch.argsort(order), persistent=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.factor
        if x.dim() != 4:
            raise InputShapeError(f"Squeeze expects images of shape (B, C, H, W), got {tuple(x.shape)}")
        batch, channels, height, width = x.shape
        if height % f or width % f:
            raise InputShapeError(
                f"Squeeze(factor={f}) needs height and width divisible by {f}, got {height}x{width} "
                f"(input shape {tuple(x.shape)}); pad or crop the images to a multiple of {f}, or use a smaller factor"
            )
        blocks = x.reshape(batch, channels, height // f, f, width // f, f).permute(0, 1, 3, 5, 2, 4)
        blocks = blocks.reshape(batch, channels, f * f, height // f, width // f)
        if self.pattern == "space_to_depth":
            z = blocks.reshape(batch, channels * f * f, height // f, width // f)
        else:
            blocks = blocks.index_select(2, self.order).transpose(1, 2)  # (B, f*f, C, H/f, W/f), offset-major
            z = blocks.reshape(batch, f * f * channels, height // f, width // f)
        return z, batch_zeros(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        f = self.factor
        if z.dim() != 4 or z.shape[1] % (f * f):
            raise InputShapeError(
                f"Squeeze(factor={f}).inverse expects (B, C*{f * f}, H, W) with channels divisible by {f * f}, "
                f"got {tuple(z.shape)}"
            )
        batch, squeezed_channels, height, width = z.shape
        channels = squeezed_channels // (f * f)
        if self.pattern == "space_to_depth":
            blocks = z.reshape(batch, channels, f * f, height, width)
        else:
            blocks = z.reshape(batch, f * f, channels, height, width).transpose(1, 2)
            blocks = blocks.index_select(2, self.inverse_order)
        x = blocks.reshape(batch, channels, f, f, height, width).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(batch, channels, height * f, width * f), batch_zeros(z)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, pattern={self.pattern!r}"


class Reshape(Transform):
    """Reshape each example from ``in_shape`` to ``out_shape`` (same number of elements); log-det 0.

    Arguments:
        in_shape: event shape of the input, e.g. ``(1, 28, 28)``.
        out_shape: event shape of the output, e.g. ``(784,)``.

    Shapes: ``(B, *in_shape) -> (B, *out_shape)``.

    Example:
        >>> import torch
        >>> Reshape((2, 3), (3, 2))(torch.zeros(5, 2, 3))[0].shape
        torch.Size([5, 3, 2])
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int]):
        super().__init__()
        self.in_shape = tuple(int(size) for size in in_shape)
        self.out_shape = tuple(int(size) for size in out_shape)
        if math.prod(self.in_shape) != math.prod(self.out_shape):
            raise ValueError(f"cannot reshape {self.in_shape} ({math.prod(self.in_shape)} elements) to "
                             f"{self.out_shape} ({math.prod(self.out_shape)} elements)")

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_event_shape(type(self).__name__, x, self.in_shape)
        return x.reshape(x.shape[0], *self.out_shape), batch_zeros(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_event_shape(f"{type(self).__name__}.inverse", z, self.out_shape)
        return z.reshape(z.shape[0], *self.in_shape), batch_zeros(z)

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}"


class Flatten(Reshape):
    """Flatten each example: ``(B, *event_shape) -> (B, prod(event_shape))``; log-det 0.

    Arguments:
        event_shape: shape of one example, e.g. ``(1, 28, 28)``.

    Example:
        >>> import torch
        >>> layer = Flatten((1, 4, 4))
        >>> z, _ = layer(torch.zeros(2, 1, 4, 4))
        >>> z.shape, layer.inverse(z)[0].shape
        (torch.Size([2, 16]), torch.Size([2, 1, 4, 4]))
    """

    def __init__(self, event_shape: Sequence[int]):
        super().__init__(event_shape, (math.prod(event_shape),))

    def extra_repr(self) -> str:
        return f"event_shape={self.in_shape}"
