"""Self-supervised VAEs (selfVAE) and VAEs with flow priors, for 8-bit images.

References:
    Self-Supervised Variational Auto-Encoders. Ioannis Gatopoulos, Jakub M. Tomczak, 2020. arXiv:2010.02014.
    Super-resolution Variational Auto-Encoders (srVAE). Gatopoulos, Stol, Tomczak, 2020. arXiv:2006.05218.
    PixelCNN++ (the discretized logistic mixture likelihood). Salimans, Karpathy, Chen, Kingma, 2017.
    arXiv:1701.05517.
    Importance Weighted Autoencoders. Burda, Grosse, Salakhutdinov, 2015. arXiv:1509.00519.

Method (section numbers of the selfVAE paper; the pixels ``x`` are integers in ``{0, ..., 255}``):

* **VAE with a bijective prior** (Sec. 2.2, App. A.2). ``q(z|x)`` is a diagonal Gaussian, ``p(x|z)`` a discretized
  logistic mixture per pixel, and the prior ``p(z)`` is ``N(0, I)``, a mixture of Gaussians, or a RealNVP flow
  ``z = f(v)``, ``v ~ N(0, I)``, whose density comes from the change of variables,
  ``log p(z) = log N(f^{-1}(z) | 0, I) + log |det df^{-1}(z)/dz|``. The ELBO is
  ``E_q[log p(x|z)] - E_q[log q(z|x) - log p(z)]`` (Sec. 2.1-2.2).

* **selfVAE** (Sec. 3.2). A deterministic, discrete transformation ``y = d(x)`` (downscaling or a sketch) is an
  extra variable with ``q(y|x) = delta(y - d(x))``, so ``E_q[log q(y|x)] = 0``; two stochastic latents ``u`` (the
  global structure, from ``y``) and ``z`` (the rest, from ``x``) give the generative model
  ``p(x, y, z, u) = p(x|y, z) p(z|y, u) p(y|u) p(u)`` and the bound of **Eq. 2**::

      L(x) = E[log p(x|y,z)] + E[log p(y|u)] - E[KL(q(z|x) || p(z|y,u))] - E[KL(q(u|y) || p(u))]
              \\___ RE_x ___/   \\__ RE_y __/     \\________ KL_z ________/    \\______ KL_u ______/

  ``p(y|u)`` and ``p(x|y, z)`` are discretized logistic mixtures, ``p(z|y, u)``, ``q(z|x)``, ``q(u|y)`` diagonal
  Gaussians and ``p(u)`` a RealNVP. Because ``y`` is discrete and fixed by ``x``, the bound is on
  ``log p(x, y = d(x)) <= log p(x)``.

* **Hierarchical selfVAE** (Sec. 3.4, Fig. 4). ``K`` transformations applied in turn, ``y_K = d(x)``,
  ``y_{k-1} = d(y_k)``, with ``y_{K+1} = x`` and ``z_0 = u``::

      L(x) = sum_k E[log p(y_{k+1}|y_k, z_k)] + E[log p(y_1|u)] - KL(q(u|y_1) || p(u))
             - sum_k E[KL(q(z_k|y_{k+1}) || p(z_k|y_k, z_{k-1}))]

  (the paper's sum of KL terms starts at ``k = 2``; with ``z_0 = u`` the ``k = 1`` term is ``KL_z`` of Eq. 2, which
  we keep). ``K = 1`` is Eq. 2, and ``K = 0`` (no transformation) is the plain VAE: one class covers all of them.

* **Operations** (Sec. 3.3, Fig. 3). Going top-down, each latent is either *inferred* from the data (and must be
  sent, which costs its KL divergence from the prior in bits) or *sampled* from the model (free), and each ``y`` is
  either *observed* (sent losslessly: its code length ``-log2 p(y|parents)``) or sampled. Generation infers
  nothing; conditional generation observes ``y``; conditional reconstruction observes ``y`` and infers ``z``;
  reconstruction 1 infers ``u``; reconstruction 2 infers ``u`` and ``z`` (see :data:`FIG3_OPERATIONS`).

* **Networks** (Sec. 4.1, App. A.3). DenseNet blocks (Huang et al., 2016) with ELU activations, weight
  normalisation (Salimans & Kingma, 2016) and channel attention (Zhang et al., 2018) at the end of every block;
  strided convolutions downscale, transposed convolutions upscale. Log-variances are clipped to ``[-7, 7]`` and
  the likelihoods use 10 mixture components (srVAE's settings).

Differences from the paper: no data-dependent initialisation of the weight-normalised layers; the colour channels of
the logistic mixture are independent (PixelCNN++ couples them linearly), which changes nothing for grey images.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from flowlib.distributions import DiscretizedLogisticMixture, StandardNormal
from flowlib.metrics import bits_per_dim
from flowlib.models.flow import Flow
from flowlib.models.realnvp import realnvp_vector
from flowlib.models.vae import gaussian_kl, reparameterize
from flowlib.nets import ConvNet
from flowlib.transforms import AffineCoupling, Compose, channel_mask, checkerboard_mask
from flowlib.transforms.split import gaussian_log_prob

__all__ = [
    "FIG3_OPERATIONS",
    "ChannelAttention",
    "DenseBlock",
    "DenseNetwork",
    "Downscale",
    "GaussianMixture",
    "SelfVAE",
    "Sketch",
    "latent_prior",
    "latent_realnvp",
    "logistic_mixture",
    "selfvae",
    "vae",
]

HALF_RANGE = 127.5  # pixels {0, ..., 255} <-> [-1, 1]
LOG_VARIANCE_BOUND = 7.0  # srVAE clips every Gaussian log-variance to [-7, 7]
LOG_SCALE_MIN = -7.0  # PixelCNN++: smallest logistic log-scale, in units of the half range

# The five operations of Fig. 3 for the one-level selfVAE: which latents are inferred from the data (and sent)
# and which transformed images are observed (and sent losslessly); everything else is sampled from the model.
FIG3_OPERATIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "generation": dict(infer=(), observe=()),
    "conditional generation": dict(infer=("u",), observe=("y",)),
    "conditional reconstruction": dict(infer=("u", "z"), observe=("y",)),
    "reconstruction 1": dict(infer=("u",), observe=()),
    "reconstruction 2": dict(infer=("u", "z"), observe=()),
}


# --- deterministic, discrete transformations d(x) (Sec. 3.1, App. A.1) ------------------------------------------


def _check_integer_images(x: Tensor, who: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{who} expects integer images of shape (B, C, H, W), got {tuple(x.shape)}")
    if x.is_floating_point():
        raise TypeError(f"{who} expects integer pixels in {{0, ..., 255}} (uint8 or int64), got {x.dtype}; "
                        "load the data with form='uint8'")


class Downscale(nn.Module):
    """``d(x)``: the mean of every ``factor x factor`` block, rounded half up; integers in, integers out.

    Exact integer arithmetic, so the result is the same on every machine and device (a deterministic, discrete
    ``q(y|x)``, Sec. 3.2). Shapes: ``(B, C, H, W) -> (B, C, H / factor, W / factor)``, ``int64``.

    Arguments:
        factor: the downscaling factor per side (2 halves the resolution, as in the paper).

    Example:
        >>> import torch
        >>> Downscale(2)(torch.tensor([[[[0, 1], [1, 1]]]]))  # (0 + 1 + 1 + 1) / 4 = 0.75 -> 1
        tensor([[[[1]]]])
    """

    def __init__(self, factor: int = 2):
        super().__init__()
        if factor < 2:
            raise ValueError(f"factor must be at least 2, got {factor}")
        self.factor = factor

    def output_shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """``(C, H, W) -> (C, H / factor, W / factor)``; raises if ``H`` or ``W`` is not divisible."""
        channels, height, width = shape
        if height % self.factor or width % self.factor:
            raise ValueError(f"Downscale({self.factor}) needs H and W divisible by {self.factor}, got {height}x{width}")
        return channels, height // self.factor, width // self.factor

    def forward(self, x: Tensor) -> Tensor:
        _check_integer_images(x, "Downscale")
        batch, channels, height, width = x.shape
        self.output_shape((channels, height, width))
        f = self.factor
        blocks = x.long().reshape(batch, channels, height // f, f, width // f, f)
        return torch.div(blocks.sum(dim=(3, 5)) + f * f // 2, f * f, rounding_mode="floor")

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class Sketch(nn.Module):
    """``d(x)``: a pencil sketch by colour dodge (App. A.6): grey ``g``, blur its inverse, divide.

        b = GaussianBlur(255 - g),    sketch = min(255, round(256 g / (255 - b)))     (0 where b = 255)

    Where the image is flat, ``b = 255 - g`` and the sketch saturates to white; only edges stay dark, so the
    sketch keeps the shapes and drops the texture. The paper's photographs are light; for dark-background data
    (MNIST, Fashion-MNIST) ``invert=True`` draws on the negative (dark strokes on white paper) and inverts the
    result back, so edges come out light on black like the data. Computed in float64 and rounded: deterministic
    and discrete. Shapes: ``(B, C, H, W) -> (B, 1, H, W)``, ``int64`` (colour images are averaged to grey first).

    Arguments:
        kernel_size: side of the Gaussian blur kernel (odd).
        sigma: its standard deviation in pixels.
        invert: treat the image as light-on-dark (see above).

    Example:
        >>> import torch
        >>> Sketch()(torch.full((1, 1, 6, 6), 200)).unique().tolist()  # a flat image has no edges: all white
        [255]
    """

    def __init__(self, kernel_size: int = 5, sigma: float = 1.0, invert: bool = False):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.kernel_size, self.sigma, self.invert = kernel_size, sigma, invert
        offsets = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
        weights = torch.exp(-offsets.square() / (2 * sigma**2))
        weights = weights / weights.sum()
        self.register_buffer("kernel", torch.outer(weights, weights).view(1, 1, kernel_size, kernel_size),
                             persistent=False)

    def output_shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """``(C, H, W) -> (1, H, W)``."""
        _, height, width = shape
        return 1, height, width

    def forward(self, x: Tensor) -> Tensor:
        _check_integer_images(x, "Sketch")
        grey = torch.round(x.double().mean(dim=1, keepdim=True))
        if self.invert:
            grey = 255.0 - grey
        pad = self.kernel_size // 2
        blurred = F.conv2d(F.pad(255.0 - grey, (pad, pad, pad, pad), mode="replicate"), self.kernel.to(grey.device))
        denominator = 255.0 - blurred
        dodge = torch.where(denominator > 0, 256.0 * grey / denominator.clamp_min(1e-12), torch.zeros_like(grey))
        sketch = torch.round(dodge).clamp(0, 255)
        if self.invert:
            sketch = 255.0 - sketch
        return sketch.long()

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, sigma={self.sigma}, invert={self.invert}"


# --- network blocks (Sec. 4.1, App. A.3, Fig. 11) ------------------------------------------------------------------


def _conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Module:
    """A weight-normalised convolution that keeps the size (``stride=1``) or halves it (``stride=2``)."""
    return weight_norm(nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2))


def _upsample(in_channels: int, out_channels: int) -> nn.Module:
    """A weight-normalised 3x3 transposed convolution that doubles the size (Sec. A.3: 'plain transposed
    convolution')."""
    return weight_norm(nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1), dim=1)


