"""Factor-out (multi-scale) layer: keep part of the variables, score the rest under a prior given the kept part.

``x = [z, r]`` along ``dim``. The forward pass returns ``z`` and, as its log-det term, ``log p(r | z)``, so a model
that composes it still computes ``log p(x) = log pi(z_final) + sum of the terms`` (RealNVP Section 3.6, Glow's
"split" with a learned prior). The inverse draws ``r`` from that prior. PIE replaces the prior by
``N(r | g(z), eps^2 I)`` and decodes with ``r = g(z)`` (PIE Eq. 20): subclass and override :meth:`flowlib.transforms.Split.conditional`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowlib.transforms._shapes import sum_except_batch
from flowlib.transforms.base import InputShapeError, Transform

__all__ = ["Split", "gaussian_log_prob"]

_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


def gaussian_log_prob(value: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """``log N(value | mean, exp(log_scale)^2)`` summed over all but the batch dim: ``(B, ...) -> (B,)``.

    ``mean`` and ``log_scale`` broadcast against ``value``.

    Example:
        >>> import torch
        >>> round(float(gaussian_log_prob(torch.zeros(1, 1), torch.zeros(1), torch.zeros(1))), 4)
        -0.9189
    """
    log_scale = log_scale.expand_as(value)
    normalized = (value - mean) * torch.exp(-log_scale)
    return sum_except_batch(-0.5 * normalized.square() - log_scale - _HALF_LOG_TWO_PI)


class _PositionwiseNet(nn.Module):
    """Two convolutions with a ReLU between; vectors ``(B, D)`` are treated as ``(B, D, 1, 1)``, so with
    ``kernel_size=1`` this is an MLP on vectors and a per-pixel MLP over channels on images. Last layer zeroed."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, kernel_size: int):
        super().__init__()
        padding = kernel_size // 2
        self.hidden = nn.Conv2d(in_channels, hidden_channels, kernel_size, padding=padding)
        self.out = nn.Conv2d(hidden_channels, out_channels, kernel_size, padding=padding)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, z: Tensor) -> Tensor:
        image = z if z.dim() == 4 else z[:, :, None, None]
        out = self.out(torch.relu(self.hidden(image)))
        return out if z.dim() == 4 else out[:, :, 0, 0]


