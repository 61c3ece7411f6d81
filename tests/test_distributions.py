"""Base distributions against torch.distributions and closed forms; sample shapes, temperature, dtype."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as td

from flowlib.distributions import DiagonalGaussian, StandardLogistic, StandardNormal
from flowlib.transforms import InputShapeError


def _logistic() -> td.Distribution:
    return td.TransformedDistribution(td.Uniform(0.0, 1.0), [td.SigmoidTransform().inv])


@pytest.mark.parametrize("event_shape", [(3,), (2, 3, 3)], ids=["vector", "image"])
def test_standard_normal_log_prob(event_shape):
    z = 3.0 * torch.randn(5, *event_shape)
    expected = td.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1)
    assert torch.allclose(StandardNormal(event_shape).log_prob(z), expected, atol=1e-5)


def test_standard_logistic_log_prob_and_tails():
    z = torch.tensor([[-3.0, 0.0, 0.5, 8.0]])
    expected = _logistic().log_prob(z).sum(1)
    base = StandardLogistic(4)
    assert torch.allclose(base.log_prob(z), expected, atol=1e-5)
    far = torch.tensor([[-200.0, 200.0, -1e4, 1e4]])
    log_prob = base.log_prob(far)
    assert torch.isfinite(log_prob).all()
    assert abs(float(log_prob) - (-(200.0 + 200.0 + 1e4 + 1e4))) < 1e-2  # log p(z) ~ -|z| in the tails


def test_diagonal_gaussian_log_prob_and_learnability():
    base = DiagonalGaussian((2, 2))
    with torch.no_grad():
        base.mean.copy_(torch.tensor([[1.0, -1.0], [0.0, 2.0]]))
        base.log_scale.copy_(torch.tensor([[0.0, 0.5], [-1.0, 0.3]]))
    z = torch.randn(4, 2, 2)
    expected = td.Normal(base.mean, base.log_scale.exp()).log_prob(z).flatten(1).sum(1)
    assert torch.allclose(base.log_prob(z), expected, atol=1e-5)
    assert len(list(base.parameters())) == 2
    fixed = DiagonalGaussian(3, learnable=False)
    assert list(fixed.parameters()) == [] and set(fixed.state_dict()) == {"mean", "log_scale"}


@pytest.mark.parametrize("base", [StandardNormal((1, 4, 4)), StandardLogistic((1, 4, 4)), DiagonalGaussian((1, 4, 4))],
                         ids=["normal", "logistic", "diagonal"])
def test_sample_shapes_dtype_and_generator(base):
    assert base.sample(7).shape == (7, 1, 4, 4)
    assert base.double().sample(2).dtype == torch.float64
    first = base.sample(3, generator=torch.Generator().manual_seed(0))
    second = base.sample(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, second)
    assert torch.isfinite(base.log_prob(base.sample(5))).all()


@pytest.mark.parametrize(
    "base, unit_std",
    [(StandardNormal(1), 1.0), (StandardLogistic(1), math.pi / math.sqrt(3)), (DiagonalGaussian(1), 1.0)],
    ids=["normal", "logistic", "diagonal"],
)
@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_temperature_scales_the_spread(base, unit_std, temperature):
    samples = base.sample(40000, temperature=temperature, generator=torch.Generator().manual_seed(1)).detach()
    assert abs(float(samples.std()) / (temperature * unit_std) - 1.0) < 0.03
    assert abs(float(samples.mean())) < 0.05


def test_temperature_zero_gives_the_mode():
    base = DiagonalGaussian(3)
    with torch.no_grad():
        base.mean.fill_(2.0)
    assert torch.equal(base.sample(4, temperature=0.0), torch.full((4, 3), 2.0))
    assert torch.equal(StandardNormal(3).sample(2, temperature=0.0), torch.zeros(2, 3))


def test_wrong_event_shape_is_reported():
    with pytest.raises(InputShapeError, match=r"\(B, 1, 28, 28\)"):
        StandardNormal((1, 28, 28)).log_prob(torch.randn(2, 784))
