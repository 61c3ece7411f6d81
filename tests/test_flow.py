"""Flow: log_prob is the change of variables (checked with autograd Jacobians and by integrating the density),
sampling shapes, and bits per dimension."""

from __future__ import annotations

import math

import torch

from flowlib.distributions import DiagonalGaussian, StandardLogistic, StandardNormal
from flowlib.models.flow import Flow
from flowlib.nets import MLP, ConvNet
from flowlib.transforms import (
    ActNorm,
    AffineCoupling,
    Compose,
    Invertible1x1Conv,
    Logit,
    PIECoupling,
    Split,
    Squeeze,
    channel_mask,
    checkerboard_mask,
    half_mask,
)


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            scale = 0.3 if parameter.dim() < 2 else 1.0 / math.sqrt(parameter[0].numel())
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def _toy_flow(with_split: bool = False) -> Flow:
    torch.manual_seed(0)
    layers = [
        AffineCoupling(half_mask(2), MLP(2, 4, 16, 1)),
        Invertible1x1Conv(2),
        AffineCoupling(half_mask(2, parity=1), MLP(2, 4, 16, 1)),
    ]
    if with_split:
        layers.append(Split(1, num_features=2))
    flow = Flow(Compose(*layers), StandardNormal(1 if with_split else 2))
    _randomise(flow)
    if with_split:
        with torch.no_grad():  # keep the prior's scales moderate so that the grid below holds its mass
            flow.transform[-1].prior_net.out.weight.mul_(0.2)
    return flow


def test_log_prob_is_the_change_of_variables():
    flow = _toy_flow().double()
    x = torch.randn(4, 2, dtype=torch.float64)
    log_prob = flow.log_prob(x)
    assert torch.equal(flow(x), log_prob)
    for i in range(4):
        z = flow.transform(x[i : i + 1])[0][0]
        jacobian = torch.autograd.functional.jacobian(lambda v: flow.transform(v.view(1, 2))[0][0], x[i])
        manual = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum() + torch.linalg.slogdet(jacobian)[1]
        assert abs(log_prob[i].item() - manual.item()) < 1e-8


def _integral_on_grid(flow: Flow, bound: float = 12.0, resolution: int = 481) -> float:
    axis = torch.linspace(-bound, bound, resolution, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = flow.log_prob(grid).exp()
    cell = (axis[1] - axis[0]).item() ** 2
    return density.sum().item() * cell


def test_density_integrates_to_one():
    assert abs(_integral_on_grid(_toy_flow().double()) - 1.0) < 5e-3


def test_density_with_a_factor_out_layer_integrates_to_one():
    flow = _toy_flow(with_split=True).double()
    assert flow.transform[-1].prior_net is not None
    assert abs(_integral_on_grid(flow) - 1.0) < 5e-3


def test_sample_shapes_and_temperature_zero():
    flow = _toy_flow()
    assert flow.sample(5).shape == (5, 2)
    with torch.no_grad():
        mode = flow.sample(3, temperature=0.0)
        expected, _ = flow.transform.inverse(torch.zeros(3, 2))
    assert torch.equal(mode, expected)


def test_multiscale_image_flow_samples_and_scores():
    torch.manual_seed(0)
    transform = Compose(
        Logit(),
        ActNorm(1),
        AffineCoupling(checkerboard_mask(1, 4, 4), ConvNet(1, 2, 8, 1)),
        Squeeze(2, pattern="checkerboard"),
        PIECoupling(channel_mask(4, 2, 2), ConvNet(4, 8, 8, 1), ConvNet(4, 8, 8, 1)),
        Split(2, kernel_size=3),
    )
    flow = Flow(transform, DiagonalGaussian((2, 2, 2)))
    x = torch.rand(6, 1, 4, 4)
    log_prob = flow.log_prob(x)  # also initialises ActNorm
    assert log_prob.shape == (6,) and torch.isfinite(log_prob).all()
    with torch.no_grad():
        samples = flow.sample(3, temperature=0.7)
    assert samples.shape == (3, 1, 4, 4) and torch.isfinite(samples).all()


def test_bits_per_dim():
    # logit(x) with a standard logistic base is exactly the uniform density on (0, 1): 8 bits per 1/256 bin
    uniform = Flow(Logit(alpha=0.0), StandardLogistic((1, 3, 3)))
    x = torch.rand(4, 1, 3, 3).clamp(1e-3, 1 - 1e-3)
    assert torch.allclose(uniform.log_prob(x), torch.zeros(4), atol=1e-4)
    assert torch.allclose(uniform.bits_per_dim(x), torch.full((4,), 8.0), atol=1e-4)
    assert torch.allclose(uniform.bits_per_dim(x, bin_width=1.0), torch.zeros(4), atol=1e-4)
    flow = _toy_flow()
    x = torch.randn(3, 2)
    expected = -(flow.log_prob(x) - 2 * math.log(256)) / (2 * math.log(2))
    assert torch.allclose(flow.bits_per_dim(x), expected)
