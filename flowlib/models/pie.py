"""PIE: Pseudo-Invertible Encoder (Beitler, Sosnovik & Smeulders), built from flowlib's invertible layers.

References:
    Jan Jetze Beitler, Ivan Sosnovik, Arnold Smeulders. "PIE: Pseudo-Invertible Encoder", 2021.
    arXiv:2111.00619.

Sec. 3.1, restriction and extension. Data ``x in X``, a ``d``-dimensional manifold in ``R^D``. A bijection
``F_theta: R^D -> R^D`` maps ``x`` to ``[z, r]`` with ``z in R^d`` and ``r in R^(D-d)``; the residual ``r`` is
constrained to the graph of a function ``g: R^d -> R^(D-d)``. Then

    G(x) = z,      G^-1(z) = F_theta^-1([z, g(z)])                                                    (Eq. 4)

is the pseudo-invertible encoder: invertible on ``X`` (Eq. 3), a dimensionality reduction everywhere.

Sec. 3.2, likelihood. With ``p(z, r) = p(r | z) p(z)`` (Eq. 7), the constraint ``r = g(z)`` is the density
``delta(r - g(z)) p(z)`` (Eq. 9); the delta is approximated by a narrow Gaussian (Eq. 10-12), giving::

    log p(x) ~= log p(z) + log N(r | g(z), eps^2 I) + log |det dF/dx|                                 (Eq. 13)

with ``p(z) = N(0, I)``. Sec. 3.3: ``F`` is a composition of blocks that each factor out a residual (Eq. 14-16), so::

    log p(x) ~= log p(z) + sum_l log N(r_l | g_l(z_l), eps^2 I) + sum_l sum_k log |det J_kl|           (Eq. 17)

Sec. 3.4: with ``g_l = 0`` and ``eps = 1`` this is RealNVP's multi-scale architecture.

Sec. 4, architecture. Convolutional blocks: checkerboard downsampling ``C x H x W -> 4C x H/2 x W/2`` (4.4), then
``K`` times [PIE coupling (Eq. 18) + Householder 1x1 convolution (Eq. 19)], then a split that keeps half of the
channels (4.5, Eq. 20). Linear blocks: the same with features, Householder linear maps and no downsampling.
MNIST (Sec. 5.1): 2 convolutional blocks (784 -> 392 -> 196), linear blocks 196 -> 64 -> 10 -> 10, ``K = 3``,
three Householder reflections per linear map, Adam.

Choices the paper leaves open, made here:
    * positivity of the coupling scales: ``s = exp(2 tanh(raw / 2))`` (:class:`flowlib.transforms.PIECoupling`);
    * ``g``: a zero-initialised network, a small ResNet of 3x3 convolutions (:class:`flowlib.nets.ConvNet`) after
      convolutional blocks and an MLP (:class:`flowlib.nets.MLP`) after linear blocks; so training starts from
      ``g = 0``, the multi-scale RealNVP of Sec. 3.4 (with variance ``eps^2`` on the residuals);
    * pre-processing: uniform dequantization ``(x + u) / 256`` then a logit layer ``logit(0.05 + 0.9 x)`` whose
      log-det is part of ``log p(x)``, so the density is on ``[0, 1]^D`` and bits/dim use bin width 1/256;
      decoded images are mapped back through the sigmoid and clamped to ``[0, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from flowlib.metrics import bits_per_dim
from flowlib.nets import MLP, ConvNet
from flowlib.transforms import (
    Compose,
    Flatten,
    Householder1x1Conv,
    HouseholderLinear,
    InputShapeError,
    Logit,
    PIECoupling,
    Split,
    Squeeze,
    Transform,
    channel_mask,
    gaussian_log_prob,
    half_mask,
)
from flowlib.transforms._shapes import check_dtype, check_nonempty, module_dtype

__all__ = ["PIESplit", "conv_block", "linear_block", "PIE"]


# --- Sec. 4.5: the split (Eq. 20) -----------------------------------------------------------------------------


class PIESplit(Split):
    """PIE's split (Eq. 20): keep ``z``, score the residual ``r`` under ``N(r | g(z), eps^2 I)``, decode ``r = g(z)``.

    ``forward(x) -> (z, log N(r | g(z), eps^2 I))`` with ``x = [z, r]`` along dim 1 (the Gaussian term of Eq. 13/17);
    ``inverse(z) -> ([z, g(z)], -log N(g(z) | g(z), eps^2 I))``: the extension of Eq. 4. Passing ``r`` to
    ``inverse(z, r)`` restores it exactly instead (the strict inverse of ``forward``).

    Arguments:
        num_kept: entries of dim 1 kept as ``z``.
        g: network mapping ``z`` ``(B, num_kept, ...)`` to the residual's mean ``(B, num_features - num_kept, ...)``.
        eps_squared: the variance ``eps^2`` of the Gaussian that stands in for the delta (Eq. 11-12).
        num_features: size of dim 1 of the input; default ``2 * num_kept``.

    Shapes: ``(B, num_features, ...) -> (B, num_kept, ...)``, term ``(B,)``.

    Example:
        >>> import torch
        >>> from flowlib.nets import MLP
        >>> split = PIESplit(2, MLP(2, 2, hidden_features=8), eps_squared=0.01)
        >>> x = torch.randn(3, 4)
        >>> z, log_prob_r = split(x)
        >>> x_back, _ = split.inverse(z)
        >>> z.shape, torch.equal(x_back[:, 2:], torch.zeros(3, 2))   # g starts at 0 (zero-initialised)
        (torch.Size([3, 2]), True)
    """

    def __init__(self, num_kept: int, g: nn.Module, eps_squared: float, num_features: int | None = None):
        super().__init__(num_kept, dim=1, num_features=num_features, temperature=0.0)
        if not eps_squared > 0:
            raise ValueError(f"eps_squared must be positive, got {eps_squared}")
        self.g = g
        self.eps_squared = float(eps_squared)
        self.register_buffer("log_eps", torch.tensor(0.5 * math.log(eps_squared)))

    def conditional(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``g(z)`` and log-scale ``log eps`` of ``p(r | z)`` (Eq. 12)."""
        mean = self.g(z)
        expected = self._factored_shape(z)
        if list(mean.shape) != expected:
            raise InputShapeError(
                f"PIESplit: g must map z {tuple(z.shape)} to {tuple(expected)}, got {tuple(mean.shape)}"
            )
        return mean, self.log_eps.to(mean.dtype)

    def extra_repr(self) -> str:
        return f"num_kept={self.num_kept}, num_features={self.num_features}, eps_squared={self.eps_squared}"