class ChannelAttention(nn.Module):
    """Channel attention (Zhang et al., 2018, RCAN): rescale every channel by a gate computed from the global mean.

    ``x * sigmoid(W2 elu(W1 mean_hw(x)))``; shapes ``(B, C, H, W) -> (B, C, H, W)``.

    Arguments:
        num_channels: ``C``.
        reduction: the gate's hidden width is ``max(1, C // reduction)``.

    Example:
        >>> import torch
        >>> ChannelAttention(8)(torch.randn(2, 8, 5, 5)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(self, num_channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(1, num_channels // reduction)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), _conv(num_channels, hidden, 1), nn.ELU(), _conv(hidden, num_channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class DenseBlock(nn.Module):
    """A densely connected block (Huang et al., 2016) with ELU, weight norm and channel attention at the end.

    Each of ``num_layers`` layers computes ``growth_rate`` new channels from everything before it,
    ``conv3x3(elu(h))``, and concatenates them; channel attention rescales the result:
    ``(B, C, H, W) -> (B, C + num_layers * growth_rate, H, W)``. (DenseNet-B's 1x1 bottleneck only pays off at
    widths far above the ones used here, so the layers convolve directly.)

    Example:
        >>> import torch
        >>> DenseBlock(4, growth_rate=3, num_layers=2)(torch.randn(1, 4, 7, 7)).shape
        torch.Size([1, 10, 7, 7])
    """

    def __init__(self, in_channels: int, growth_rate: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList()
        channels = in_channels
        for _ in range(num_layers):
            self.layers.append(nn.Sequential(nn.ELU(), _conv(channels, growth_rate, 3)))
            channels += growth_rate
        self.out_channels = channels
        self.attention = ChannelAttention(channels)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return self.attention(x)


class DenseNetwork(nn.Module):
    """A DenseNet encoder or decoder that rescales by ``2 ** rescale``: ``(B, C_in, H, W) -> (B, C_out, H', W')``.

    Dense blocks work at the lower resolutions only, where they are cheap (App. A.3, Fig. 11):

    * encoder (``rescale < 0``): a 3x3 stem to ``width`` channels, then ``|rescale|`` times [a strided 3x3
      convolution to ``width`` channels, a dense block], then a 3x3 output convolution;
    * decoder (``rescale > 0``): a 3x3 stem, then ``rescale`` times [a dense block, a 3x3 transposed convolution
      back to ``width`` channels], then a 1x1 output convolution at the full size;
    * ``rescale = 0``: stem, one dense block, 3x3 output convolution.

    Every convolution is weight-normalised, and ELUs sit between them.

    Arguments:
        in_channels, out_channels: ``C_in``, ``C_out``.
        rescale: ``H' = H * 2 ** rescale`` (``-2``: 28 -> 7; ``+2``: 7 -> 28).
        width, growth_rate, num_layers: channels between blocks, and each :class:`DenseBlock`'s growth and depth.

    Example:
        >>> import torch
        >>> DenseNetwork(1, 8, rescale=-2, width=8, growth_rate=4, num_layers=1)(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 8, 7, 7])
    """

    def __init__(self, in_channels: int, out_channels: int, *, rescale: int, width: int, growth_rate: int,
                 num_layers: int):
        super().__init__()
        self.in_channels, self.rescale = in_channels, rescale
        layers: list[nn.Module] = [_conv(in_channels, width, 3)]
        channels = width
        if rescale < 0:
            for _ in range(-rescale):
                block = DenseBlock(width, growth_rate, num_layers)
                layers += [nn.ELU(), _conv(channels, width, 3, stride=2), block]
                channels = block.out_channels
            layers += [nn.ELU(), _conv(channels, out_channels, 3)]
        elif rescale > 0:
            for _ in range(rescale):
                block = DenseBlock(width, growth_rate, num_layers)
                layers += [block, nn.ELU(), _upsample(block.out_channels, width)]
            layers += [nn.ELU(), _conv(width, out_channels, 1)]
        else:
            block = DenseBlock(width, growth_rate, num_layers)
            layers += [block, nn.ELU(), _conv(block.out_channels, out_channels, 3)]
        self.network = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"DenseNetwork expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.network(x)


# --- likelihoods and priors -------------------------------------------------------------------------------------


def to_network_input(y: Tensor) -> Tensor:
    """Integer pixels ``{0, ..., 255}`` as floats in ``[-1, 1]`` (what the networks see)."""
    return y.float() / HALF_RANGE - 1.0


def logistic_mixture(parameters: Tensor, num_channels: int, num_components: int) -> DiscretizedLogisticMixture:
    """The discretized logistic mixture on ``{0, ..., 255}`` of every pixel, from a network's output.

    ``parameters`` ``(B, 3 * C * M, H, W)`` holds, per channel and component, the mixture logits, the means (in
    ``[-1, 1]`` units: pixel ``127.5 * (1 + m)``) and the log-scales (clipped below at -7 in those units, as in
    PixelCNN++). ``log_prob`` of ``(B, C, H, W)`` integers returns ``(B, C, H, W)`` log-probabilities in nats.

    Example:
        >>> import torch
        >>> mixture = logistic_mixture(torch.zeros(2, 30, 4, 4), num_channels=1, num_components=10)
        >>> mixture.log_prob(torch.zeros(2, 1, 4, 4, dtype=torch.long)).shape
        torch.Size([2, 1, 4, 4])
    """
    batch, size, height, width = parameters.shape
    if size != 3 * num_channels * num_components:
        raise ValueError(f"expected {3 * num_channels * num_components} parameter channels "
                         f"(3 x {num_channels} channels x {num_components} components), got {size}")
    grouped = parameters.view(batch, 3, num_channels, num_components, height, width).permute(1, 0, 2, 4, 5, 3)
    logits, means, log_scales = grouped[0], grouped[1], grouped[2]
    return DiscretizedLogisticMixture(
        HALF_RANGE * (1.0 + means), log_scales.clamp_min(LOG_SCALE_MIN) + math.log(HALF_RANGE), logits, 0, 255)


def mixture_mean(mixture: DiscretizedLogisticMixture) -> Tensor:
    """The mean pixel value ``sum_m w_m clamp(mu_m, 0, 255)`` of each mixture (a float image, ``(B, C, H, W)``)."""
    weights = torch.softmax(mixture.logit_weights, dim=-1)
    return (weights * mixture.means.clamp(0.0, 255.0)).sum(dim=-1)


class GaussianMixture(nn.Module):
    """A mixture of ``num_components`` diagonal Gaussians with equal weights over ``event_shape`` (VAE + MoG prior).

    Means start at ``0.1 N(0, I)`` and variances at 1, so the prior starts close to ``N(0, I)``; both are learned.

    Shapes: ``log_prob``: ``(B, *event_shape) -> (B,)``; ``sample(n)``: ``(n, *event_shape)``.

    Example:
        >>> import torch
        >>> prior = GaussianMixture((2, 3, 3), num_components=4)
        >>> prior.log_prob(prior.sample(5)).shape
        torch.Size([5])
    """

    def __init__(self, event_shape: int | Sequence[int], num_components: int = 10):
        super().__init__()
        self.event_shape = (int(event_shape),) if isinstance(event_shape, int) else tuple(event_shape)
        num_features = math.prod(self.event_shape)
        self.means = nn.Parameter(0.1 * torch.randn(num_components, num_features))
        self.log_scales = nn.Parameter(torch.zeros(num_components, num_features))

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def log_prob(self, u: Tensor) -> Tensor:
        if tuple(u.shape[1:]) != self.event_shape:
            raise ValueError(f"GaussianMixture expects (B, {', '.join(map(str, self.event_shape))}), "
                             f"got {tuple(u.shape)}")
        normalized = (u.reshape(len(u), 1, -1) - self.means) * torch.exp(-self.log_scales)  # (B, M, D)
        components = (-0.5 * normalized.square() - self.log_scales - 0.5 * math.log(2 * math.pi)).sum(-1)
        return torch.logsumexp(components, dim=1) - math.log(self.num_components)

    def sample(self, num_samples: int, temperature: float = 1.0) -> Tensor:
        index = torch.randint(self.num_components, (num_samples,), device=self.means.device)
        noise = torch.randn(num_samples, self.means.shape[1], device=self.means.device)
        draws = self.means[index] + temperature * self.log_scales[index].exp() * noise
        return draws.view(num_samples, *self.event_shape)

    def forward(self, u: Tensor) -> Tensor:
        return self.log_prob(u)


def latent_realnvp(event_shape: Sequence[int], *, num_couplings: int = 4, hidden_channels: int = 32,
                   num_blocks: int = 1) -> Flow:
    """A RealNVP prior ``p(u)`` over latents of shape ``(C, H, W)`` (or ``(D,)``), built from flowlib couplings.

    Affine couplings (RealNVP Eq. 9) alternate in pairs between checkerboard masks (parity 0, 1) and channel masks
    (parity 0, 1), each with a :class:`~flowlib.nets.ConvNet` computing ``(s, t)``; no squeeze, since latents are
    small (7x7 for MNIST). Vectors use :func:`~flowlib.models.realnvp.realnvp_vector`. The conditioners'
    last layers start at zero, so the prior starts as exactly ``N(0, I)``.

    Example:
        >>> import torch
        >>> prior = latent_realnvp((4, 7, 7), num_couplings=4, hidden_channels=8)
        >>> bool(torch.allclose(prior.log_prob(torch.zeros(1, 4, 7, 7)), StandardNormal((4, 7, 7)).log_prob(
        ...     torch.zeros(1, 4, 7, 7))))
        True
    """
    shape = tuple(int(size) for size in event_shape)
    if len(shape) == 1:
        return realnvp_vector(shape[0], num_couplings=num_couplings, hidden_features=hidden_channels)
    if len(shape) != 3:
        raise ValueError(f"latent_realnvp expects an event shape (C, H, W) or (D,), got {shape}")
    num_channels = shape[0]
    layers = []
    for index in range(num_couplings):
        use_channels = (index // 2) % 2 == 1 and num_channels >= 2
        mask = (channel_mask if use_channels else checkerboard_mask)(*shape, parity=index % 2)
        layers.append(AffineCoupling(mask, ConvNet(num_channels, 2 * num_channels, hidden_channels, num_blocks)))
    return Flow(Compose(*layers), StandardNormal(shape))


def latent_prior(kind: Literal["normal", "mog", "realnvp"], event_shape: Sequence[int], *, num_components: int = 10,
                 num_couplings: int = 4, hidden_channels: int = 32, num_blocks: int = 1) -> nn.Module:
    """The prior ``p(u)`` of App. A.2: ``"normal"`` (``N(0, I)``), ``"mog"`` (:class:`GaussianMixture`) or
    ``"realnvp"`` (:func:`latent_realnvp`). Each has ``log_prob(u) -> (B,)`` and ``sample(n, temperature)``.

    Example:
        >>> latent_prior("mog", (2, 3, 3), num_components=3).sample(4).shape
        torch.Size([4, 2, 3, 3])
    """
    if kind == "normal":
        return StandardNormal(tuple(event_shape))
    if kind == "mog":
        return GaussianMixture(event_shape, num_components)
    if kind == "realnvp":
        return latent_realnvp(event_shape, num_couplings=num_couplings, hidden_channels=hidden_channels,
                              num_blocks=num_blocks)
    raise ValueError(f"unknown prior {kind!r}; choose 'normal', 'mog' or 'realnvp'")


# --- the model ------------------------------------------------------------------------------------------------------


def _num_doublings(size: int, latent_size: int, what: str) -> int:
    ratio = size / latent_size
    doublings = round(math.log2(ratio)) if ratio >= 1 else -1
    if doublings < 0 or latent_size * 2**doublings != size:
        raise ValueError(f"{what} of size {size} must be latent_size ({latent_size}) times a power of 2; "
                         "choose latent_size accordingly (7 for 28x28 images, 8 for 32x32)")
    return doublings


def _gaussian(parameters: Tensor) -> tuple[Tensor, Tensor]:
    """Split a network output into a mean and a log-variance clipped to ``[-7, 7]``."""
    mean, log_variance = parameters.chunk(2, dim=1)
    return mean, F.hardtanh(log_variance, -LOG_VARIANCE_BOUND, LOG_VARIANCE_BOUND)


def _log_normal(value: Tensor, mean: Tensor, log_variance: Tensor) -> Tensor:
    return gaussian_log_prob(value, mean, 0.5 * log_variance)


@dataclass(frozen=True)
class _Sizes:
    width: int
    growth_rate: int
    num_layers: int

    def network(self, in_channels: int, out_channels: int, rescale: int) -> DenseNetwork:
        return DenseNetwork(in_channels, out_channels, rescale=rescale, width=self.width,
                            growth_rate=self.growth_rate, num_layers=self.num_layers)


class _Top(nn.Module):
    """The top of the hierarchy, a VAE on ``y_1``: ``q(u|y_1)``, ``p(y_1|u)`` and the prior ``p(u)``."""

    def __init__(self, data_shape: Sequence[int], latent_channels: int, latent_size: int, prior: nn.Module,
                 sizes: _Sizes, num_components: int):
        super().__init__()
        channels, size = data_shape[0], data_shape[1]
        doublings = _num_doublings(size, latent_size, "the top image y_1")
        self.posterior = sizes.network(channels, 2 * latent_channels, -doublings)  # q(u|y_1)
        self.likelihood = sizes.network(latent_channels, 3 * channels * num_components, doublings)  # p(y_1|u)
        self.prior = prior  # p(u)


class _Level(nn.Module):
    """Level ``k`` of the hierarchy: ``q(z_k|y_{k+1})``, ``p(z_k|y_k, z_{k-1})`` and ``p(y_{k+1}|y_k, z_k)``."""

    def __init__(self, coarse_shape: Sequence[int], fine_shape: Sequence[int], parent_channels: int,
                 latent_channels: int, latent_size: int, sizes: _Sizes, num_components: int):
        super().__init__()
        coarse_channels, coarse_size = coarse_shape[0], coarse_shape[1]
        fine_channels, fine_size = fine_shape[0], fine_shape[1]
        self.fine_size = fine_size
        fine_doublings = _num_doublings(fine_size, latent_size, "the image y_{k+1}")
        coarse_doublings = _num_doublings(coarse_size, latent_size, "the image y_k")
        self.posterior = sizes.network(fine_channels, 2 * latent_channels, -fine_doublings)  # q(z_k|y_{k+1})
        # p(z_k|y_k, z_{k-1}): features of y_k at the latent size, joined with z_{k-1}
        self.prior_features = sizes.network(coarse_channels, sizes.width, -coarse_doublings)
        self.prior = sizes.network(sizes.width + parent_channels, 2 * latent_channels, 0)
        # p(y_{k+1}|y_k, z_k): z_k decoded to the fine size, joined with y_k upsampled (nearest) to it, then a
        # light head at the full resolution (a dense block there would cost more than the rest of the level)
        self.latent_features = sizes.network(latent_channels, sizes.width, fine_doublings)
        self.likelihood = nn.Sequential(
            nn.ELU(), _conv(sizes.width + coarse_channels, sizes.width, 3), nn.ELU(),
            _conv(sizes.width, 3 * fine_channels * num_components, 1),
        )

    def coarse_features(self, coarse: Tensor) -> Tensor:
        """Features of ``y_k`` at the latent size, the input of ``p(z_k|y_k, z_{k-1})`` besides ``z_{k-1}``."""
        return self.prior_features(to_network_input(coarse))

    def prior_parameters(self, features: Tensor, parent: Tensor) -> tuple[Tensor, Tensor]:
        """``p(z_k|y_k, z_{k-1})`` from :meth:`coarse_features` of ``y_k`` and ``z_{k-1}``: mean, log-variance."""
        return _gaussian(self.prior(torch.cat([features, parent], dim=1)))

    def likelihood_parameters(self, coarse: Tensor, latent: Tensor) -> Tensor:
        upsampled = F.interpolate(to_network_input(coarse), size=self.fine_size, mode="nearest")
        return self.likelihood(torch.cat([self.latent_features(latent), upsampled], dim=1))


class SelfVAE(nn.Module):
    """The (hierarchical) self-supervised VAE of Sec. 3; with no transformation, the VAE of App. A.2.

    Arguments:
        image_shape: ``(C, H, W)`` of the 8-bit images ``x``.
        transforms: the deterministic discrete transformations, applied to ``x`` in turn: ``[]`` for a VAE,
            ``[Downscale(2)]`` or ``[Sketch()]`` for a selfVAE (Eq. 2), ``[Downscale(2), Downscale(2)]`` for the
            three-level model 28 -> 14 -> 7 of Sec. 3.4.
        prior: ``p(u)`` (see :func:`latent_prior`), built for ``(latent_channels, latent_size, latent_size)``.
        latent_channels, latent_size: every latent (``u`` and each ``z_k``) has that shape.
        width, growth_rate, num_layers: the :class:`DenseNetwork` sizes.
        num_components: logistic mixture components of every likelihood.

    Names: the data levels are ``["x"]`` for a VAE, ``["y", "x"]`` for one transformation and
    ``["y1", ..., "yK", "x"]`` for ``K``; the latents are ``["z"]``, ``["u", "z"]`` and ``["u", "z1", ..., "zK"]``.
    :meth:`elbo_terms` returns ``RE_<data>`` (``E log p``, <= 0) and ``KL_<latent>`` (>= 0 on average) in nats,
    with ``ELBO = sum(RE) - sum(KL)``.

    Example:
        >>> import torch
        >>> model = SelfVAE((1, 28, 28), [Downscale(2)], latent_prior("normal", (2, 7, 7)), latent_channels=2,
        ...                 latent_size=7, width=8, growth_rate=4, num_layers=1, num_components=2)
        >>> x = torch.randint(0, 256, (3, 1, 28, 28))
        >>> sorted(model.elbo_terms(x)), model.loss(x).shape
        (['KL_u', 'KL_z', 'RE_x', 'RE_y'], torch.Size([]))
    """

    def __init__(self, image_shape: Sequence[int], transforms: Sequence[nn.Module], prior: nn.Module, *,
                 latent_channels: int = 4, latent_size: int = 7, width: int = 32, growth_rate: int = 16,
                 num_layers: int = 2, num_components: int = 10):
        super().__init__()
        self.image_shape = tuple(int(size) for size in image_shape)
        if len(self.image_shape) != 3 or self.image_shape[1] != self.image_shape[2]:
            raise ValueError(f"image_shape must be (C, H, H) for square images, got {tuple(image_shape)}")
        self.transforms = nn.ModuleList(transforms)
        self.latent_shape = (latent_channels, latent_size, latent_size)
        self.num_components = num_components
        # shapes of y_1, ..., y_K, x (coarse to fine)
        shapes = [self.image_shape]
        for transform in self.transforms:
            shapes.insert(0, transform.output_shape(shapes[0]))
        self.data_shapes = [tuple(shape) for shape in shapes]
        num_levels = len(self.transforms)
        if num_levels == 0:
            self.data_names, self.latent_names = ["x"], ["z"]
        elif num_levels == 1:
            self.data_names, self.latent_names = ["y", "x"], ["u", "z"]
        else:
            self.data_names = [f"y{k}" for k in range(1, num_levels + 1)] + ["x"]
            self.latent_names = ["u"] + [f"z{k}" for k in range(1, num_levels + 1)]
        sizes = _Sizes(width, growth_rate, num_layers)
        self.top = _Top(self.data_shapes[0], latent_channels, latent_size, prior, sizes, num_components)
        self.levels = nn.ModuleList(
            _Level(coarse, fine, latent_channels, latent_channels, latent_size, sizes, num_components)
            for coarse, fine in zip(self.data_shapes[:-1], self.data_shapes[1:])
        )

    @property
    def prior(self) -> nn.Module:
        """``p(u)``."""
        return self.top.prior

    @property
    def num_dims(self) -> int:
        """``D``, the number of pixel values of one image ``x`` (bits per dimension divide by it)."""
        return math.prod(self.image_shape)

    # -- q(y|x): the deterministic transformations --

    def transformed(self, x: Tensor) -> list[Tensor]:
        """``[y_1, ..., y_K, x]`` for integer images ``x`` ``(B, C, H, W)`` (coarse to fine, ``int64``)."""
        if tuple(x.shape[1:]) != self.image_shape or x.dim() != 4:
            raise ValueError(f"SelfVAE expects images of shape (B, {', '.join(map(str, self.image_shape))}), "
                             f"got {tuple(x.shape)}")
        _check_integer_images(x, "SelfVAE")
        ys = [x.long()]
        for transform in reversed(self.transforms):
            ys.insert(0, transform(ys[0]))
        return ys

    def _likelihood(self, parameters: Tensor, level: int) -> DiscretizedLogisticMixture:
        return logistic_mixture(parameters, self.data_shapes[level][0], self.num_components)

    def top_posterior(self, y1: Tensor) -> tuple[Tensor, Tensor]:
        """``q(u|y_1)``: mean and log-variance ``(B, *latent_shape)``."""
        return _gaussian(self.top.posterior(to_network_input(y1)))

    # -- the bound --

    def _terms(self, x: Tensor, num_samples: int = 1) -> dict[str, Tensor]:
        """One pass with ``num_samples`` posterior draws per image; every entry ``(num_samples, B)`` in nats:
        ``RE_*`` (log-likelihoods), ``KL_*`` (KL_u single-sample, KL_z analytic) and ``log_weight`` (the
        importance weight ``log p(x, y, latents) - log q(latents | x)``)."""
        ys = self.transformed(x)
        batch = len(x)

        def repeat(t: Tensor) -> Tensor:  # (B, ...) -> (S * B, ...), sample-major
            return t.repeat(num_samples, *([1] * (t.dim() - 1)))

        terms: dict[str, Tensor] = {}
        mean, log_variance = self.top_posterior(ys[0])
        mean, log_variance = repeat(mean), repeat(log_variance)
        u = reparameterize(mean, log_variance)
        log_q_u = _log_normal(u, mean, log_variance)
        log_p_u = self.prior.log_prob(u)
        data = [repeat(y) for y in ys]
        terms[f"RE_{self.data_names[0]}"] = self._likelihood(self.top.likelihood(u), 0).log_prob(
            data[0]).flatten(1).sum(1)
        terms[f"KL_{self.latent_names[0]}"] = log_q_u - log_p_u
        log_weight = terms[f"RE_{self.data_names[0]}"] + log_p_u - log_q_u
        parent = u
        for k, level in enumerate(self.levels):
            q_mean, q_log_variance = _gaussian(level.posterior(to_network_input(ys[k + 1])))
            q_mean, q_log_variance = repeat(q_mean), repeat(q_log_variance)
            z = reparameterize(q_mean, q_log_variance)
            p_mean, p_log_variance = level.prior_parameters(repeat(level.coarse_features(ys[k])), parent)
            fine = self._likelihood(level.likelihood_parameters(data[k], z), k + 1).log_prob(data[k + 1])
            terms[f"RE_{self.data_names[k + 1]}"] = fine.flatten(1).sum(1)
            terms[f"KL_{self.latent_names[k + 1]}"] = gaussian_kl(q_mean, q_log_variance, p_mean, p_log_variance)
            log_weight = (log_weight + terms[f"RE_{self.data_names[k + 1]}"] + _log_normal(z, p_mean, p_log_variance)
                          - _log_normal(z, q_mean, q_log_variance))
            parent = z
        terms["log_weight"] = log_weight
        return {name: value.view(num_samples, batch) for name, value in terms.items()}

    def elbo_terms(self, x: Tensor) -> dict[str, Tensor]:
        """The terms of Eq. 2 (or its K-level form) for integer images ``x`` ``(B, C, H, W)``, each ``(B,)`` in nats:
        ``RE_<data>`` = ``log p(data | parents)`` and ``KL_<latent>``; ``ELBO = sum(RE) - sum(KL)``."""
        terms = self._terms(x, 1)
        return {name: value[0] for name, value in terms.items() if name != "log_weight"}

    def elbo(self, x: Tensor) -> Tensor:
        """The evidence lower bound ``(B,)`` in nats."""
        terms = self.elbo_terms(x)
        return sum(value if name.startswith("RE") else -value for name, value in terms.items())

    def loss(self, x: Tensor) -> Tensor:
        """The negative ELBO in bits per dimension, averaged over the batch (the training objective)."""
        return bits_per_dim(self.elbo(x), self.num_dims, bin_width=1.0).mean()

    def forward(self, x: Tensor) -> Tensor:
        return self.loss(x)

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, num_samples: int = 512, chunk_size: int = 64) -> Tensor:
        """The importance-weighted bound (Burda et al., 2015) ``log (1/S) sum_s w_s`` with ``S = num_samples``,
        ``(B,)`` in nats; it is a lower bound on ``log p(x, y = d(x)) <= log p(x)`` that tightens as ``S`` grows
        and equals the ELBO in expectation at ``S = 1``. ``chunk_size`` draws are processed at once."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        weights = [self._terms(x, min(chunk_size, num_samples - start))["log_weight"]
                   for start in range(0, num_samples, chunk_size)]
        return torch.logsumexp(torch.cat(weights), dim=0) - math.log(num_samples)

    # -- generation and reconstruction (Sec. 3.3, Fig. 3) --

    @torch.no_grad()
    def top_down(self, batch_size: int, *, x: Tensor | None = None, infer: Collection[str] = (),
                 observe: Collection[str] = (), top: Tensor | None = None,
                 mode: Literal["sample", "mean"] = "sample") -> tuple[Tensor, Tensor]:
        """Run the generative model top-down, taking each variable from ``x`` or from the model.

        Arguments:
            batch_size: number of images (the batch size of ``x`` when given).
            x: the integer images ``x*`` ``(B, C, H, W)`` the inferred and observed variables come from.
            infer: latents drawn from the posterior given ``x*`` (names in ``self.latent_names``); each costs
                ``KL(q || p)`` bits (``u``: a single-sample estimate, exact in expectation).
            observe: data levels set to their true value (names in ``self.data_names``); each costs its code length
                ``-log2 p(y* | parents)`` bits. Observing ``"x"`` gives the lossless code length of ``x*``.
            top: the top latent itself ``(B, *latent_shape)``, overriding the prior or posterior (interpolations).
            mode: ``"sample"`` draws every variable that is not inferred or observed; ``"mean"`` takes Gaussian means
                and the rounded mixture means instead (a deterministic decoding).
        Returns:
            ``(images, bits)``: integer images ``(B, C, H, W)`` (float mixture means for ``mode="mean"``) and the
            bits ``(B,)`` that must be sent for them.
        """
        unknown = (set(infer) - set(self.latent_names)) | (set(observe) - set(self.data_names))
        if unknown:
            raise ValueError(f"unknown names {sorted(unknown)}; latents are {self.latent_names}, data levels "
                             f"{self.data_names}")
        if (infer or observe) and x is None:
            raise ValueError("inferring or observing a variable needs the images x")
        ys = self.transformed(x) if x is not None else None
        device = next(self.parameters()).device
        bits = torch.zeros(batch_size, device=device)
        to_bits = 1.0 / math.log(2.0)
        name = self.latent_names[0]
        if top is not None:
            parent = top.to(device)
        elif name in infer:
            mean, log_variance = self.top_posterior(ys[0])
            parent = reparameterize(mean, log_variance)
            bits += (_log_normal(parent, mean, log_variance) - self.prior.log_prob(parent)) * to_bits
        else:
            parent = self.prior.sample(batch_size, temperature=0.0 if mode == "mean" else 1.0).to(device)
        current, is_mean = self._draw(self._likelihood(self.top.likelihood(parent), 0), self.data_names[0],
                                      observe, ys, 0, mode, bits)
        for k, level in enumerate(self.levels):
            coarse = current.round().long() if is_mean else current
            p_mean, p_log_variance = level.prior_parameters(level.coarse_features(coarse), parent)
            if self.latent_names[k + 1] in infer:
                q_mean, q_log_variance = _gaussian(level.posterior(to_network_input(ys[k + 1])))
                latent = reparameterize(q_mean, q_log_variance)
                bits += gaussian_kl(q_mean, q_log_variance, p_mean, p_log_variance) * to_bits
            else:
                latent = p_mean if mode == "mean" else reparameterize(p_mean, p_log_variance)
            mixture = self._likelihood(level.likelihood_parameters(coarse, latent), k + 1)
            current, is_mean = self._draw(mixture, self.data_names[k + 1], observe, ys, k + 1, mode, bits)
            parent = latent
        return current, bits

    @staticmethod
    def _draw(mixture: DiscretizedLogisticMixture, name: str, observe: Collection[str], ys: list[Tensor] | None,
              index: int, mode: str, bits: Tensor) -> tuple[Tensor, bool]:
        """The value of a data level (observed, a sample or the mixture mean); adds an observed level's bits."""
        if name in observe:
            value = ys[index]
            bits += -mixture.log_prob(value).flatten(1).sum(1) / math.log(2.0)
            return value, False
        if mode == "mean":
            return mixture_mean(mixture), True
        return mixture.sample(), False

    def operation(self, x: Tensor, infer: Collection[str] = (), observe: Collection[str] = (),
                  mode: Literal["sample", "mean"] = "sample") -> tuple[Tensor, Tensor]:
        """Reconstruct or generate from ``x*`` (see :meth:`top_down`): ``(images, bits)``.

        For the one-level selfVAE, ``model.operation(x, **FIG3_OPERATIONS["reconstruction 2"])`` is Fig. 3 (v)."""
        return self.top_down(len(x), x=x, infer=infer, observe=observe, mode=mode)

    def sample(self, num_samples: int, mode: Literal["sample", "mean"] = "sample") -> Tensor:
        """Unconditional generation (Fig. 3 i): ``u ~ p(u)``, then every level in turn; ``(n, C, H, W)``."""
        return self.top_down(num_samples, mode=mode)[0]


