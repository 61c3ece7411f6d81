"""Discretized logistic distributions over the integers: the priors of Integer Discrete Flows.

A logistic density with mean ``mu`` and scale ``s`` is put on the integers by giving the integer ``x`` the mass of
the bin ``[x - 1/2, x + 1/2]`` (IDF Eq. 13; Salimans et al. 2017 for PixelCNN++):

    P(x) = sigma((x + 1/2 - mu) / s) - sigma((x - 1/2 - mu) / s).

With a finite range ``[low, high]`` the two outer bins reach to infinity, so ``P(low) = sigma((low + 1/2 - mu)/s)``
and ``P(high) = 1 - sigma((high - 1/2 - mu)/s)`` and the masses over ``low..high`` sum to exactly one (pixel data).
Without a range (``low=None, high=None``) the distribution lives on all integers (IDF's latent priors).

Everything is computed in log space without subtracting probabilities: with ``a = (x + 1/2 - mu)/s`` and
``b = (x - 1/2 - mu)/s``, ``sigma(a) - sigma(b) = sigma(a) sigma(-b) (1 - e^{-(a - b)})`` and ``a - b = 1/s``, so

    log P(x) = logsigmoid(a) + logsigmoid(-b) + log(1 - exp(-1/s)),

each term finite and smooth for any ``mu`` and ``s`` (no cancellation when ``s`` is tiny or ``x`` is far in a tail).

The rANS coder uses the same distributions through :func:`flowlib.coding.cdf.discretized_logistic_cdf_table`; the
``cdf_table`` methods here pass the parameters on unchanged.

References:
    Integer Discrete Flows and Lossless Compression. Hoogeboom, Peters, van den Berg, Welling, 2019.
    arXiv:1905.07376 (Eq. 13 and the mixture prior).
    PixelCNN++. Salimans, Karpathy, Chen, Kingma, 2017. arXiv:1701.05517.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DiscretizedLogistic", "DiscretizedLogisticMixture", "log_one_minus_exp"]


def log_one_minus_exp(d: Tensor) -> Tensor:
    """``log(1 - exp(-d))`` for ``d > 0``, accurate for tiny and huge ``d`` (finite gradients everywhere)."""
    small = d < 1e-4
    safe_large = torch.where(small, torch.ones_like(d), d)
    safe_small = torch.where(small, d, torch.full_like(d, 1e-4))
    return torch.where(small, torch.log(safe_small) - safe_small / 2, torch.log(-torch.expm1(-safe_large)))


def _check_range(low: int | None, high: int | None) -> None:
    if (low is None) != (high is None):
        raise ValueError(f"give both low and high (a finite range) or neither (all integers), got {low=}, {high=}")
    if low is not None and not low < high:
        raise ValueError(f"the range needs low < high, got {low=}, {high=}")


class DiscretizedLogistic:
    """Logistic(``mean``, ``exp(log_scale)``) discretized to unit bins on the integers, per element.

    Arguments:
        mean: ``(...)`` means, in the units of the integers.
        log_scale: ``(...)`` log-scales (broadcastable with ``mean``).
        low, high: the integer range; the outer bins reach to ``-inf`` / ``+inf``. ``None`` for both: all integers.

    ``log_prob(x)`` of integer-valued ``x`` (any dtype, broadcastable) is element-wise, in nats. Values outside a
    finite range have probability 0 (log-prob ``-inf``).

    Example:
        >>> d = DiscretizedLogistic(torch.tensor([0.3]), torch.tensor([0.0]), low=-2, high=2)
        >>> round(float(d.log_prob(torch.arange(-2, 3)).exp().sum()), 6)
        1.0
    """

    def __init__(self, mean: Tensor, log_scale: Tensor, low: int | None = None, high: int | None = None):
        _check_range(low, high)
        self.mean, self.log_scale = torch.broadcast_tensors(mean, log_scale)
        self.low, self.high = low, high

    def log_prob(self, x: Tensor) -> Tensor:
        """Element-wise ``log P(x)`` in nats of integer-valued ``x``."""
        x = x.to(self.mean.dtype)
        inverse_scale = torch.exp(-self.log_scale)
        centred = x - self.mean
        upper = (centred + 0.5) * inverse_scale  # a
        lower = (centred - 0.5) * inverse_scale  # b
        log_cdf_upper = F.logsigmoid(upper)  # log P(X <= x), the whole mass for the bottom outer bin
        log_survival_lower = F.logsigmoid(-lower)  # log P(X >= x), the whole mass for the top outer bin
        interior = log_cdf_upper + log_survival_lower + log_one_minus_exp(inverse_scale)
        if self.low is None:
            return interior
        log_prob = torch.where(x <= self.low, log_cdf_upper, torch.where(x >= self.high, log_survival_lower, interior))
        outside = (x < self.low) | (x > self.high)
        return log_prob.masked_fill(outside, -math.inf)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """One integer sample per element (``int64``, the shape of ``mean``): a rounded logistic, clamped."""
        uniform = torch.rand(self.mean.shape, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        logistic = torch.log(uniform) - torch.log1p(-uniform)
        mean, scale = self.mean.detach().double().cpu(), self.log_scale.detach().double().cpu().exp()
        values = torch.round(mean + logistic * scale)
        if self.low is not None:
            values = values.clamp(self.low, self.high)
        return values.to(torch.int64).to(self.mean.device)

    def cdf_table(self, precision: int, low: int, high: int) -> Tensor:
        """The rANS table of these distributions on ``[low, high]``: ``(N, K + 2)`` (see flowlib.coding)."""
        from flowlib.coding import discretized_logistic_cdf_table

        return discretized_logistic_cdf_table(self.mean.reshape(-1), self.log_scale.reshape(-1), low, high, precision)


class DiscretizedLogisticMixture:
    """A mixture of discretized logistics per element (IDF's top prior, "about 5 components" in the paper).

    Arguments:
        means, log_scales, logit_weights: ``(..., M)`` per element and component (last dimension = components);
            the weights are ``softmax(logit_weights)`` over the last dimension.
        low, high: as in :class:`DiscretizedLogistic`.

    Example:
        >>> d = DiscretizedLogisticMixture(torch.tensor([[-3.0, 4.0]]), torch.zeros(1, 2), torch.zeros(1, 2), -9, 9)
        >>> round(float(d.log_prob(torch.arange(-9, 10).view(-1, 1)).exp().sum()), 6)
        1.0
    """

    def __init__(
        self,
        means: Tensor,
        log_scales: Tensor,
        logit_weights: Tensor,
        low: int | None = None,
        high: int | None = None,
    ):
        _check_range(low, high)
        self.means, self.log_scales, self.logit_weights = torch.broadcast_tensors(means, log_scales, logit_weights)
        self.low, self.high = low, high

    @property
    def num_components(self) -> int:
        return self.means.shape[-1]

    def log_prob(self, x: Tensor) -> Tensor:
        """Element-wise ``log P(x) = logsumexp_k [log w_k + log P_k(x)]`` in nats; ``x`` of shape ``(...)``."""
        components = DiscretizedLogistic(self.means, self.log_scales, self.low, self.high)
        log_weights = torch.log_softmax(self.logit_weights, dim=-1)
        return torch.logsumexp(log_weights + components.log_prob(x.unsqueeze(-1)), dim=-1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """One integer sample per element (``int64``, shape ``(...)``): pick a component, then sample it."""
        weights = torch.softmax(self.logit_weights.detach().double().cpu(), dim=-1)
        flat = weights.reshape(-1, self.num_components)
        choice = torch.multinomial(flat, 1, generator=generator).view(weights.shape[:-1] + (1,))
        mean = self.means.detach().cpu().gather(-1, choice).squeeze(-1)
        log_scale = self.log_scales.detach().cpu().gather(-1, choice).squeeze(-1)
        sample = DiscretizedLogistic(mean, log_scale, self.low, self.high).sample(generator)
        return sample.to(self.means.device)

    def cdf_table(self, precision: int, low: int, high: int) -> Tensor:
        """The rANS table of these mixtures on ``[low, high]``: ``(N, K + 2)`` (see flowlib.coding)."""
        from flowlib.coding import discretized_logistic_mixture_cdf_table

        shape = (-1, self.num_components)
        return discretized_logistic_mixture_cdf_table(
            self.means.reshape(shape), self.log_scales.reshape(shape), self.logit_weights.reshape(shape),
            low, high, precision,
        )