# --- Sec. 4.1: convolutional and linear PIE blocks ---------------------------------------------------------------


def conv_block(
    input_shape: Sequence[int],
    eps_squared: float,
    *,
    num_steps: int = 3,
    num_reflections: int = 3,
    hidden_channels: int = 32,
    num_residual_blocks: int = 1,
) -> Compose:
    """Convolutional PIE block ``(B, C, H, W) -> (B, 2C, H/2, W/2)`` (half of the ``4C`` channels are split off).

    Checkerboard downsampling (Sec. 4.4), ``num_steps`` (``K_l``) times [PIE coupling on the two channel halves
    (Eq. 18) + Householder 1x1 convolution (Eq. 19)], then :class:`PIESplit` keeping 50% (Eq. 20).
    Conditioners and ``g`` are :class:`flowlib.nets.ConvNet` (``hidden_channels`` wide, ``num_residual_blocks``
    residual blocks).
    """
    channels, height, width = input_shape
    if height % 2 or width % 2:
        raise InputShapeError(f"conv_block needs an even height and width, got {tuple(input_shape)}; pad or crop first")
    squeezed = (4 * channels, height // 2, width // 2)

    def net(in_channels: int, out_channels: int) -> ConvNet:
        return ConvNet(in_channels, out_channels, hidden_channels, num_residual_blocks)

    layers: list[Transform] = [Squeeze(2, pattern="checkerboard")]  # Sec. 4.4
    for _ in range(num_steps):
        mask = channel_mask(*squeezed)  # halves along the channels (Sec. 4.2)
        layers.append(PIECoupling(mask, net(squeezed[0], 2 * squeezed[0]), net(squeezed[0], 2 * squeezed[0])))
        layers.append(Householder1x1Conv(squeezed[0], num_reflections))
    kept = squeezed[0] // 2
    layers.append(PIESplit(kept, net(kept, squeezed[0] - kept), eps_squared, num_features=squeezed[0]))  # Eq. 20
    return Compose(layers)


def linear_block(
    num_features: int,
    num_kept: int,
    eps_squared: float,
    *,
    num_steps: int = 3,
    num_reflections: int = 3,
    hidden_features: int = 128,
) -> Compose:
    """Linear PIE block ``(B, num_features) -> (B, num_kept)``: ``num_steps`` times [PIE coupling on the two feature
    halves (Eq. 18) + Householder linear map (Eq. 19)], then :class:`PIESplit` if ``num_kept < num_features``.
    Conditioners and ``g`` are two-hidden-layer :class:`flowlib.nets.MLP` of width ``hidden_features``."""
    if not 0 < num_kept <= num_features:
        raise ValueError(f"need 0 < num_kept <= num_features, got num_kept={num_kept}, num_features={num_features}")

    def net(in_features: int, out_features: int) -> MLP:
        return MLP(in_features, out_features, hidden_features, num_hidden_layers=2)

    layers: list[Transform] = []
    if num_features >= 2:  # a coupling needs two halves; a 1-d block is only the split/identity
        for _ in range(num_steps):
            mask = half_mask(num_features)
            layers.append(PIECoupling(mask, net(num_features, 2 * num_features), net(num_features, 2 * num_features)))
            layers.append(HouseholderLinear(num_features, num_reflections))
    if num_kept < num_features:
        g = net(num_kept, num_features - num_kept)
        layers.append(PIESplit(num_kept, g, eps_squared, num_features=num_features))  # Eq. 20
    return Compose(layers)


def _flatten_layers(transform: Transform) -> Iterator[Transform]:
    if isinstance(transform, Compose):
        for layer in transform.transforms:
            yield from _flatten_layers(layer)
    else:
        yield transform


# --- Sec. 3.3 / 5.1: the whole model (Eq. 17) --------------------------------------------------------------------


class PIE(nn.Module):
    """Gaussian PIE: convolutional blocks, then linear blocks, then ``N(0, I)`` on the final code (Eq. 17).

    Arguments:
        input_shape: event shape, ``(C, H, W)`` for images or ``(D,)`` for vectors (then ``num_conv_blocks=0``).
        num_conv_blocks: convolutional blocks, each halving the dimension.
        linear_dims: output size of each linear block; an entry equal to its input size does not reduce.
            The paper's MNIST model: ``(64, 10, 10)``; the code ``z`` has ``linear_dims[-1]`` entries.
        eps_squared: variance of the Gaussian replacing the delta (Eq. 11), the same at every split.
        num_steps: ``K_l``, couplings + Householder maps per block.
        num_reflections: Householder reflections per 1x1 convolution / linear map.
        hidden_channels, num_residual_blocks: width and depth of the convolutional conditioners and ``g``.
        hidden_features: width of the linear blocks' MLP conditioners and ``g``.
        logit_alpha: if not ``None``, the first layer is :class:`flowlib.transforms.Logit` (data in ``[0, 1]``).

    Example:
        >>> import torch
        >>> pie = PIE((1, 8, 8), num_conv_blocks=2, linear_dims=(4, 2), hidden_channels=4, hidden_features=8)
        >>> x = torch.rand(3, 1, 8, 8)
        >>> pie.encode(x).shape, pie.decode(pie.encode(x)).shape, pie.log_prob(x).shape
        (torch.Size([3, 2]), torch.Size([3, 1, 8, 8]), torch.Size([3]))
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_conv_blocks: int = 2,
        linear_dims: Sequence[int] = (64, 10, 10),
        eps_squared: float = 0.01,
        *,
        num_steps: int = 3,
        num_reflections: int = 3,
        hidden_channels: int = 32,
        num_residual_blocks: int = 1,
        hidden_features: int = 128,
        logit_alpha: float | None = 0.05,
    ):
        super().__init__()
        self.input_shape = tuple(int(size) for size in input_shape)
        self.eps_squared = float(eps_squared)
        if num_conv_blocks and len(self.input_shape) != 3:
            raise ValueError(f"convolutional blocks need input_shape (C, H, W), got {self.input_shape}")
        layers: list[Transform] = [Logit(logit_alpha)] if logit_alpha is not None else []
        shape = self.input_shape
        for _ in range(num_conv_blocks):
            layers.append(conv_block(shape, eps_squared, num_steps=num_steps, num_reflections=num_reflections,
                                     hidden_channels=hidden_channels, num_residual_blocks=num_residual_blocks))
            shape = (2 * shape[0], shape[1] // 2, shape[2] // 2)
        if len(shape) > 1:
            layers.append(Flatten(shape))
        num_features = math.prod(shape)
        for num_kept in linear_dims:
            layers.append(linear_block(num_features, num_kept, eps_squared, num_steps=num_steps,
                                       num_reflections=num_reflections, hidden_features=hidden_features))
            num_features = num_kept
        self.transform = Compose(layers)  # F_theta restricted to z: G (Eq. 4, 14)
        self.latent_dim = num_features
        self.num_dims = math.prod(self.input_shape)

    def _check(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.input_shape:
            raise InputShapeError(f"PIE expects input of shape (B, {', '.join(map(str, self.input_shape))}), "
                                  f"got {tuple(x.shape)}")
        check_dtype("PIE", x, module_dtype(self))

    def log_prob_terms(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The three sums of Eq. 17, each ``(B,)``: ``log p(z)``, the split terms ``sum_l log N(r_l | g_l(z_l),
        eps^2 I)`` and the log-dets ``sum_l sum_k log |det J_kl|`` (including the logit pre-processing)."""
        self._check(x)
        split_terms, logabsdets = x.new_zeros(x.shape[0]), x.new_zeros(x.shape[0])
        for layer in _flatten_layers(self.transform):
            x, term = layer(x)
            if isinstance(layer, PIESplit):
                split_terms = split_terms + term
            else:
                logabsdets = logabsdets + term
        zero = x.new_zeros(())
        return gaussian_log_prob(x, zero, zero), split_terms, logabsdets  # p(z) = N(0, I)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` of Eq. 17 in nats, ``(B, *input_shape) -> (B,)``."""
        log_prior, split_terms, logabsdets = self.log_prob_terms(x)
        return log_prior + split_terms + logabsdets  # Eq. 17

    def loss(self, x: Tensor) -> Tensor:
        """Training objective: ``-log p(x)`` (Eq. 5, 17) averaged over the batch, in nats per dimension."""
        check_nonempty("PIE.loss", x)
        return -self.log_prob(x).mean() / self.num_dims

    def bits_per_dim(self, x: Tensor, bin_width: float = 1 / 256) -> Tensor:
        """``(B,)`` bits per dimension of data in ``[0, 1]`` dequantized with bins of width ``bin_width``."""
        return bits_per_dim(self.log_prob(x), self.num_dims, bin_width)

    def encode(self, x: Tensor) -> Tensor:
        """The pseudo-invertible encoder ``G(x) = z`` (Eq. 4): ``(B, *input_shape) -> (B, latent_dim)``."""
        self._check(x)
        return self.transform(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """``G^-1(z) = F^-1([z, g(z)])`` (Eq. 4), every residual set to ``r_l = g_l(z_l)`` (Eq. 20):
        ``(B, latent_dim) -> (B, *input_shape)``, clamped to ``[0, 1]`` when the model has a logit layer."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise InputShapeError(f"PIE.decode expects codes of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        x = self.transform.inverse(z)[0]
        return x.clamp(0.0, 1.0) if isinstance(self.transform[0], Logit) else x

    def sample(self, num_samples: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """Decode ``z ~ N(0, temperature^2 I)``: ``(num_samples, *input_shape)``."""
        device = next(self.parameters()).device
        z = torch.randn(num_samples, self.latent_dim, generator=generator).to(device) * temperature
        return self.decode(z)

    def forward(self, x: Tensor) -> Tensor:
        return self.log_prob(x)
