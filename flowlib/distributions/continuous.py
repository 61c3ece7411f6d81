"""Continuous base distributions of flows: standard normal, standard logistic and a (learnable) diagonal Gaussian.

Each is an ``nn.Module`` built for one ``event_shape``: ``log_prob(z)`` takes ``(B, *event_shape)`` and returns the
log-density summed over the event, ``(B,)``; ``sample(num_samples, temperature)`` returns
``(num_samples, *event_shape)`` with the noise scaled by ``temperature`` (Glow's reduced-temperature sampling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional

from flowlib.transforms._shapes import check_event_shape, sum_except_batch

__all__ = ["StandardNormal", "StandardLogistic", "DiagonalGaussian"]

_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


def _as_shape(event_shape: int | Sequence[int]) -> tuple[int, ...]:
    return (int(event_shape),) if isinstance(event_shape, int) else tuple(int(size) for size in event_shape)


class _Base(nn.Module):
    """Stores the event shape and an empty buffer that tracks the module's device and dtype."""

    def __init__(self, event_shape: int | Sequence[int]):
        super().__init__()
        self.event_shape = _as_shape(event_shape)
        self.register_buffer("_reference", torch.zeros(0), persistent=False)

    def _noise(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        reference = self._reference
        return torch.randn(
            (num_samples, *self.event_shape), generator=generator, device=reference.device, dtype=reference.dtype
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.log_prob(z)

    def log_prob(self, z: Tensor) -> Tensor:  # noqa: D102 - documented on the subclasses
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}"


class StandardNormal(_Base):
    """``N(0, I)`` over ``event_shape``.

    Arguments:
        event_shape: shape of one example, e.g. ``(2,)`` or ``(1, 28, 28)`` (an int means ``(int,)``).

    Shapes: ``log_prob``: ``(B, *event_shape) -> (B,)``; ``sample(n)``: ``(n, *event_shape)``.

    Example:
        >>> import torch
        >>> base = StandardNormal(2)
        >>> round(float(base.log_prob(torch.zeros(1, 2))), 4)  # -log(2 pi)
        -1.8379
        >>> base.sample(5, temperature=0.5).shape
        torch.Size([5, 2])
    """

    def log_prob(self, z: Tensor) -> Tensor:
        check_event_shape(type(self).__name__, z, self.event_shape)
        return sum_except_batch(-0.5 * z.square() - _HALF_LOG_TWO_PI)

    def sample(self, num_samples: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """``(num_samples, *event_shape)`` draws of ``temperature * N(0, I)``."""
        return temperature * self._noise(num_samples, generator)


class StandardLogistic(_Base):
    """Standard logistic (location 0, scale 1) in every dimension; NICE's prior. ``log p(z) = -z - 2 softplus(-z)``.

    Arguments:
        event_shape: shape of one example (an int means ``(int,)``).

    Shapes: ``log_prob``: ``(B, *event_shape) -> (B,)``; ``sample(n)``: ``(n, *event_shape)``.

    References:
        NICE: Non-linear Independent Components Estimation. Dinh, Krueger, Bengio, 2014. arXiv:1410.8516.

    Example:
        >>> import torch
        >>> base = StandardLogistic(3)
        >>> round(float(base.log_prob(torch.zeros(1, 3))), 4)  # 3 * log(1/4)
        -4.1589
        >>> base.sample(4).shape
        torch.Size([4, 3])
    """

    def log_prob(self, z: Tensor) -> Tensor:
        check_event_shape(type(self).__name__, z, self.event_shape)
        return sum_except_batch(-z - 2.0 * functional.softplus(-z))

    def sample(self, num_samples: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """``(num_samples, *event_shape)`` draws ``temperature * logit(u)``, ``u ~ U(0, 1)``."""
        reference = self._reference
        uniform = torch.rand(
            (num_samples, *self.event_shape), generator=generator, device=reference.device, dtype=reference.dtype
        )
        tiny = torch.finfo(uniform.dtype).tiny
        uniform = uniform.clamp(tiny, 1.0 - torch.finfo(uniform.dtype).eps)
        return temperature * (torch.log(uniform) - torch.log1p(-uniform))


class DiagonalGaussian(_Base):
    """``N(mean, diag(exp(log_scale))^2)`` with a mean and log-scale per entry of ``event_shape``, zero at start.

    Arguments:
        event_shape: shape of one example (an int means ``(int,)``).
        learnable: make ``mean`` and ``log_scale`` trainable parameters (else fixed buffers).

    Shapes: ``log_prob``: ``(B, *event_shape) -> (B,)``; ``sample(n)``: ``(n, *event_shape)``.

    Example:
        >>> import torch
        >>> base = DiagonalGaussian((1, 2, 2))
        >>> base.log_prob(torch.zeros(3, 1, 2, 2)).shape
        torch.Size([3])
        >>> base.sample(2, temperature=0.0).abs().sum().item()  # temperature 0 gives the mean
        0.0
    """

    def __init__(self, event_shape: int | Sequence[int], learnable: bool = True):
        super().__init__(event_shape)
        self.learnable = learnable
        mean, log_scale = torch.zeros(self.event_shape), torch.zeros(self.event_shape)
        if learnable:
            self.mean = nn.Parameter(mean)
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("mean", mean)
            self.register_buffer("log_scale", log_scale)

    def log_prob(self, z: Tensor) -> Tensor:
        check_event_shape(type(self).__name__, z, self.event_shape)
        normalized = (z - self.mean) * torch.exp(-self.log_scale)
        return sum_except_batch(-0.5 * normalized.square() - self.log_scale - _HALF_LOG_TWO_PI)

    def sample(self, num_samples: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """``(num_samples, *event_shape)`` draws ``mean + temperature * scale * N(0, I)``."""
        noise = self._noise(num_samples, generator).to(self.mean.dtype)
        return self.mean + temperature * torch.exp(self.log_scale) * noise

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, learnable={self.learnable}"
