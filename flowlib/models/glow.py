"""Glow: multi-scale flow whose steps are ActNorm, an invertible 1x1 convolution and an affine coupling.

Reference:
    Glow: Generative Flow with Invertible 1x1 Convolutions. Diederik P. Kingma, Prafulla Dhariwal, 2018.
    arXiv:1807.03039.

Method (Section 3 and Table 1 of the paper; ``z = f(x)`` is data -> latent, the direction of ``Transform.forward``).
One *step of flow* on a ``(C, H, W)`` tensor is three layers, each with an ``H * W``-fold log-det (Table 1):

* ActNorm (Section 3.1): ``y = s * x + b`` per channel, initialised from the first batch so that every channel has
  zero mean and unit variance; ``log |det| = H * W * sum log |s|``.
* Invertible 1x1 convolution (Section 3.2): ``y_ij = W x_ij`` with a learned ``C x C`` matrix ``W``;
  ``log |det| = H * W * log |det W|``. LU parametrisation (Eq. 10): ``W = P L (U + diag(s))`` with ``P`` a fixed
  permutation, so ``log |det W| = sum log |s|``. The paper's ablation (Fig. 3) compares it with a fixed random
  permutation and with reversing the channels; here we also offer an orthogonal ``W`` built from Householder
  reflections (log-det 0), the parametrisation of PIE.
* Affine coupling (Section 3.3): ``x_a, x_b = split(x)``; ``(log s, t) = NN(x_a)``; ``y_b = s * x_b + t``;
  ``y_a = x_a``; ``log |det| = sum log |s|``. ``NN`` is conv3x3 -> ReLU -> conv1x1 -> ReLU -> conv3x3 whose last
  layer is zero-initialised, so every coupling starts as the identity.

Multi-scale architecture (Section 3, Fig. 2, from RealNVP): ``L`` levels, each a squeeze ``(C, H, W) -> (4C, H/2,
W/2)``, ``K`` steps of flow, and (except at the last level) a split that factors out half of the channels. The
factored-out half is scored under a diagonal Gaussian whose mean and log-scale a network computes from the kept half
(the "learned prior" of the official code); the top latent has a learned diagonal Gaussian.

Differences here: the coupling's scale is ``exp(2 tanh(raw / 2))`` (flowlib's bounded affine coupling) instead of
``sigmoid(raw + 2)``; dequantized ``[0, 1]`` data is passed through RealNVP's logit pre-processing by default
instead of being centred to ``[-0.5, 0.5]``; ``NN`` has no ActNorm inside; Adam without Polyak averaging.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowlib.distributions import DiagonalGaussian, StandardNormal
from flowlib.models.realnvp import MultiscaleFlow, _check_image_shape
from flowlib.transforms import (
    ActNorm,
    AffineCoupling,
    Compose,
    Householder1x1Conv,
    Invertible1x1Conv,
    Logit,
    Permutation,
    Reverse,
    Split,
    Squeeze,
    Transform,
    channel_mask,
)

__all__ = ["MIXINGS", "GlowConditioner", "glow", "glow_step"]

MIXINGS = ("lu", "householder", "permutation", "reverse")


class GlowConditioner(nn.Module):
    """Glow's ``NN(x_a)`` (Section 3.3) for a channel-mask coupling: ``(B, C, H, W) -> (B, 2C, H, W)``.

    The coupling passes ``x * mask``, whose first ``C // 2`` channels are ``x_a`` and the rest zeros. This network
    reads ``x_a`` only (as the paper's ``NN`` does, half the input width of a network on all channels), computes the
    raw log-scale and shift of ``x_b``, and pads zeros for ``x_a`` to give the ``(log s, t)`` layout that
    :class:`~flowlib.transforms.AffineCoupling` expects (the padded entries are masked out there).

    Arguments:
        num_channels: ``C``.
        hidden_channels: width of the two hidden convolutions.

    Example:
        >>> net = GlowConditioner(4, hidden_channels=8)
        >>> net(torch.randn(2, 4, 5, 5)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(self, num_channels: int, hidden_channels: int):
        super().__init__()
        if num_channels < 2:
            raise ValueError(f"a channel coupling needs at least 2 channels, got {num_channels}")
        self.num_kept = num_channels // 2
        num_free = num_channels - self.num_kept
        last = nn.Conv2d(hidden_channels, 2 * num_free, 3, padding=1)
        nn.init.zeros_(last.weight)  # Section 3.3: zero initialisation, each coupling starts as the identity
        nn.init.zeros_(last.bias)
        self.network = nn.Sequential(
            nn.Conv2d(self.num_kept, hidden_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 1),
            nn.ReLU(),
            last,
        )

    def forward(self, x: Tensor) -> Tensor:
        raw_log_scale, shift = self.network(x[:, : self.num_kept]).chunk(2, dim=1)
        zeros = x.new_zeros(x.shape[0], self.num_kept, *x.shape[2:])
        return torch.cat([zeros, raw_log_scale, zeros, shift], dim=1)


def _mixing(mixing: str, num_channels: int, num_reflections: int | None) -> Transform:
    """The channel-mixing layer of a step: Glow's LU 1x1 conv (Eq. 10) or one of the ablation's alternatives."""
    if mixing == "lu":
        return Invertible1x1Conv(num_channels)
    if mixing == "householder":
        return Householder1x1Conv(num_channels, num_reflections=num_reflections or num_channels)
    if mixing == "permutation":
        return Permutation(num_channels, dim=1)
    if mixing == "reverse":
        return Reverse(dim=1)
    raise ValueError(f"mixing must be one of {', '.join(MIXINGS)}; got {mixing!r}")


def glow_step(
    shape: Sequence[int], hidden_channels: int, mixing: str = "lu", num_reflections: int | None = None
) -> Compose:
    """One step of flow on ``(C, H, W)``: ActNorm -> 1x1 mixing -> affine coupling (Table 1, Fig. 2a)."""
    num_channels, height, width = shape
    return Compose(
        ActNorm(num_channels),  # Section 3.1
        _mixing(mixing, num_channels, num_reflections),  # Section 3.2
        AffineCoupling(channel_mask(num_channels, height, width), GlowConditioner(num_channels, hidden_channels)),
    )


def glow(
    image_shape: Sequence[int],
    *,
    num_levels: int = 2,
    num_steps: int = 8,
    hidden_channels: int = 128,
    mixing: str = "lu",
    num_reflections: int | None = None,
    logit_alpha: float | None = 0.05,
    learned_prior: bool = True,
) -> MultiscaleFlow:
    """Build a multi-scale Glow for images ``(B, C, H, W)``.

    Arguments:
        image_shape: ``(C, H, W)``; ``H`` and ``W`` must be divisible by ``2 ** num_levels``.
        num_levels: ``L``, the number of squeezes (2 for 28x28 MNIST: 28 -> 14 -> 7).
        num_steps: ``K``, steps of flow per level.
        hidden_channels: width of each coupling's ``NN``.
        mixing: ``"lu"`` (Glow), ``"householder"``, ``"permutation"`` (fixed random) or ``"reverse"``.
        num_reflections: Householder reflections per 1x1 conv (default: the number of channels).
        logit_alpha: ``alpha`` of the logit pre-processing, or ``None`` to model ``[0, 1]`` data directly.
        learned_prior: conditional Gaussian priors for the splits and a learned diagonal Gaussian at the top (the
            paper's); ``False`` scores every factored-out part and the top under ``N(0, I)``.

    Returns:
        a :class:`~flowlib.models.realnvp.MultiscaleFlow` over ``(B, C, H, W)``; ``sample(n, temperature)`` scales
        the noise of every latent (Section 5).

    Example:
        >>> flow = glow((1, 8, 8), num_levels=2, num_steps=1, hidden_channels=8)
        >>> flow.log_prob(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2])
    """
    if mixing not in MIXINGS:
        raise ValueError(f"mixing must be one of {', '.join(MIXINGS)}; got {mixing!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    image_shape = _check_image_shape("glow", image_shape, num_levels)
    num_channels, height, width = image_shape
    layers: list[Transform] = [Logit(logit_alpha)] if logit_alpha is not None else []
    for level in range(num_levels):
        layers.append(Squeeze(2))  # (C, H, W) -> (4C, H/2, W/2)
        num_channels, height, width = 4 * num_channels, height // 2, width // 2
        for _ in range(num_steps):  # K steps of flow (Fig. 2a)
            layers.append(glow_step((num_channels, height, width), hidden_channels, mixing, num_reflections))
        if level < num_levels - 1:  # split: factor out half of the channels (Fig. 2b)
            prior = None if learned_prior else "standard"  # None: N(r | NN(z)) from a 3x3 conv net on the kept half
            layers.append(Split(num_channels // 2, prior=prior, hidden_features=hidden_channels, kernel_size=3))
            num_channels //= 2
    top_shape = (num_channels, height, width)
    base = DiagonalGaussian(top_shape, learnable=True) if learned_prior else StandardNormal(top_shape)
    return MultiscaleFlow(Compose(*layers), base, image_shape)
