"""Tests of the VAE and WAE-MMD baselines and their shared DCGAN networks (flowlib/models/vae.py, wae.py)."""

from __future__ import annotations

import pytest
import torch

from flowlib.models.vae import VAE, DCGANDecoder, DCGANEncoder
from flowlib.models.wae import WAE, imq_kernel, mmd


@pytest.mark.parametrize(("in_channels", "image_size"), [(1, 28), (3, 32)])
def test_dcgan_shapes(in_channels: int, image_size: int) -> None:
    encoder = DCGANEncoder(in_channels, image_size, out_features=6, base_channels=4)
    decoder = DCGANDecoder(3, in_channels, image_size, base_channels=4)
    assert encoder(torch.rand(2, in_channels, image_size, image_size)).shape == (2, 6)
    assert decoder(torch.randn(2, 3)).shape == (2, in_channels, image_size, image_size)


def test_dcgan_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        DCGANEncoder(1, 28, 4, 4)(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="even size"):
        DCGANEncoder(1, 27, 4, 4)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        DCGANDecoder(3, 1, 28, 4)(torch.randn(2, 5))


@pytest.mark.parametrize("model_class", [VAE, WAE])
def test_autoencoder_interface(model_class: type) -> None:
    torch.manual_seed(0)
    model = model_class(in_channels=1, image_size=28, latent_dim=5, base_channels=4)
    x = torch.rand(4, 1, 28, 28)
    z = model.encode(x)
    assert z.shape == (4, 5)
    images = model.decode(z)
    assert images.shape == x.shape and images.min() >= 0 and images.max() <= 1
    assert model.sample(3).shape == (3, 1, 28, 28)
    loss = model.loss(x)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_vae_kl_vanishes_at_prior() -> None:
    """With the encoder outputting mean 0 and log-variance 0, q(z|x) = N(0, I) and the KL term is exactly 0."""
    vae = VAE(1, 28, latent_dim=3, base_channels=4)
    torch.nn.init.zeros_(vae.encoder.head.weight)
    torch.nn.init.zeros_(vae.encoder.head.bias)
    _, kl = vae.loss_terms(torch.rand(2, 1, 28, 28))
    assert torch.allclose(kl, torch.zeros(2))


def test_vae_training_lowers_loss() -> None:
    torch.manual_seed(0)
    vae = VAE(1, 28, latent_dim=4, base_channels=4)
    x = (torch.rand(16, 1, 28, 28) > 0.7).float()
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    first = vae.loss(x).item()
    for _ in range(30):
        loss = vae.loss(x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert vae.loss(x).item() < first


def test_imq_kernel_formula() -> None:
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])
    assert imq_kernel(a, b, scale=5.0).item() == pytest.approx(5.0 / (5.0 + 25.0))


def test_mmd_small_for_same_distribution_large_for_shifted() -> None:
    generator = torch.Generator().manual_seed(0)
    prior = torch.randn(200, 4, generator=generator)
    same = torch.randn(200, 4, generator=generator)
    shifted = torch.randn(200, 4, generator=generator) + 3.0
    scales = (8.0,)
    assert abs(mmd(same, prior, scales).item()) < 0.05
    assert mmd(shifted, prior, scales).item() > 10 * abs(mmd(same, prior, scales).item())
    with pytest.raises(ValueError, match="same shape"):
        mmd(same[:10], prior, scales)


def test_wae_kernel_scale_follows_paper() -> None:
    wae = WAE(1, 28, latent_dim=8, base_channels=4, kernel_scales=(1.0,))
    assert wae.kernel_scales == (16.0,)  # C = 2 * d_z * sigma_z^2
