"""Variational autoencoder with the DCGAN convolutional encoder and decoder.

References:
    Kingma & Welling (2013), "Auto-Encoding Variational Bayes", https://arxiv.org/abs/1312.6114.
    Radford, Metz & Chintala (2015), "Unsupervised Representation Learning with Deep Convolutional Generative
    Adversarial Networks" (DCGAN), https://arxiv.org/abs/1511.06434.

The VAE maximises the evidence lower bound (ELBO) of an image ``x`` in ``[0, 1]``:

    log p(x) >= E_{q(z|x)}[log p(x|z)] - KL(q(z|x) || N(0, I)),                                  (ELBO)

with ``q(z|x) = N(mu(x), diag(sigma^2(x)))`` (the encoder), the reparametrisation ``z = mu + sigma * e``,
``e ~ N(0, I)``, the closed-form Gaussian KL term ``0.5 * sum(mu^2 + sigma^2 - log sigma^2 - 1)``, and a Bernoulli
decoder ``p(x|z)`` whose mean ``sigmoid(decoder(z))`` is used as the image (the usual choice for MNIST; the
binary cross-entropy is evaluated on the grey values in ``[0, 1]``).

The encoder and decoder follow DCGAN's recipe: strided 4x4 convolutions (transposed in the decoder) that halve
(double) the resolution, doubling (halving) the channels, batch normalisation after every inner layer,
LeakyReLU(0.2) in the encoder and ReLU in the decoder; a linear layer maps to / from the latent code. They live
here and are shared by :mod:`flowlib.models.wae` and later chapters. The reparametrisation and the Gaussian KL
divergence (to ``N(0, I)`` or to any diagonal Gaussian) are functions, :func:`reparameterize` and
:func:`gaussian_kl`, also used by the self-supervised VAEs of :mod:`flowlib.models.selfvae`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowlib.transforms._shapes import check_dtype, check_nonempty, module_dtype

__all__ = ["DCGANEncoder", "DCGANDecoder", "VAE", "gaussian_kl", "reparameterize"]


def reparameterize(mean: Tensor, log_variance: Tensor) -> Tensor:
    """A draw ``mean + sigma * e``, ``e ~ N(0, I)``, ``sigma = exp(log_variance / 2)``: differentiable in both.

    Example:
        >>> import torch
        >>> reparameterize(torch.zeros(2, 3), torch.full((2, 3), -float("inf"))).abs().sum().item()
        0.0
    """
    return mean + torch.randn_like(mean) * (0.5 * log_variance).exp()


def gaussian_kl(
    mean: Tensor, log_variance: Tensor, prior_mean: Tensor | None = None, prior_log_variance: Tensor | None = None
) -> Tensor:
    """``KL(N(mean, diag e^log_variance) || N(prior_mean, diag e^prior_log_variance))`` in nats, summed over all but
    the batch dimension: ``(B, ...) -> (B,)``. Without a prior mean and log-variance the prior is ``N(0, I)``:

        KL = 0.5 * sum(mean^2 + sigma^2 - log sigma^2 - 1).

    Example:
        >>> import torch
        >>> gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).tolist()  # q = p = N(0, I)
        [0.0, 0.0]
        >>> round(gaussian_kl(torch.ones(1, 1), torch.zeros(1, 1)).item(), 4)  # a unit shift costs 1/2 nat
        0.5
    """
    if prior_mean is None and prior_log_variance is None:
        terms = mean.pow(2) + log_variance.exp() - log_variance - 1.0
    else:
        prior_mean = torch.zeros_like(mean) if prior_mean is None else prior_mean
        prior_log_variance = torch.zeros_like(mean) if prior_log_variance is None else prior_log_variance
        terms = (prior_log_variance - log_variance
                 + (log_variance.exp() + (mean - prior_mean).pow(2)) * torch.exp(-prior_log_variance) - 1.0)
    return 0.5 * terms.flatten(1).sum(1)


def _num_downsamplings(image_size: int) -> int:
    """How many stride-2 layers take ``image_size`` down to a small even-free size (28 -> 7: 2, 32 -> 4: 3)."""
    count, size = 0, image_size
    while size % 2 == 0 and size > 7:
        size //= 2
        count += 1
    if count == 0:
        raise ValueError(
            f"image_size={image_size} cannot be halved by the DCGAN encoder; use an even size such as 28, 32 or 64"
        )
    return count


def _check_images(x: Tensor, in_channels: int, image_size: int, who: str) -> None:
    if x.dim() != 4 or x.shape[1:] != (in_channels, image_size, image_size):
        raise ValueError(
            f"{who} expects images of shape (B, {in_channels}, {image_size}, {image_size}), got {tuple(x.shape)}"
        )


class DCGANEncoder(nn.Module):
    """DCGAN convolutional encoder ``(B, C, H, W) -> (B, out_features)``.

    Arguments:
        in_channels: image channels ``C`` (1 for MNIST, 3 for CIFAR-10).
        image_size: ``H == W`` (28 gives 28 -> 14 -> 7; 32 gives 32 -> 16 -> 8 -> 4).
        out_features: output size (``2 * latent_dim`` for a VAE's mean and log-variance, ``latent_dim`` for a WAE).
        base_channels: channels after the first convolution, doubled at every further halving.

    Example:
        >>> import torch
        >>> DCGANEncoder(1, 28, out_features=20, base_channels=8)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 20])
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, out_features: int = 20, base_channels: int = 64):
        super().__init__()
        self.in_channels, self.image_size = in_channels, image_size
        num_layers = _num_downsamplings(image_size)
        layers: list[nn.Module] = []
        channels = in_channels
        for index in range(num_layers):
            width = base_channels * 2**index
            layers.append(nn.Conv2d(channels, width, 4, stride=2, padding=1, bias=index == 0))
            if index > 0:  # DCGAN: no batch norm on the input layer
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2))
            channels = width
        final_size = image_size // 2**num_layers
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * final_size * final_size, out_features)

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x, self.in_channels, self.image_size, "DCGANEncoder")
        check_dtype("DCGANEncoder", x, module_dtype(self))
        return self.head(self.features(x).flatten(1))


