"""The invertible-layer contract shared by every transform in flowlib.

Direction and sign convention (used everywhere in the library and the book):

* ``forward(x) -> (z, logabsdet)`` maps **data to latent**. ``logabsdet`` has shape ``(batch,)`` and is
  ``log |det dz/dx|`` evaluated at ``x``, so that ``log p(x) = log pi(z) + logabsdet`` (change of variables).
* ``inverse(z) -> (x, logabsdet)`` maps **latent to data** and returns ``log |det dx/dz|`` at ``z``.
  For an exact bijection the two log-dets of a round trip sum to zero.

Layers that are not bijections in the strict sense (a factor-out ``Split`` that scores the dimensions it drops)
follow the same signature: their forward adds the log-density of the dropped part to ``logabsdet`` so that a
composed model's ``log p(x)`` is still ``log pi(z) + sum of logabsdets``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Transform", "Compose", "Inverse", "InputShapeError", "InverseNotAvailable", "batch_zeros"]


class InputShapeError(ValueError):
    """Raised when a transform gets a tensor whose shape it cannot handle; the message says what it expected."""


class InverseNotAvailable(NotImplementedError):
    """Raised by transforms that can only be evaluated in one direction."""


class Transform(nn.Module):
    """Base class of every invertible layer: ``forward`` is data -> latent, ``inverse`` is latent -> data.

    Both directions return ``(output, logabsdet)`` with ``logabsdet`` of shape ``(batch,)``.
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # noqa: D102 - documented on the class
        raise NotImplementedError

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:  # noqa: D102
        raise InverseNotAvailable(f"{type(self).__name__} does not implement inverse()")


class Compose(Transform):
    """Apply transforms in sequence (data -> latent) and add up their log-dets.

    Arguments:
        transforms: the layers, in data-to-latent order.

    Example:
        >>> from flowlib.transforms import Compose, Reverse
        >>> flow = Compose(Reverse(), Reverse())
        >>> z, logabsdet = flow(torch.randn(3, 4))
        >>> logabsdet.shape
        torch.Size([3])
    """

    def __init__(self, *transforms: Transform):
        super().__init__()
        if len(transforms) == 1 and isinstance(transforms[0], (list, tuple)):
            transforms = tuple(transforms[0])
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for transform in self.transforms:
            x, logabsdet = transform(x)
            total = total + logabsdet
        return x, total

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        total = z.new_zeros(z.shape[0])
        for transform in reversed(self.transforms):
            z, logabsdet = transform.inverse(z)
            total = total + logabsdet
        return z, total

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, index: int) -> Transform:
        return self.transforms[index]


class Inverse(Transform):
    """Swap the two directions of a transform: ``Inverse(t).forward == t.inverse``."""

    def __init__(self, transform: Transform):
        super().__init__()
        self.transform = transform

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform(z)


def batch_zeros(x: Tensor) -> Tensor:
    """A ``(batch,)`` vector of zeros matching ``x``'s dtype and device (the log-det of a volume-preserving map)."""
    return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