# --- builders -----------------------------------------------------------------------------------------------------


def _transforms(transform: str, num_levels: int, invert_sketch: bool) -> list[nn.Module]:
    if transform == "downscale":
        return [Downscale(2) for _ in range(num_levels)]
    if transform == "sketch":
        if num_levels != 1:
            raise ValueError("a sketch cannot be applied repeatedly (Sec. 3.4): use num_levels=1")
        return [Sketch(invert=invert_sketch)]
    raise ValueError(f"unknown transform {transform!r}; choose 'downscale' or 'sketch'")


def selfvae(image_shape: Sequence[int] = (1, 28, 28), transform: Literal["downscale", "sketch"] = "downscale", *,
            num_levels: int = 1, prior: Literal["normal", "mog", "realnvp"] = "realnvp", latent_channels: int = 4,
            latent_size: int | None = None, width: int = 32, growth_rate: int = 16, num_layers: int = 2,
            num_components: int = 10, prior_components: int = 10, prior_couplings: int = 4,
            prior_hidden_channels: int = 32, invert_sketch: bool = True) -> SelfVAE:
    """Build a selfVAE: ``num_levels`` transformations of one kind (``"sketch"``: exactly one) and a RealNVP prior.

    ``latent_size`` defaults to a quarter of the image size (7 for 28x28, 8 for 32x32); see :class:`SelfVAE` for
    the other arguments, :func:`latent_prior` for the prior's. ``invert_sketch`` suits light-on-dark images.

    Example:
        >>> model = selfvae((1, 28, 28), "downscale", num_levels=2, width=8, growth_rate=4, num_layers=1)
        >>> model.data_names, model.latent_names, [shape[1] for shape in model.data_shapes]
        (['y1', 'y2', 'x'], ['u', 'z1', 'z2'], [7, 14, 28])
    """
    latent_size = latent_size or image_shape[1] // 4
    shape = (latent_channels, latent_size, latent_size)
    return SelfVAE(image_shape, _transforms(transform, num_levels, invert_sketch) if num_levels else [],
                   latent_prior(prior, shape, num_components=prior_components, num_couplings=prior_couplings,
                                hidden_channels=prior_hidden_channels),
                   latent_channels=latent_channels, latent_size=latent_size, width=width, growth_rate=growth_rate,
                   num_layers=num_layers, num_components=num_components)


def vae(image_shape: Sequence[int] = (1, 28, 28), prior: Literal["normal", "mog", "realnvp"] = "realnvp",
        **sizes) -> SelfVAE:
    """Build the VAE of App. A.2 with prior ``N(0, I)``, a mixture of 10 Gaussians or a RealNVP: a
    :class:`SelfVAE` without transformations (same keyword arguments as :func:`selfvae`).

    Example:
        >>> model = vae((1, 28, 28), "mog", latent_channels=2, width=8, growth_rate=4, num_layers=1)
        >>> model.data_names, model.latent_names, type(model.prior).__name__
        (['x'], ['z'], 'GaussianMixture')
    """
    return selfvae(image_shape, "downscale", num_levels=0, prior=prior, **sizes)
