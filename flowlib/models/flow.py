"""A normalizing flow: an invertible transform from data to latent plus a base density on the latent.

Change of variables (Dinh et al., 2014, Eq. 1; Rezende & Mohamed, 2015)::

    log p(x) = log pi(f(x)) + log |det df(x)/dx|

``f`` is ``transform.forward`` (data -> latent), which returns ``f(x)`` and the log-det; sampling runs the inverse
on draws from the base, ``x = f^{-1}(z)``, ``z ~ pi``. Factor-out layers (``Split``) add the log-density of the part
they drop to the log-det term, so the formula holds unchanged for multi-scale models.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from flowlib.metrics import bits_per_dim
from flowlib.transforms.base import Transform

__all__ = ["Flow"]


class Flow(nn.Module):
    """``log p(x) = base.log_prob(z) + logabsdet`` with ``(z, logabsdet) = transform(x)``.

    Arguments:
        transform: the data-to-latent :class:`~flowlib.transforms.Transform` (usually a ``Compose``).
        base: the latent density, with ``log_prob(z) -> (B,)`` and ``sample(num_samples, temperature)``.

    Shapes: ``log_prob``: ``(B, *event_shape) -> (B,)``; ``sample(n)``: ``(n, *event_shape)``.

    References:
        NICE: Non-linear Independent Components Estimation. Dinh, Krueger, Bengio, 2014. arXiv:1410.8516.
        Variational Inference with Normalizing Flows. Rezende, Mohamed, 2015. arXiv:1505.05770.

    Example:
        >>> import torch
        >>> from flowlib.distributions import StandardNormal
        >>> from flowlib.transforms import Compose, Reverse, Scaling
        >>> flow = Flow(Compose(Scaling(2), Reverse()), StandardNormal(2))
        >>> flow.log_prob(torch.zeros(3, 2)).shape, flow.sample(4).shape
        (torch.Size([3]), torch.Size([4, 2]))
    """

    def __init__(self, transform: Transform, base: nn.Module):
        super().__init__()
        self.transform = transform
        self.base = base

    def log_prob(self, x: Tensor) -> Tensor:
        """``(B, ...) -> (B,)`` log-density of ``x`` in nats."""
        z, logabsdet = self.transform(x)
        return self.base.log_prob(z) + logabsdet

    def forward(self, x: Tensor) -> Tensor:
        return self.log_prob(x)

    def sample(self, num_samples: int, temperature: float = 1.0) -> Tensor:
        """``num_samples`` draws ``f^{-1}(z)`` with ``z`` from the base at ``temperature``.

        Gradients flow through the draws; wrap the call in ``torch.no_grad()`` when you only need the samples.

        Factor-out layers inside the transform sample their dropped parts at their own ``temperature`` attribute.
        """
        z = self.base.sample(num_samples, temperature=temperature)
        x, _ = self.transform.inverse(z)
        return x

    def bits_per_dim(self, x: Tensor, bin_width: float = 1 / 256) -> Tensor:
        """``(B,)`` bits per dimension of ``x`` (see :func:`flowlib.metrics.bits_per_dim`)."""
        return bits_per_dim(self.log_prob(x), num_dims=math.prod(x.shape[1:]), bin_width=bin_width)
