"""Tests of the Pseudo-Invertible Encoder (flowlib/models/pie.py)."""

from __future__ import annotations

import math

import pytest
import torch

from flowlib.models.pie import PIE, PIESplit, conv_block, linear_block
from flowlib.nets import MLP, ConvNet
from flowlib.transforms import InputShapeError

def _randomize(module: torch.nn.Module, scale: float = 0.3) -> None:
    """Give zero-initialised last layers non-zero weights so the checks below are not trivially passed."""
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))


def _tiny_pie(eps_squared: float = 0.1, dtype: torch.dtype = torch.float32) -> PIE:
    torch.manual_seed(0)
    pie = PIE((1, 4, 4), num_conv_blocks=1, linear_dims=(4, 2, 2), eps_squared=eps_squared, num_steps=2,
              hidden_channels=4, hidden_features=8)
    return pie.to(dtype)


def test_encode_decode_shapes_mnist_configuration() -> None:
    pie = PIE(hidden_channels=4, num_residual_blocks=0, hidden_features=8)
    x = torch.rand(2, 1, 28, 28)
    z = pie.encode(x)
    assert z.shape == (2, 10) and pie.latent_dim == 10
    assert pie.decode(z).shape == (2, 1, 28, 28)
    assert pie.sample(3).shape == (3, 1, 28, 28)
    assert pie.log_prob(x).shape == (2,) and torch.isfinite(pie.log_prob(x)).all()


def test_block_shapes_follow_the_paper() -> None:
    """784 -> 392 (conv) -> 196 (conv) -> 64 -> 10 -> 10 (linear)."""
    first = conv_block((1, 28, 28), 0.1, hidden_channels=4, num_residual_blocks=0)
    second = conv_block((2, 14, 14), 0.1, hidden_channels=4, num_residual_blocks=0)
    x = torch.rand(2, 1, 28, 28)
    y1, _ = first(x)
    y2, _ = second(y1)
    assert y1.shape == (2, 2, 14, 14) and y2.shape == (2, 4, 7, 7)
    v = y2.flatten(1)
    for num_features, num_kept in [(196, 64), (64, 10), (10, 10)]:
        v, _ = linear_block(num_features, num_kept, 0.1, hidden_features=8)(v)
        assert v.shape == (2, num_kept)


def test_pie_split_log_prob_by_hand() -> None:
    """log N(r | g(z), eps^2 I) = sum_i [-(r_i - g_i)^2 / (2 eps^2) - log eps - log(2 pi) / 2]."""
    torch.manual_seed(0)
    g = MLP(3, 2, hidden_features=5)
    _randomize(g)
    eps_squared = 0.04
    split = PIESplit(3, g, eps_squared, num_features=5)
    x = torch.randn(4, 5)
    z, term = split(x)
    mean = g(x[:, :3])
    r = x[:, 3:]
    by_hand = (-(r - mean) ** 2 / (2 * eps_squared) - 0.5 * math.log(eps_squared) - 0.5 * math.log(2 * math.pi)).sum(1)
    assert torch.equal(z, x[:, :3])
    assert torch.allclose(term, by_hand, atol=1e-5)


def test_pie_split_inverse_sets_r_to_g_and_restores_given_r() -> None:
    torch.manual_seed(0)
    g = ConvNet(2, 2, hidden_channels=4, num_blocks=0)
    _randomize(g)
    split = PIESplit(2, g, eps_squared=0.01)
    x = torch.randn(3, 4, 2, 2)
    z, forward_term = split(x)
    extended, inverse_term = split.inverse(z)  # Eq. 20: r = g(z)
    assert torch.allclose(extended[:, 2:], g(z)) and torch.equal(extended[:, :2], z)
    # scoring r = g(z) gives the Gaussian's peak, -D_r (log eps + log(2 pi) / 2); the inverse returns its negative
    peak = -8 * (0.5 * math.log(0.01) + 0.5 * math.log(2 * math.pi))
    assert torch.allclose(inverse_term, torch.full((3,), -peak), atol=1e-4)
    restored, restored_term = split.inverse(z, r=x[:, 2:])
    assert torch.equal(restored, x)
    assert torch.allclose(restored_term + forward_term, torch.zeros(3), atol=1e-5)


def test_pie_split_with_zero_g_and_unit_eps_is_standard_normal() -> None:
    """Sec. 3.4: g = 0 and eps = 1 give the multi-scale RealNVP factor-out with N(0, I) on r."""
    split = PIESplit(2, MLP(2, 2, hidden_features=4), eps_squared=1.0)
    x = torch.randn(5, 4)
    _, term = split(x)
    assert torch.allclose(term, torch.distributions.Normal(0.0, 1.0).log_prob(x[:, 2:]).sum(1), atol=1e-5)


