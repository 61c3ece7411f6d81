"""RealNVP: affine coupling layers with checkerboard and channel-wise masks, squeezing and a multi-scale factor-out.

Reference:
    Density estimation using Real NVP. Laurent Dinh, Jascha Sohl-Dickstein, Samy Bengio, 2016. arXiv:1605.08803.

Method (Section 3 of the paper; ``z = f(x)`` is data -> latent, the direction of ``Transform.forward``):

* Change of variables (Section 3.1): ``log p_X(x) = log p_Z(f(x)) + log |det df(x)/dx^T|``.

* Affine coupling (Eq. 4-5), with ``s`` and ``t`` any networks::

      y_{1:d} = x_{1:d},        y_{d+1:D} = x_{d+1:D} * exp(s(x_{1:d})) + t(x_{1:d})

  Its Jacobian (Eq. 6) is lower triangular with diagonal ``(1, ..., 1, exp(s))``, so ``log |det| = sum_j s_j``, and
  the inverse (Eq. 8) ``x_{d+1:D} = (y_{d+1:D} - t(y_{1:d})) * exp(-s(y_{1:d}))`` never inverts ``s`` or ``t``.

* Masked form (Eq. 9): ``y = b * x + (1 - b) * (x * exp(s(b * x)) + t(b * x))`` with a binary mask ``b``:
  a spatial checkerboard or a channel-wise mask (Fig. 3). Consecutive layers swap the mask (Section 3.5).

* Multi-scale architecture (Section 3.6): each scale is 3 couplings with alternating checkerboard masks, a squeeze
  ``(C, H, W) -> (4C, H/2, W/2)``, 3 couplings with alternating channel-wise masks, then half of the channels are
  factored out (Eq. 10-13)::

      h(0) = x,    (z(i+1), h(i+1)) = f(i+1)(h(i)),    z(L) = f(L)(h(L-1)),    z = (z(1), ..., z(L))

  The final scale is 4 couplings with alternating checkerboard masks. Every ``z(i)`` is scored under a standard
  normal prior.

* Pre-processing (Section 4.1): dequantized pixels in ``[0, 1]`` go through ``logit(alpha + (1 - 2 alpha) x)`` with
  ``alpha = 0.05``; its exact log-det is part of the likelihood.

Differences here: no batch normalisation (flowlib's ``ConvNet`` has none, so batch size 1 behaves like any other);
log-scales bounded by ``tanh`` instead of the paper's ``tanh`` times a learned scale; no weight normalisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from flowlib.distributions import StandardNormal
from flowlib.models.flow import Flow
from flowlib.nets import MLP, ConvNet
from flowlib.transforms import (
    AffineCoupling,
    Compose,
    InputShapeError,
    Logit,
    Split,
    Squeeze,
    Transform,
    channel_mask,
    checkerboard_mask,
    half_mask,
)
from flowlib.transforms._shapes import channels_last_hint

__all__ = ["MultiscaleFlow", "realnvp", "realnvp_vector"]


class MultiscaleFlow(Flow):
    """A :class:`~flowlib.models.flow.Flow` over images of one shape, with factor-out layers.

    ``log_prob`` checks the image shape first (a clear :class:`~flowlib.transforms.InputShapeError` instead of one
    from deep inside), and ``sample`` applies ``temperature`` to every latent: the base's and each
    :class:`~flowlib.transforms.Split`'s (Glow's reduced-temperature sampling, Section 5 of the Glow paper).

    Arguments:
        transform, base: as for :class:`~flowlib.models.flow.Flow`.
        image_shape: ``(C, H, W)`` of the data the model was built for.
    """

    def __init__(self, transform: Transform, base: nn.Module, image_shape: Sequence[int]):
        super().__init__(transform, base)
        self.image_shape = tuple(image_shape)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if tuple(x.shape[1:]) != self.image_shape or x.dim() != 4:
            hint = channels_last_hint(x.shape[1:], self.image_shape)
            raise InputShapeError(
                f"this model was built for images of shape (B, {', '.join(map(str, self.image_shape))}), got "
                f"{tuple(x.shape)}; "
                + (hint or f"build a new model with image_shape={tuple(x.shape[1:])} or resize the data")
            )
        return super().log_prob(x, context)

    def _sample(
        self, sample_shape: int | Sequence[int], temperature: float, context: Tensor | None, with_log_prob: bool
    ) -> tuple[Tensor, Tensor | None]:
        splits = [module for module in self.transform.modules() if isinstance(module, Split)]
        saved = [split.temperature for split in splits]
        for split in splits:
            split.temperature = temperature
        try:
            return super()._sample(sample_shape, temperature, context, with_log_prob)
        finally:
            for split, value in zip(splits, saved):
                split.temperature = value


def _coupling(
    mask_fn: Callable[..., Tensor], shape: tuple[int, int, int], parity: int, hidden_channels: int, num_blocks: int
) -> AffineCoupling:
    num_channels, height, width = shape
    conditioner = ConvNet(num_channels, 2 * num_channels, hidden_channels, num_blocks)  # (s, t) of Eq. 9 stacked
    return AffineCoupling(mask_fn(num_channels, height, width, parity), conditioner)


def realnvp(
    image_shape: Sequence[int],
    *,
    num_scales: int = 2,
    hidden_channels: int = 64,
    num_blocks: int = 2,
    logit_alpha: float | None = 0.05,
    squeeze_pattern: str = "space_to_depth",
) -> MultiscaleFlow:
    """Build the multi-scale RealNVP for images ``(B, C, H, W)``.

    Arguments:
        image_shape: ``(C, H, W)``; ``H`` and ``W`` must be divisible by ``2 ** num_scales``.
        num_scales: number of squeeze + factor-out stages before the final scale (2 for 28x28 MNIST).
        hidden_channels, num_blocks: width and depth of each coupling's ResNet conditioner.
        logit_alpha: ``alpha`` of the logit pre-processing, or ``None`` to model ``[0, 1]`` data directly.
        squeeze_pattern: ``"space_to_depth"`` or ``"checkerboard"`` (see :class:`~flowlib.transforms.Squeeze`).

    Returns:
        a :class:`MultiscaleFlow` over ``(B, C, H, W)``; ``log_prob`` includes the factored-out parts.

    Example:
        >>> import torch
        >>> flow = realnvp((1, 8, 8), num_scales=1, hidden_channels=8, num_blocks=1)
        >>> flow.log_prob(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2])
    """
    shape = image_shape = _check_image_shape("realnvp", image_shape, num_scales)
    layers: list[Transform] = [Logit(logit_alpha)] if logit_alpha is not None else []  # Section 4.1
    for _ in range(num_scales):
        for parity in (0, 1, 0):  # 3 couplings, alternating checkerboard masks (Eq. 9, Fig. 3 left)
            layers.append(_coupling(checkerboard_mask, shape, parity, hidden_channels, num_blocks))
        layers.append(Squeeze(2, pattern=squeeze_pattern))  # (C, H, W) -> (4C, H/2, W/2)
        num_channels, height, width = shape
        shape = (4 * num_channels, height // 2, width // 2)
        for parity in (0, 1, 0):  # 3 couplings, alternating channel-wise masks (Fig. 3 right)
            layers.append(_coupling(channel_mask, shape, parity, hidden_channels, num_blocks))
        layers.append(Split(shape[0] // 2, prior="standard"))  # Eq. 11: factor out z(i+1), keep h(i+1)
        shape = (shape[0] // 2, shape[1], shape[2])
    for parity in (0, 1, 0, 1):  # final scale: 4 checkerboard couplings (Section 3.6)
        layers.append(_coupling(checkerboard_mask, shape, parity, hidden_channels, num_blocks))
    return MultiscaleFlow(Compose(*layers), StandardNormal(shape), image_shape)  # Eq. 12-13: z(L) ~ N(0, I)


def realnvp_vector(
    num_features: int = 2,
    *,
    num_couplings: int = 8,
    hidden_features: int = 64,
    num_hidden_layers: int = 2,
    scale_bound: float = 2.0,
    context_features: int = 0,
) -> Flow:
    """A small RealNVP for vectors ``(B, D)`` (the 2-D toy densities): affine couplings with alternating half masks.

    Arguments:
        num_features: ``D``.
        num_couplings: number of affine couplings (Eq. 9 with ``b`` a half mask, swapped every layer).
        hidden_features, num_hidden_layers: the MLP computing ``(s, t)``.
        scale_bound: bound on ``|s|`` (see :class:`~flowlib.transforms.AffineCoupling`).
        context_features: ``K > 0`` builds a conditional flow ``p(x | c)``: every MLP also sees a context
            ``(B, K)`` passed as ``flow.log_prob(x, context)`` / ``flow.sample(n, context=c)``.

    Example:
        >>> flow = realnvp_vector(2, num_couplings=4, hidden_features=16)
        >>> flow.sample(3).shape
        torch.Size([3, 2])
        >>> conditional = realnvp_vector(2, num_couplings=4, hidden_features=16, context_features=1)
        >>> conditional.sample(5, context=torch.tensor([[0.0], [1.0]])).shape  # 5 draws for each of 2 contexts
        torch.Size([5, 2, 2])
    """
    if num_features < 2:
        raise ValueError(f"a coupling needs at least 2 features, got num_features={num_features}")
    if num_couplings < 2:
        raise ValueError(f"num_couplings must be at least 2 so that every feature is transformed, got {num_couplings}")
    layers = [
        AffineCoupling(
            half_mask(num_features, parity=index % 2),
            MLP(num_features, 2 * num_features, hidden_features, num_hidden_layers, context_features=context_features),
            scale_bound=scale_bound,
        )
        for index in range(num_couplings)
    ]
    return Flow(Compose(*layers), StandardNormal((num_features,)))


def _check_image_shape(model: str, image_shape: Sequence[int], num_squeezes: int) -> tuple[int, int, int]:
    """Validate ``(C, H, W)`` against the number of 2x2 squeezes; raise ``InputShapeError`` saying what to change."""
    shape = tuple(int(size) for size in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputShapeError(f"{model} expects image_shape=(C, H, W), got {tuple(image_shape)}")
    if num_squeezes < 1:
        raise ValueError(f"{model} needs at least one scale, got {num_squeezes}")
    factor = 2**num_squeezes
    _, height, width = shape
    if height % factor or width % factor:
        raise InputShapeError(
            f"{model} squeezes {num_squeezes} times, so H and W must be divisible by {factor}; got {height}x{width}. "
            f"Use fewer scales/levels or pad/crop the images (e.g. 28x28 MNIST allows at most 2)"
        )
    return shape