class Split(Transform):
    """Factor out all but the first ``num_kept`` entries of ``dim`` and score them: ``x -> (z, log p(r | z))``.

    ``forward(x)`` returns ``z = x[:, :num_kept]`` and ``log p(r | z)`` (``(B,)``) for the factored part
    ``r = x[:, num_kept:]``. ``inverse(z)`` draws ``r = mean + temperature * scale * noise`` from the same prior (the
    mean itself when ``temperature == 0``), or uses a given ``r``, and returns ``([z, r], -log p(r | z))``; the two
    terms of a round trip with the same ``r`` sum to zero.

    The prior is a diagonal Gaussian whose ``(mean, log_scale)`` come from :meth:`conditional`:

    * ``prior=None``: a small zero-initialised network on ``z`` (so it starts as ``N(0, I)``); 1x1 by default
      (``kernel_size=1``: an MLP on vectors, per pixel on images), ``kernel_size=3`` for Glow-style convolutions.
    * ``prior="standard"``: ``N(0, I)``, independent of ``z``.
    * ``prior=<nn.Module>``: your network mapping ``z`` to ``(mean, raw log-scale)`` stacked on dim 1.

    Log-scales are bounded to ``(-log_scale_bound, log_scale_bound)`` with a soft clamp. Subclasses (PIE) override
    :meth:`conditional`; then no network is built.

    Arguments:
        num_kept: entries of ``dim`` kept as ``z``.
        dim: the dimension to split (1: features of ``(B, D)`` or channels of ``(B, C, H, W)``).
        prior: ``None``, ``"standard"`` or an ``nn.Module`` (see above).
        num_features: total size of ``dim`` of the input; default ``2 * num_kept`` (an even split).
        hidden_features: width of the default prior network.
        kernel_size: kernel of the default prior network (odd).
        temperature: scale of the noise when :meth:`inverse` samples ``r``.
        log_scale_bound: bound on the prior's absolute log-scale.

    Shapes: ``(B, num_features, ...) -> (B, num_kept, ...)``, term ``(B,)``.

    References:
        Density estimation using Real NVP. Dinh, Sohl-Dickstein, Bengio, 2016. arXiv:1605.08803 (Section 3.6).
        Glow: Generative Flow with Invertible 1x1 Convolutions. Kingma, Dhariwal, 2018. arXiv:1807.03039.

    Example:
        >>> import torch
        >>> layer = Split(2, num_features=4)
        >>> x = torch.randn(3, 4)
        >>> z, log_prob_r = layer(x)
        >>> z.shape, log_prob_r.shape
        (torch.Size([3, 2]), torch.Size([3]))
        >>> x_back, minus_log_prob_r = layer.inverse(z, r=x[:, 2:])
        >>> torch.equal(x_back, x), torch.allclose(log_prob_r + minus_log_prob_r, torch.zeros(3))
        (True, True)
    """

    def __init__(
        self,
        num_kept: int,
        dim: int = 1,
        prior: nn.Module | str | None = None,
        num_features: int | None = None,
        hidden_features: int = 64,
        kernel_size: int = 1,
        temperature: float = 1.0,
        log_scale_bound: float = 5.0,
    ):
        super().__init__()
        num_features = 2 * num_kept if num_features is None else num_features
        if not 0 < num_kept < num_features:
            raise ValueError(f"need 0 < num_kept < num_features, got num_kept={num_kept}, num_features={num_features}")
        if dim == 0:
            raise ValueError("Split cannot act on the batch dimension (dim=0)")
        self.num_kept = num_kept
        self.num_features = num_features
        self.num_factored = num_features - num_kept
        self.dim = dim
        self.temperature = temperature
        self.log_scale_bound = log_scale_bound
        if prior is not None and not isinstance(prior, nn.Module) and prior != "standard":
            raise ValueError(f"prior must be None, 'standard' or an nn.Module, got {prior!r}")
        overridden = type(self).conditional is not Split.conditional
        if overridden:
            self.prior_kind = f"{type(self).__name__}.conditional"
        else:
            self.prior_kind = "custom" if isinstance(prior, nn.Module) else (prior or "learned")
        self.prior_net: nn.Module | None = None
        if isinstance(prior, nn.Module):
            self.prior_net = prior
        elif prior is None and not overridden:
            if dim != 1:
                raise ValueError("the default learned prior needs dim=1; pass prior='standard' or your own network")
            self.prior_net = _PositionwiseNet(num_kept, 2 * self.num_factored, hidden_features, kernel_size)

    def conditional(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, log_scale)`` of ``p(r | z)``, each broadcastable to the shape of ``r``. Override in subclasses."""
        if self.prior_net is None:
            zero = z.new_zeros(())
            return zero, zero
        out = self.prior_net(z)
        mean, raw_log_scale = out.chunk(2, dim=1)
        return mean, self.log_scale_bound * torch.tanh(raw_log_scale / self.log_scale_bound)

    def _factored_shape(self, z: Tensor) -> list[int]:
        shape = list(z.shape)
        shape[self.dim] = self.num_factored
        return shape

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() <= self.dim or x.shape[self.dim] != self.num_features:
            raise InputShapeError(
                f"Split(num_kept={self.num_kept}, num_features={self.num_features}) expects size {self.num_features} "
                f"along dim {self.dim}, got input of shape {tuple(x.shape)}; pass num_features=<size along dim "
                f"{self.dim}> for an uneven split"
            )
        z, r = x.split([self.num_kept, self.num_factored], dim=self.dim)
        mean, log_scale = self.conditional(z)
        return z, gaussian_log_prob(r, mean, log_scale)

    def inverse(self, z: Tensor, r: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Rebuild ``x = [z, r]``; ``r`` is drawn from ``p(r | z)`` at ``self.temperature`` unless given."""
        if z.dim() <= self.dim or z.shape[self.dim] != self.num_kept:
            raise InputShapeError(
                f"Split(num_kept={self.num_kept}).inverse expects size {self.num_kept} along dim {self.dim}, "
                f"got {tuple(z.shape)}"
            )
        mean, log_scale = self.conditional(z)
        shape = self._factored_shape(z)
        mean, log_scale = mean.expand(shape), log_scale.expand(shape)
        if r is None:
            r = mean
            if self.temperature > 0:
                r = mean + self.temperature * torch.exp(log_scale) * torch.randn_like(mean)
        elif list(r.shape) != shape:
            raise InputShapeError(f"Split.inverse: r must have shape {tuple(shape)}, got {tuple(r.shape)}")
        return torch.cat([z, r], dim=self.dim), -gaussian_log_prob(r, mean, log_scale)

    def extra_repr(self) -> str:
        return (
            f"num_kept={self.num_kept}, num_features={self.num_features}, dim={self.dim}, "
            f"prior={self.prior_kind!r}, temperature={self.temperature}"
        )