def test_pie_split_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="eps_squared"):
        PIESplit(2, MLP(2, 2), eps_squared=0.0)
    with pytest.raises(InputShapeError):
        PIESplit(2, MLP(2, 2, hidden_features=4), eps_squared=0.1)(torch.randn(3, 6))
    with pytest.raises(InputShapeError, match="g must map"):
        PIESplit(2, MLP(2, 3, hidden_features=4), eps_squared=0.1)(torch.randn(3, 4))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_pie_transform_inverse_with_residuals_restored(batch_size: int) -> None:
    """Without dimension reduction (every r restored), the composed PIE transform is an exact bijection."""
    pie = _tiny_pie(dtype=torch.float64)
    _randomize(pie, scale=0.05)
    x = torch.rand(batch_size, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    h, residuals, forward_total = x, [], torch.zeros(batch_size, dtype=torch.float64)
    layers = list(_layers(pie))
    for layer in layers:
        if isinstance(layer, PIESplit):
            residuals.append(h[:, layer.num_kept:])
        h, term = layer(h)
        forward_total = forward_total + term
    inverse_total = torch.zeros(batch_size, dtype=torch.float64)
    for layer in reversed(layers):
        h, term = layer.inverse(h, r=residuals.pop()) if isinstance(layer, PIESplit) else layer.inverse(h)
        inverse_total = inverse_total + term
    assert torch.allclose(h, x, atol=1e-8)
    assert torch.allclose(forward_total + inverse_total, torch.zeros(batch_size, dtype=torch.float64), atol=1e-8)


def _layers(pie: PIE):
    from flowlib.models.pie import _flatten_layers

    return _flatten_layers(pie.transform)


def test_pie_logabsdet_matches_autograd_jacobian() -> None:
    """For the bijective part (no split), the summed log-dets equal log|det J| from torch.autograd (float64)."""
    pie = _tiny_pie(dtype=torch.float64)
    _randomize(pie)
    layers = [layer for layer in _layers(pie)]
    first_split = next(index for index, layer in enumerate(layers) if isinstance(layer, PIESplit))
    bijective = layers[:first_split]  # Logit, Squeeze, couplings, Householder 1x1 convs

    def run(flat: torch.Tensor) -> torch.Tensor:
        h = flat.view(1, 1, 4, 4)
        for layer in bijective:
            h, _ = layer(h)
        return h.flatten()

    x = torch.rand(1, 1, 4, 4, dtype=torch.float64) * 0.8 + 0.1
    jacobian = torch.autograd.functional.jacobian(run, x.flatten())
    h, total = x, torch.zeros(1, dtype=torch.float64)
    for layer in bijective:
        h, term = layer(h)
        total = total + term
    assert torch.allclose(total[0], torch.linalg.slogdet(jacobian)[1], atol=1e-8)


def test_log_prob_is_sum_of_eq17_terms_and_finite_on_extremes() -> None:
    pie = _tiny_pie()
    _randomize(pie)
    x = torch.cat([torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4), torch.rand(1, 1, 4, 4)])
    log_prior, split_terms, logabsdets = pie.log_prob_terms(x)
    assert torch.allclose(pie.log_prob(x), log_prior + split_terms + logabsdets)
    assert torch.isfinite(pie.log_prob(x)).all()
    assert torch.isfinite(pie.decode(torch.full((2, 2), 50.0))).all()
    with pytest.raises(InputShapeError, match=r"\(B, 1, 4, 4\)"):
        pie.log_prob(torch.rand(2, 1, 8, 8))
    with pytest.raises(InputShapeError, match=r"\(B, 2\)"):
        pie.decode(torch.randn(2, 3))


def _reconstruction_error(eps_squared: float) -> float:
    """Train a tiny PIE (16 -> 2 dims) on 64 tiny two-parameter images for a few dozen steps."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 64, 1, 1, 1, generator=generator)
    rows = torch.linspace(0, 1, 4).view(1, 1, 4, 1)
    columns = torch.linspace(0, 1, 4).view(1, 1, 1, 4)
    data = (0.1 + 0.8 * (a * rows + (1 - a) * columns) * b).clamp(0, 1)  # a 2-d family of 4x4 images
    torch.manual_seed(0)
    pie = PIE((1, 4, 4), num_conv_blocks=1, linear_dims=(2, 2), eps_squared=eps_squared, num_steps=2,
              hidden_channels=8, hidden_features=32)
    optimizer = torch.optim.Adam(pie.parameters(), lr=3e-3)
    for _ in range(60):
        loss = pie.loss(data)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(pie.parameters(), 10.0)
        optimizer.step()
    with torch.no_grad():
        return (pie.decode(pie.encode(data)) - data).pow(2).mean().item()


def test_reconstruction_improves_as_eps_shrinks() -> None:
    """A tight constraint (eps^2 = 0.001) makes decode(encode(x)) far better than a loose one (eps^2 = 1)."""
    loose, tight = _reconstruction_error(1.0), _reconstruction_error(0.001)
    assert tight < 0.5 * loose
