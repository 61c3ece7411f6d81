"""Any ``torch.distributions.Distribution`` as the base density of a :class:`~flowlib.models.flow.Flow`.

:class:`TorchDistribution` gives a torch distribution flowlib's base interface: ``log_prob(z) -> (B,)`` summed over
the event, ``sample(num_samples, temperature)`` of shape ``(num_samples, *event_shape)``. :class:`~flowlib.models.flow.Flow`
wraps a torch distribution in it automatically.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, distributions, nn

from flowlib.transforms._shapes import sum_except_batch

__all__ = ["TemperatureNotSupportedError", "TorchDistribution"]

_LOCATION_SCALE = (distributions.Normal, distributions.MultivariateNormal, distributions.LowRankMultivariateNormal)


class TemperatureNotSupportedError(ValueError):
    """Sampling at a temperature other than 1 from a base that has no location and scale to shrink."""


def _innermost(distribution: distributions.Distribution) -> distributions.Distribution:
    while isinstance(distribution, distributions.Independent):
        distribution = distribution.base_dist
    return distribution


class TorchDistribution(nn.Module):
    """A ``torch.distributions`` object as a flow's base density over ``event_shape``.

    The distribution's own shape (``batch_shape + event_shape``) must be the trailing part of ``event_shape``; the
    leading dimensions are filled with independent draws, and ``log_prob`` sums over every dimension but the
    first. ``Normal(0, 1)`` with ``event_shape=(2,)`` is thus the standard normal on the plane, as is
    ``Independent(Normal(zeros(2), ones(2)), 1)`` without ``event_shape``.

    Temperature ``T`` (Glow's reduced-temperature sampling) scales each draw's distance from the mean,
    ``mean + T (draw - mean)``, for the location-scale families ``Normal``, ``MultivariateNormal`` and
    ``LowRankMultivariateNormal`` (also inside ``Independent``); other bases accept only ``T = 1``.

    The distribution's tensors are not module buffers: build it on the device the flow runs on.

    Arguments:
        distribution: any ``torch.distributions.Distribution`` with a ``log_prob`` (and ``rsample`` or
            ``sample``).
        event_shape: the latent shape of one example; defaults to the distribution's own shape.

    Shapes: ``log_prob``: ``(B, *event_shape) -> (B,)``; ``sample(n)``: ``(n, *event_shape)``.

    Example:
        >>> base = TorchDistribution(torch.distributions.Normal(0.0, 1.0), event_shape=(2,))
        >>> base.sample(3, temperature=0.5).shape, base.log_prob(torch.zeros(4, 2)).shape
        (torch.Size([3, 2]), torch.Size([4]))
    """

    def __init__(self, distribution: distributions.Distribution, event_shape: int | Sequence[int] | None = None):
        super().__init__()
        if not isinstance(distribution, distributions.Distribution):
            raise TypeError(f"expected a torch.distributions.Distribution, got {type(distribution).__name__}")
        own = tuple(distribution.batch_shape + distribution.event_shape)
        if event_shape is None:
            if not own:
                raise ValueError(
                    f"{type(distribution).__name__} is a scalar distribution: give the latent shape, e.g. "
                    "Flow(transform, base, event_shape=(D,)), or use Independent(Normal(zeros(D), ones(D)), 1)"
                )
            event_shape = own
        shape = (int(event_shape),) if isinstance(event_shape, int) else tuple(int(size) for size in event_shape)
        if own and shape[len(shape) - len(own) :] != own:
            raise ValueError(
                f"the base distribution has shape {own} (batch_shape + event_shape), which must be the trailing "
                f"part of event_shape={shape}"
            )
        self.distribution = distribution
        self.event_shape = shape
        self._leading = shape[: len(shape) - len(own)]

    def log_prob(self, z: Tensor) -> Tensor:
        return sum_except_batch(self.distribution.log_prob(z))

    def forward(self, z: Tensor) -> Tensor:
        return self.log_prob(z)

    def sample(self, num_samples: int, temperature: float = 1.0) -> Tensor:
        """``(num_samples, *event_shape)`` draws (reparameterised where the distribution allows it)."""
        shape = torch.Size((num_samples, *self._leading))
        distribution = self.distribution
        draw = distribution.rsample(shape) if distribution.has_rsample else distribution.sample(shape)
        if temperature == 1.0:
            return draw
        if not isinstance(_innermost(distribution), _LOCATION_SCALE):
            raise TemperatureNotSupportedError(
                f"temperature={temperature} needs a location-scale base (Normal, MultivariateNormal); "
                f"{type(_innermost(distribution)).__name__} has no mean to shrink towards: sample at temperature 1"
            )
        mean = distribution.mean
        return mean + temperature * (draw - mean)

    def extra_repr(self) -> str:
        return f"{self.distribution}, event_shape={self.event_shape}"
