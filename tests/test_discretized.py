"""Tests of flowlib.distributions.discretized: normalisation, brute force agreement, stability, sampling."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowlib.distributions.discretized as discretized
from flowlib.distributions.discretized import DiscretizedLogistic, DiscretizedLogisticMixture, log_one_minus_exp


def brute_force_probability(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, low, high) -> torch.Tensor:
    """P(x) from the logistic CDF directly, in float64 (the definition, prone to cancellation but fine here)."""
    x, mean, scale = x.double(), mean.double(), scale.double()
    upper = torch.sigmoid((x + 0.5 - mean) / scale)
    lower = torch.sigmoid((x - 0.5 - mean) / scale)
    if low is not None:
        upper = torch.where(x >= high, torch.ones_like(upper), upper)
        lower = torch.where(x <= low, torch.zeros_like(lower), lower)
    return upper - lower


def test_doctests() -> None:
    assert doctest.testmod(discretized).failed == 0


@settings(max_examples=30, deadline=None)
@given(
    mean=st.floats(-40.0, 40.0),
    log_scale=st.floats(-4.0, 3.5),
    low=st.integers(-30, 0),
    width=st.integers(1, 60),
)
def test_finite_range_sums_to_one_and_matches_brute_force(mean: float, log_scale: float, low: int, width: int) -> None:
    high = low + width
    x = torch.arange(low, high + 1)
    mean_tensor = torch.tensor(mean, dtype=torch.float64)
    log_scale_tensor = torch.tensor(log_scale, dtype=torch.float64)
    log_prob = DiscretizedLogistic(mean_tensor, log_scale_tensor, low, high).log_prob(x)
    assert torch.isfinite(log_prob).all()
    assert torch.logsumexp(log_prob, 0).exp().item() == pytest.approx(1.0, abs=1e-9)
    expected = brute_force_probability(x, mean_tensor, log_scale_tensor.exp(), low, high)
    torch.testing.assert_close(log_prob.exp(), expected, rtol=1e-7, atol=1e-12)


def test_unbounded_sums_to_one_over_a_wide_range() -> None:
    x = torch.arange(-3000, 3001).view(-1, 1)
    distribution = DiscretizedLogistic(torch.tensor([0.0, 3.3, -17.6]), torch.tensor([-2.0, 0.5, 3.0]))
    total = distribution.log_prob(x).double().exp().sum(0)
    torch.testing.assert_close(total, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-5)


def test_out_of_range_values_have_zero_probability() -> None:
    distribution = DiscretizedLogistic(torch.zeros(3), torch.zeros(3), low=-2, high=2)
    log_prob = distribution.log_prob(torch.tensor([-3, 3, 2]))
    assert log_prob[0] == -float("inf") and log_prob[1] == -float("inf") and torch.isfinite(log_prob[2])


def test_bad_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="low < high"):
        DiscretizedLogistic(torch.zeros(1), torch.zeros(1), low=3, high=3)
    with pytest.raises(ValueError, match="both"):
        DiscretizedLogistic(torch.zeros(1), torch.zeros(1), low=0)


def test_stable_in_the_tails_and_for_extreme_scales() -> None:
    mean = torch.tensor([0.0, 0.0, 0.0, 1e4, 0.2], requires_grad=True)
    log_scale = torch.tensor([-30.0, 30.0, 0.0, -5.0, 15.0], requires_grad=True)
    x = torch.tensor([0, 5, 500, -1e4, 1])
    log_prob = DiscretizedLogistic(mean, log_scale).log_prob(x)
    assert torch.isfinite(log_prob).all()
    assert log_prob[0].item() == pytest.approx(0.0, abs=1e-6)  # all the mass on the mean's bin
    assert log_prob[1].item() == pytest.approx(-30.0 - math.log(4), abs=1e-3)  # wide: P ~ density 1/(4s)
    assert log_prob[2].item() < -490  # far tail: ~ -500, computed without underflow to -inf
    log_prob.sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all()


def test_log_one_minus_exp_matches_the_definition() -> None:
    d = torch.tensor([1e-12, 1e-6, 1e-4, 1e-2, 1.0, 30.0], dtype=torch.float64)
    torch.testing.assert_close(log_one_minus_exp(d), torch.log(1 - torch.exp(-d)), rtol=1e-6, atol=0)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), num_components=st.integers(1, 5))
def test_mixture_sums_to_one_and_matches_brute_force(seed: int, num_components: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(4, num_components, generator=generator, dtype=torch.float64) * 20
    log_scales = torch.randn(4, num_components, generator=generator, dtype=torch.float64)
    logits = torch.randn(4, num_components, generator=generator, dtype=torch.float64)
    low, high = -50, 50
    x = torch.arange(low, high + 1).view(-1, 1)
    log_prob = DiscretizedLogisticMixture(means, log_scales, logits, low, high).log_prob(x)  # (101, 4)
    torch.testing.assert_close(log_prob.exp().sum(0), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-9)
    weights = torch.softmax(logits, -1)
    expected = sum(
        weights[:, k] * brute_force_probability(x, means[:, k], log_scales[:, k].exp(), low, high)
        for k in range(num_components)
    )
    torch.testing.assert_close(log_prob.exp(), expected, rtol=1e-7, atol=1e-12)


def test_mixture_gradients_are_finite() -> None:
    means = (torch.randn(8, 5) * 100).requires_grad_()
    log_scales = (torch.randn(8, 5) * 5).requires_grad_()
    logits = torch.randn(8, 5).requires_grad_()
    x = torch.randint(-128, 128, (8,))
    DiscretizedLogisticMixture(means, log_scales, logits, -128, 127).log_prob(x).sum().backward()
    for parameter in (means, log_scales, logits):
        assert torch.isfinite(parameter.grad).all()


def test_samples_follow_the_probabilities() -> None:
    generator = torch.Generator().manual_seed(0)
    mean, log_scale = torch.full((20_000,), 1.3), torch.full((20_000,), 0.2)
    distribution = DiscretizedLogistic(mean, log_scale, low=-1, high=4)
    samples = distribution.sample(generator)
    assert samples.dtype == torch.int64 and samples.min() >= -1 and samples.max() <= 4
    frequencies = torch.bincount(samples + 1, minlength=6).double() / len(samples)
    probabilities = DiscretizedLogistic(torch.tensor(1.3), torch.tensor(0.2), -1, 4).log_prob(torch.arange(-1, 5)).exp()
    torch.testing.assert_close(frequencies, probabilities.double(), rtol=0, atol=0.015)


def test_mixture_samples_cover_both_modes() -> None:
    means = torch.tensor([[-100.0, 100.0]]).expand(4000, 2)
    mixture = DiscretizedLogisticMixture(means, torch.zeros(4000, 2), torch.zeros(4000, 2))
    samples = mixture.sample(torch.Generator().manual_seed(1))
    fraction_high = (samples > 0).double().mean().item()
    assert 0.45 < fraction_high < 0.55 and samples.abs().min() > 80
