"""The invertible-layer contract shared by every transform in flowlib.

Direction and sign convention (used everywhere in the library and the book):

* ``forward(x) -> (z, logabsdet)`` maps **data to latent**. ``logabsdet`` has shape ``(batch,)`` and is
  ``log |det dz/dx|`` evaluated at ``x``, so that ``log p(x) = log pi(z) + logabsdet`` (change of variables).
* ``inverse(z) -> (x, logabsdet)`` maps **latent to data** and returns ``log |det dx/dz|`` at ``z``.
  For an exact bijection the two log-dets of a round trip sum to zero.

Layers that are not bijections in the strict sense (a factor-out ``Split`` that scores the dimensions it drops)
follow the same signature: their forward adds the log-density of the dropped part to ``logabsdet`` so that a
composed model's ``log p(x)`` is still ``log pi(z) + sum of logabsdets``.

Conditional transforms (``accepts_context = True``: couplings, splines, MAF, and ``Compose``/``Inverse`` around
them) take an optional keyword ``context`` of shape ``(B, K)`` in both directions, handed to their conditioner
network: ``forward(x, context=c)``, ``inverse(z, context=c)``. ``Compose`` passes it to every layer that accepts
one; without a context every call is exactly the unconditional one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "Transform", "Compose", "Inverse", "InputDtypeError", "InputShapeError", "InverseNotAvailable", "batch_zeros",
]


class InputShapeError(ValueError):
    """Raised when a transform gets a tensor whose shape it cannot handle; the message says what it expected."""


class InputDtypeError(TypeError):
    """Raised by models given data of another dtype than their parameters (float64 data for a float32 model,
    integer data for a continuous model); the message says how to convert one or the other."""


class InverseNotAvailable(NotImplementedError):
    """Raised by transforms that can only be evaluated in one direction."""


class Transform(nn.Module):
    """Base class of every invertible layer: ``forward`` is data -> latent, ``inverse`` is latent -> data.

    Both directions return ``(output, logabsdet)`` with ``logabsdet`` of shape ``(batch,)``. A subclass that sets
    ``accepts_context = True`` also takes ``context=`` (``(B, K)``) in both directions.
    """

    accepts_context: bool = False

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

    accepts_context = True

    def __init__(self, *transforms: Transform):
        super().__init__()
        if len(transforms) == 1 and isinstance(transforms[0], (list, tuple)):
            transforms = tuple(transforms[0])
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for transform in self.transforms:
            if context is not None and transform.accepts_context:
                x, logabsdet = transform(x, context=context)
            else:
                x, logabsdet = transform(x)
            total = total + logabsdet
        return x, total

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = z.new_zeros(z.shape[0])
        for transform in reversed(self.transforms):
            if context is not None and transform.accepts_context:
                z, logabsdet = transform.inverse(z, context=context)
            else:
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
        self.accepts_context = transform.accepts_context

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(x) if context is None else self.transform.inverse(x, context=context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform(z) if context is None else self.transform(z, context=context)


def batch_zeros(x: Tensor) -> Tensor:
    """A ``(batch,)`` vector of zeros matching ``x``'s dtype and device (the log-det of a volume-preserving map)."""
    return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
