"""Tests of flowlib.models.idf: exact integer round trips, coupling inverses, likelihood bookkeeping."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowlib.models.idf as idf
from flowlib.models.idf import IDF, ExactArithmeticError, IntegerAdditiveCoupling, round_ste
from flowlib.transforms import InputShapeError


def tiny_model(seed: int = 0, image_shape=(1, 8, 8)) -> IDF:
    """An untrained tiny IDF whose networks are randomised (not the zero identity start), so couplings do shift."""
    torch.manual_seed(seed)
    model = IDF(image_shape, num_levels=2, num_couplings=2, hidden_channels=8, num_components=3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


def test_doctests() -> None:
    assert doctest.testmod(idf).failed == 0


def test_round_ste_rounds_forward_and_passes_gradients_straight_through() -> None:
    x = torch.tensor([0.4, 0.6, -1.5, 2.5], requires_grad=True)
    y = round_ste(x)
    assert y.tolist() == [0.0, 1.0, -2.0, 2.0]
    (y * torch.arange(4.0)).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_coupling_inverse_is_exact_and_outputs_stay_integer(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    coupling = IntegerAdditiveCoupling(6, hidden_channels=8)
    for parameter in coupling.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    x = torch.randint(-300, 300, (5, 6, 4, 4)).to(dtype)
    z, logabsdet = coupling(x)
    assert torch.equal(z, z.round()) and not torch.equal(z, x)
    assert torch.equal(z[:, :3], x[:, :3])  # the kept half passes unchanged
    assert torch.equal(coupling.inverse(z)[0], x)
    assert torch.equal(logabsdet, torch.zeros(5, dtype=dtype))


def test_coupling_batch_of_one_and_shape_errors() -> None:
    coupling = IntegerAdditiveCoupling(4, hidden_channels=4)
    z, logabsdet = coupling(torch.zeros(1, 4, 2, 2))
    assert z.shape == (1, 4, 2, 2) and logabsdet.shape == (1,)
    with pytest.raises(InputShapeError, match=r"\(B, 4, H, W\)"):
        coupling(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="at least 2 channels"):
        IntegerAdditiveCoupling(1)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), batch=st.integers(1, 4))
def test_integer_round_trip_is_exact_on_random_images(seed: int, batch: int) -> None:
    model = tiny_model(seed % 3)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batch, 1, 8, 8), generator=generator, dtype=torch.uint8)
    latents = model.forward_integer(x)
    assert [z.dtype for z in latents] == [torch.int64, torch.int64]
    assert [tuple(z.shape[1:]) for z in latents] == [(2, 4, 4), (8, 2, 2)]
    assert torch.equal(model.inverse_integer(latents), x)


def test_round_trip_on_extreme_images_and_three_channels() -> None:
    model = tiny_model(1, image_shape=(3, 4, 4))
    x = torch.stack([torch.zeros(3, 4, 4), torch.full((3, 4, 4), 255.0), torch.randint(0, 2, (3, 4, 4)) * 255.0])
    x = x.to(torch.uint8)
    assert torch.equal(model.inverse_integer(model.forward_integer(x)), x)


def test_latents_that_are_not_from_the_model_are_rejected() -> None:
    model = tiny_model()
    latents = model.forward_integer(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    latents[1] = latents[1] + 10_000
    with pytest.raises(ValueError, match="0..255"):
        model.inverse_integer(latents)
    with pytest.raises(ValueError, match="one per level"):
        model.inverse_integer(latents[:1])


def test_log_prob_is_the_sum_of_the_level_priors_and_finite() -> None:
    model = tiny_model()
    x = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    log_prob = model.log_prob(x)
    assert log_prob.shape == (3,) and torch.isfinite(log_prob).all() and (log_prob < 0).all()
    latents, contexts = model.forward_integer(x, return_contexts=True)
    by_hand = sum(model.prior(i, c).log_prob(z).flatten(1).sum(1) for i, (z, c) in enumerate(zip(latents, contexts)))
    exact = model.log_prob(x, exact=True)
    torch.testing.assert_close(exact, by_hand)
    torch.testing.assert_close(exact, log_prob.double(), rtol=1e-3, atol=0.5)  # quantization changes little
    bits = model.bits_per_dim(x)
    torch.testing.assert_close(bits, -log_prob / (64 * math.log(2)))


def test_probabilities_of_a_tiny_image_space_sum_to_one() -> None:
    """With 2x2 images of 2-bit pixels... the flow is a bijection of Z^4, so P over all of Z^4 sums to 1;
    summed over pixel values alone it must stay below 1 and the log-probs must be valid."""
    model = IDF((1, 2, 2), num_levels=1, num_couplings=1, hidden_channels=4, num_components=2)
    values = torch.cartesian_prod(*[torch.arange(0, 256, 17)] * 4).to(torch.uint8).view(-1, 1, 2, 2)
    total = model.log_prob(values).double().exp().sum().item()
    assert 0 < total < 1


@pytest.mark.parametrize("factor_components", [1, 3])  # one logistic per factored-out value, or a mixture
def test_untrained_bits_per_dim_are_sensible_and_training_lowers_them(factor_components: int) -> None:
    torch.manual_seed(0)
    model = IDF((1, 8, 8), num_levels=2, num_couplings=1, hidden_channels=8, factor_components=factor_components)
    x = (torch.rand(32, 1, 8, 8) < 0.3).to(torch.uint8) * 255  # binary "background or ink" images
    before = model.bits_per_dim(x).mean().item()
    assert 2 < before < 12  # broad initial priors: a few bits per pixel
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-2)
    for _ in range(60):
        loss = model.bits_per_dim(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model.bits_per_dim(x).mean().item() < before - 3


def test_input_checks() -> None:
    model = tiny_model()
    with pytest.raises(TypeError, match="uint8"):
        model.log_prob(torch.zeros(1, 1, 8, 8))
    with pytest.raises(InputShapeError, match=r"\(B, 1, 8, 8\)"):
        model.log_prob(torch.zeros(1, 1, 6, 6, dtype=torch.uint8))
    with pytest.raises(InputShapeError, match="even"):
        IDF((1, 6, 6), num_levels=2)


def test_exact_path_refuses_diverged_weights() -> None:
    model = tiny_model()
    with torch.no_grad():
        model.levels[0].flow[2].conditioner.layers[0].weight.fill_(1e9)
    with pytest.raises(ExactArithmeticError, match="retrain"):
        model.forward_integer(torch.full((1, 1, 8, 8), 255, dtype=torch.uint8))


def test_exact_path_is_independent_of_thread_count_and_batch_split() -> None:
    model = tiny_model()
    x = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = model.forward_integer(x, return_contexts=True)
        torch.set_num_threads(2)
        two = [model.forward_integer(x[i : i + 5], return_contexts=True) for i in range(0, 16, 5)]
    finally:
        torch.set_num_threads(threads)
    for level in range(2):
        assert torch.equal(one[0][level], torch.cat([part[0][level] for part in two]))
    prior_one = model.prior(0, one[1][0])
    prior_two = [model.prior(0, part[1][0]) for part in two]
    assert torch.equal(prior_one.mean, torch.cat([p.mean for p in prior_two]))
    assert torch.equal(prior_one.log_scale, torch.cat([p.log_scale for p in prior_two]))
    assert torch.equal(prior_one.mean * 4096, (prior_one.mean * 4096).round())  # on the 2^-12 grid


def test_coupling_log_det_matches_the_autograd_jacobian_and_round_trips_sum_to_zero() -> None:
    torch.manual_seed(1)
    coupling = IntegerAdditiveCoupling(2, hidden_channels=4)
    torch.nn.init.normal_(coupling.conditioner.layers[-1].weight, std=0.5)
    x = torch.randint(-20, 20, (1, 2, 2, 2)).float()

    def flat_forward(values: torch.Tensor) -> torch.Tensor:
        return coupling(values.view(1, 2, 2, 2))[0].flatten()

    jacobian = torch.autograd.functional.jacobian(flat_forward, x.flatten())  # straight-through: unit triangular
    sign, log_abs_det = torch.linalg.slogdet(jacobian)
    z, forward_logabsdet = coupling(x)
    _, inverse_logabsdet = coupling.inverse(z)
    assert sign.item() == 1.0 and log_abs_det.item() == pytest.approx(forward_logabsdet.item(), abs=1e-6)
    assert (forward_logabsdet + inverse_logabsdet).abs().max().item() == 0.0


def test_coupling_outputs_stay_finite_on_extreme_inputs() -> None:
    coupling = IntegerAdditiveCoupling(4, hidden_channels=4)
    torch.nn.init.normal_(coupling.conditioner.layers[-1].weight, std=0.5)
    x = torch.tensor([-1e4, 1e4, 0.0, 255.0]).view(1, 4, 1, 1).expand(3, 4, 2, 2).contiguous()
    z, logabsdet = coupling(x)
    assert torch.isfinite(z).all() and torch.isfinite(logabsdet).all()
    assert torch.equal(coupling.inverse(z)[0], x)


def mixture_prior_model(seed: int = 0, image_shape=(1, 8, 8)) -> IDF:
    """A tiny IDF whose factor-out priors are conditional mixtures (Eq. 5b), with randomised networks."""
    torch.manual_seed(seed)
    model = IDF(image_shape, num_levels=2, num_couplings=2, hidden_channels=8, num_components=3, factor_components=3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), exact=st.booleans())
def test_conditional_mixture_prior_normalises_over_the_integers(seed: int, exact: bool) -> None:
    torch.manual_seed(seed)
    prior = idf.ConditionalLogisticPrior(2, 3, hidden_channels=8, num_components=4)
    with torch.no_grad():
        for parameter in prior.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    context = torch.randint(-128, 128, (2, 2, 3, 3)).to(torch.float64 if exact else torch.float32)
    distribution = prior(context)
    assert isinstance(distribution, idf.DiscretizedLogisticMixture) and distribution.num_components == 4
    values = torch.arange(-6000, 6001, dtype=torch.float64).view(-1, 1, 1, 1, 1)
    log_prob = distribution.log_prob(values)  # (V, 2, 3, 3, 3): every value for every element
    total = torch.logsumexp(log_prob.double(), dim=0).exp()
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-5)
    if exact:  # coding path: every parameter on the 2^-12 grid
        for value in (distribution.means, distribution.log_scales, distribution.logit_weights):
            assert torch.equal(value * 4096, (value * 4096).round())


def test_conditional_mixture_components_start_apart_and_bad_counts_are_refused() -> None:
    prior = idf.ConditionalLogisticPrior(2, 1, hidden_channels=8, num_components=3)
    means = prior(torch.zeros(1, 2, 2, 2)).means
    assert means[..., 0].lt(means[..., 1]).all() and means[..., 1].lt(means[..., 2]).all()
    with pytest.raises(ValueError, match="at least 1"):
        idf.ConditionalLogisticPrior(2, 1, num_components=0)


def test_mixture_prior_model_round_trips_and_its_log_prob_adds_up() -> None:
    model = mixture_prior_model()
    assert model.config["factor_components"] == 3
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    latents, contexts = model.forward_integer(x, return_contexts=True)
    assert torch.equal(model.inverse_integer(latents), x)
    exact = model.log_prob(x, exact=True)
    by_hand = sum(model.prior(i, c).log_prob(z).flatten(1).sum(1) for i, (z, c) in enumerate(zip(latents, contexts)))
    torch.testing.assert_close(exact, by_hand)
    torch.testing.assert_close(exact, model.log_prob(x).double(), rtol=1e-3, atol=0.5)