class DCGANDecoder(nn.Module):
    """DCGAN convolutional decoder ``(B, in_features) -> (B, C, H, W)`` logits (apply a sigmoid for images).

    Arguments:
        in_features: latent size.
        out_channels: image channels ``C``.
        image_size: ``H == W`` of the output.
        base_channels: channels before the last transposed convolution, doubled towards the input.

    Example:
        >>> import torch
        >>> DCGANDecoder(10, 1, 28, base_channels=8)(torch.randn(2, 10)).shape
        torch.Size([2, 1, 28, 28])
    """

    def __init__(self, in_features: int = 10, out_channels: int = 1, image_size: int = 28, base_channels: int = 64):
        super().__init__()
        self.in_features = in_features
        num_layers = _num_downsamplings(image_size)
        self.start_channels = base_channels * 2 ** (num_layers - 1)
        self.start_size = image_size // 2**num_layers
        self.head = nn.Sequential(
            nn.Linear(in_features, self.start_channels * self.start_size**2),
            nn.Unflatten(1, (self.start_channels, self.start_size, self.start_size)),
            nn.BatchNorm2d(self.start_channels),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        channels = self.start_channels
        for index in reversed(range(num_layers)):
            if index == 0:  # last layer: to the image, no batch norm
                layers.append(nn.ConvTranspose2d(channels, out_channels, 4, stride=2, padding=1))
            else:
                width = base_channels * 2 ** (index - 1)
                layers += [nn.ConvTranspose2d(channels, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                channels = width
        self.features = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.in_features:
            raise ValueError(f"DCGANDecoder expects codes of shape (B, {self.in_features}), got {tuple(z.shape)}")
        return self.features(self.head(z))


class VAE(nn.Module):
    """Gaussian-latent, Bernoulli-decoder VAE with DCGAN encoder/decoder, for images in ``[0, 1]``.

    Arguments:
        in_channels: image channels ``C``.
        image_size: ``H == W``.
        latent_dim: size of the code ``z``.
        base_channels: width of the DCGAN networks (see :class:`DCGANEncoder`).

    Example:
        >>> import torch
        >>> vae = VAE(1, 28, latent_dim=4, base_channels=8)
        >>> x = torch.rand(3, 1, 28, 28)
        >>> vae.encode(x).shape, vae.decode(vae.encode(x)).shape, vae.loss(x).shape
        (torch.Size([3, 4]), torch.Size([3, 1, 28, 28]), torch.Size([]))
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, latent_dim: int = 10, base_channels: int = 32):
        super().__init__()
        self.in_channels, self.image_size, self.latent_dim = in_channels, image_size, latent_dim
        self.encoder = DCGANEncoder(in_channels, image_size, 2 * latent_dim, base_channels)
        self.decoder = DCGANDecoder(latent_dim, in_channels, image_size, base_channels)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``q(z|x)``: mean and log-variance, each ``(B, latent_dim)``."""
        mean, log_variance = self.encoder(x).chunk(2, dim=1)
        return mean, log_variance.clamp(-12.0, 8.0)

    def encode(self, x: Tensor) -> Tensor:
        """The code of ``x`` ``(B, C, H, W)``: the posterior mean ``(B, latent_dim)``."""
        return self.posterior(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """Decoder mean ``sigmoid(decoder(z))``: images ``(B, C, H, W)`` in ``[0, 1]``."""
        return torch.sigmoid(self.decoder(z))

    def sample(self, num_samples: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """Decode ``z ~ N(0, temperature^2 I)``: images ``(num_samples, C, H, W)`` in ``[0, 1]``."""
        device = next(self.parameters()).device
        z = torch.randn(num_samples, self.latent_dim, generator=generator).to(device) * temperature
        return self.decode(z)

    def loss_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-example ``(reconstruction, kl)`` in nats, each ``(B,)``; the negative ELBO is their sum."""
        _check_images(x, self.in_channels, self.image_size, "VAE")
        mean, log_variance = self.posterior(x)
        z = reparameterize(mean, log_variance)
        logits = self.decoder(z)
        # -log p(x|z) of the Bernoulli decoder
        reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = gaussian_kl(mean, log_variance)  # KL(q(z|x) || N(0, I))
        return reconstruction, kl

    def loss(self, x: Tensor) -> Tensor:
        """Negative ELBO averaged over the batch (a scalar, nats per image)."""
        check_nonempty("VAE.loss", x)
        reconstruction, kl = self.loss_terms(x)
        return (reconstruction + kl).mean()

    def forward(self, x: Tensor) -> Tensor:
        return self.loss(x)
