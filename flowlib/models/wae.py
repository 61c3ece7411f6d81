"""Wasserstein autoencoder with the MMD penalty (WAE-MMD) and the DCGAN encoder/decoder.

References:
    Tolstikhin, Bousquet, Gelly & Schoelkopf (2018), "Wasserstein Auto-Encoders", ICLR,
    https://arxiv.org/abs/1711.01558.

A WAE has a deterministic encoder ``z = E(x)`` and decoder ``x_hat = D(z)``; it minimises a reconstruction cost plus
a penalty that pushes the *aggregate* distribution of codes ``q(z)`` (not each ``q(z|x)``) towards the prior
``p(z) = N(0, sigma_z^2 I)`` (their Algorithm 2):

    L = E ||x - D(E(x))||^2 + lambda * MMD_k(q(z), p(z)),

with the unbiased estimate over a batch of codes ``z_i`` and prior draws ``z~_i`` (``n`` each)

    MMD = 1/(n(n-1)) sum_{i!=j} [k(z~_i, z~_j) + k(z_i, z_j)] - 2/n^2 sum_{i,j} k(z~_i, z_j),

and the inverse multiquadratic (IMQ) kernel ``k(a, b) = C / (C + ||a - b||^2)`` with ``C = 2 d_z sigma_z^2``, the
paper's choice for MNIST (``lambda = 10``, ``sigma_z = 1``). As in the authors' released code we sum the kernel over
the scales ``C * {0.1, 0.2, 0.5, 1, 2, 5, 10}`` so the penalty is informative at every distance.
The encoder and decoder are the DCGAN networks of :mod:`flowlib.models.vae`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowlib.models.vae import DCGANDecoder, DCGANEncoder, _check_images

__all__ = ["WAE", "imq_kernel", "mmd"]

DEFAULT_KERNEL_SCALES: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def imq_kernel(a: Tensor, b: Tensor, scale: float) -> Tensor:
    """Inverse multiquadratic kernel matrix ``scale / (scale + ||a_i - b_j||^2)``: ``(N, d), (M, d) -> (N, M)``."""
    return scale / (scale + torch.cdist(a, b).pow(2))


def mmd(codes: Tensor, prior_samples: Tensor, kernel_scales: Sequence[float]) -> Tensor:
    """Unbiased MMD^2 estimate between ``codes`` and ``prior_samples`` (both ``(n, d)``, ``n >= 2``) with the sum of
    IMQ kernels at ``kernel_scales``; a scalar."""
    n = codes.shape[0]
    if n < 2 or prior_samples.shape != codes.shape:
        raise ValueError(
            f"mmd needs two batches of the same shape (n >= 2, d); got {tuple(codes.shape)} and "
            f"{tuple(prior_samples.shape)}"
        )
    off_diagonal = 1.0 - torch.eye(n, dtype=codes.dtype, device=codes.device)
    total = codes.new_zeros(())
    for scale in kernel_scales:
        within_prior = (imq_kernel(prior_samples, prior_samples, scale) * off_diagonal).sum() / (n * (n - 1))
        within_codes = (imq_kernel(codes, codes, scale) * off_diagonal).sum() / (n * (n - 1))
        across = imq_kernel(prior_samples, codes, scale).sum() / n**2
        total = total + within_prior + within_codes - 2.0 * across
    return total


class WAE(nn.Module):
    """WAE-MMD with a deterministic DCGAN encoder, sigmoid DCGAN decoder and IMQ-kernel MMD to ``N(0, sigma_z^2 I)``.

    Arguments:
        in_channels: image channels ``C``.
        image_size: ``H == W``.
        latent_dim: size of the code ``z`` (``d_z``).
        base_channels: width of the DCGAN networks.
        regularization_weight: ``lambda`` (10 in the paper's MNIST experiment).
        prior_std: ``sigma_z`` of the prior.
        kernel_scales: multiples of ``C = 2 d_z sigma_z^2`` at which the IMQ kernel is summed.

    Example:
        >>> import torch
        >>> wae = WAE(1, 28, latent_dim=4, base_channels=8)
        >>> x = torch.rand(3, 1, 28, 28)
        >>> wae.encode(x).shape, wae.sample(2).shape, wae.loss(x).shape
        (torch.Size([3, 4]), torch.Size([2, 1, 28, 28]), torch.Size([]))
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        latent_dim: int = 10,
        base_channels: int = 32,
        regularization_weight: float = 10.0,
        prior_std: float = 1.0,
        kernel_scales: Sequence[float] = DEFAULT_KERNEL_SCALES,
    ):
        super().__init__()
        self.in_channels, self.image_size, self.latent_dim = in_channels, image_size, latent_dim
        self.regularization_weight, self.prior_std = regularization_weight, prior_std
        base_scale = 2.0 * latent_dim * prior_std**2  # C = 2 d_z sigma_z^2
        self.kernel_scales = tuple(base_scale * factor for factor in kernel_scales)
        self.encoder = DCGANEncoder(in_channels, image_size, latent_dim, base_channels)
        self.decoder = DCGANDecoder(latent_dim, in_channels, image_size, base_channels)

    def encode(self, x: Tensor) -> Tensor:
        """Deterministic code ``E(x)``: ``(B, C, H, W) -> (B, latent_dim)``."""
        _check_images(x, self.in_channels, self.image_size, "WAE")
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """``D(z)`` in ``[0, 1]``: ``(B, latent_dim) -> (B, C, H, W)``."""
        return torch.sigmoid(self.decoder(z))

    def sample(self, num_samples: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """Decode ``z ~ N(0, (temperature * sigma_z)^2 I)``: ``(num_samples, C, H, W)`` in ``[0, 1]``."""
        device = next(self.parameters()).device
        z = torch.randn(num_samples, self.latent_dim, generator=generator).to(device) * temperature * self.prior_std
        return self.decode(z)

    def loss_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(reconstruction (B,), mmd scalar)``: squared error per image and the MMD penalty of the batch."""
        z = self.encode(x)
        reconstruction = (self.decode(z) - x).pow(2).flatten(1).sum(1)  # c(x, D(E(x))) = ||x - x_hat||^2
        prior_samples = torch.randn_like(z) * self.prior_std
        return reconstruction, mmd(z, prior_samples, self.kernel_scales)

    def loss(self, x: Tensor) -> Tensor:
        """``mean ||x - D(E(x))||^2 + lambda * MMD`` over the batch (a scalar)."""
        reconstruction, penalty = self.loss_terms(x)
        return reconstruction.mean() + self.regularization_weight * penalty

    def forward(self, x: Tensor) -> Tensor:
        return self.loss(x)
