"""Flow as a torch.distributions-like object (sample shapes, rsample, one-pass sample_and_log_prob, any torch base,
temperature), conditional flows, and every model's batch-size-0 and dtype policy."""

from __future__ import annotations

import pytest
import torch
from torch import distributions

from flowlib.distributions import StandardNormal, TemperatureNotSupportedError
from flowlib.models import IDF, PIE, VAE, WAE, Flow, glow, nice, realnvp, realnvp_vector
from flowlib.nets import MLP
from flowlib.transforms import AffineCoupling, Compose, InputDtypeError, InputShapeError, channel_mask, half_mask


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))


def _flow(context_features: int = 0, base=None) -> Flow:
    torch.manual_seed(0)
    layers = [AffineCoupling(half_mask(2, parity=i % 2), MLP(2, 4, 16, 1, context_features=context_features))
              for i in range(3)]
    flow = Flow(Compose(*layers), base if base is not None else StandardNormal(2),
                event_shape=(2,) if isinstance(base, distributions.Distribution) and not base.batch_shape else None)
    _randomise(flow)
    return flow


def test_sample_shapes_follow_torch_distributions():
    flow = _flow()
    assert flow.sample().shape == (2,)
    assert flow.sample(4).shape == flow.sample((4,)).shape == (4, 2)
    assert flow.sample(torch.Size([3, 5])).shape == (3, 5, 2)
    assert not flow.sample((4,)).requires_grad  # sample: no gradients, as torch.distributions
    with pytest.raises(ValueError, match="sample_shape"):
        flow.sample(-1)
    with pytest.raises(ValueError, match="sample_shape"):
        flow.sample((2.5,))


def test_rsample_is_differentiable():
    flow = _flow()
    flow.rsample((8,)).square().sum().backward()
    assert all(parameter.grad is not None for parameter in flow.parameters())


def test_sample_and_log_prob_is_one_pass_and_agrees_with_log_prob():
    flow = _flow().double()
    torch.manual_seed(1)
    x, log_prob = flow.sample_and_log_prob((3, 4))
    assert x.shape == (3, 4, 2) and log_prob.shape == (3, 4)
    assert torch.allclose(log_prob, flow.log_prob(x.reshape(-1, 2)).reshape(3, 4), atol=1e-10)
    calls = []
    flow.transform.register_forward_hook(lambda *args: calls.append("forward"))
    flow.sample_and_log_prob((5,))
    assert calls == []  # only the inverse ran
    x, log_prob = flow.rsample_and_log_prob((5,))
    assert log_prob.requires_grad


@pytest.mark.parametrize(
    "base",
    [
        distributions.Normal(0.0, 1.0),
        distributions.Independent(distributions.Normal(torch.zeros(2), torch.ones(2)), 1),
        distributions.MultivariateNormal(torch.zeros(2), torch.eye(2)),
    ],
    ids=["scalar_normal", "independent_normal", "multivariate_normal"],
)
def test_any_torch_normal_base_matches_the_standard_normal(base):
    reference, flow = _flow(), _flow(base=base)
    x = torch.randn(5, 2)
    assert torch.allclose(flow.log_prob(x), reference.log_prob(x), atol=1e-5)
    assert flow.sample((3,), temperature=0.5).shape == (3, 2)
    mode = flow.sample((2,), temperature=0.0)
    assert torch.allclose(mode, reference.sample((2,), temperature=0.0), atol=1e-6)


def test_torch_base_without_location_refuses_temperature_and_scalar_base_needs_shape():
    flow = _flow(base=distributions.Independent(distributions.Uniform(-torch.ones(2), torch.ones(2)), 1))
    assert flow.sample((4,)).shape == (4, 2)
    with pytest.raises(TemperatureNotSupportedError, match="location-scale"):
        flow.sample((4,), temperature=0.5)
    with pytest.raises(ValueError, match="event_shape"):
        Flow(Compose(), distributions.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="trailing"):
        Flow(Compose(), distributions.Normal(torch.zeros(3), 1.0), event_shape=(2,))


def test_conditional_flow_log_prob_and_sample_shapes():
    flow = _flow(context_features=3)
    x, context = torch.randn(4, 2), torch.randn(4, 3)
    log_prob = flow.log_prob(x, context)
    assert log_prob.shape == (4,)
    assert not torch.allclose(log_prob, flow.log_prob(x, torch.randn(4, 3)))  # the context matters
    assert torch.allclose(flow.log_prob(x, context[0]), flow.log_prob(x, context[:1].expand(4, 3)))
    assert flow.sample((5,), context=context).shape == (5, 4, 2)
    assert flow.sample((5,), context=context[0]).shape == (5, 2)
    samples, sample_log_prob = flow.sample_and_log_prob((5,), context=context)
    assert sample_log_prob.shape == (5, 4)
    again = flow.log_prob(samples.reshape(20, 2), context.repeat(5, 1)).reshape(5, 4)
    assert torch.allclose(sample_log_prob, again, atol=1e-4)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        flow.log_prob(x)  # a conditional flow needs its context
    with pytest.raises(ValueError, match="B = 4"):
        flow.log_prob(x, torch.randn(3, 3))
    with pytest.raises(ValueError, match="no conditioner that takes a context"):
        _flow().log_prob(x, context)


def test_conditional_support_leaves_the_unconditional_path_unchanged():
    conditional, plain = realnvp_vector(2, context_features=0), realnvp_vector(2)
    plain.load_state_dict(conditional.state_dict())
    _randomise(plain)
    conditional.load_state_dict(plain.state_dict())
    x = torch.randn(6, 2)
    assert torch.equal(conditional.log_prob(x), plain.log_prob(x))


# --- every model: batch size 0 and dtypes -----------------------------------------------------------------------

MODELS = {
    "nice": (lambda: nice((1, 8, 8), num_couplings=2, hidden_features=8, num_hidden_layers=1), (1, 8, 8)),
    "realnvp": (lambda: realnvp((1, 8, 8), num_scales=1, hidden_channels=4, num_blocks=1), (1, 8, 8)),
    "glow": (lambda: glow((1, 8, 8), num_levels=1, num_steps=1, hidden_channels=4), (1, 8, 8)),
    "realnvp_vector": (lambda: realnvp_vector(2, num_couplings=2, hidden_features=4), (2,)),
    "pie": (lambda: PIE((1, 28, 28), hidden_channels=4, hidden_features=8, num_steps=1), (1, 28, 28)),
}


@pytest.mark.parametrize("name", MODELS)
def test_batch_size_zero_gives_empty_results(name):
    build, shape = MODELS[name]
    model = build().eval()
    empty = torch.rand(0, *shape)
    assert model.log_prob(empty).shape == (0,)
    assert model.bits_per_dim(empty).shape == (0,)
    assert model.sample(0).shape == (0, *shape)


def test_batch_size_zero_for_auto_encoders_and_idf():
    for model in (PIE((1, 28, 28), hidden_channels=4, hidden_features=8, num_steps=1), VAE(1, 28, 4, 4),
                  WAE(1, 28, 4, 4)):
        empty = torch.rand(0, 1, 28, 28)
        assert model.encode(empty).shape == (0, model.latent_dim)
        assert model.sample(0).shape == (0, 1, 28, 28)
        with pytest.raises(ValueError, match="empty batch|n >= 2"):
            model.loss(empty)  # a mean over no examples is refused, never NaN
    idf = IDF((1, 8, 8), num_levels=1, num_couplings=1, hidden_channels=4)
    assert idf.log_prob(torch.zeros(0, 1, 8, 8, dtype=torch.uint8)).shape == (0,)


@pytest.mark.parametrize("name", MODELS)
def test_float64_data_is_refused_with_advice_and_works_after_double(name):
    build, shape = MODELS[name]
    model = build().eval()
    x = torch.rand(2, *shape, dtype=torch.float64).clamp(0.01, 0.99)
    with pytest.raises(InputDtypeError, match=r"float32 parameters.*float64 data.*model\.double\(\)"):
        model.log_prob(x)
    assert model.double().log_prob(x).dtype == torch.float64
    with pytest.raises(InputDtypeError, match="dequantize"):
        model.log_prob(torch.zeros(2, *shape, dtype=torch.uint8))


def test_float64_data_for_auto_encoders():
    for model in (VAE(1, 28, 4, 4), WAE(1, 28, 4, 4)):
        with pytest.raises(InputDtypeError, match="model.double"):
            model.loss(torch.rand(3, 1, 28, 28, dtype=torch.float64))


def test_channels_last_images_get_a_permute_hint():
    flow = realnvp((3, 8, 8), num_scales=1, hidden_channels=4, num_blocks=1)
    with pytest.raises(InputShapeError, match=r"channels-last.*permute\(0, 3, 1, 2\)"):
        flow.log_prob(torch.rand(2, 8, 8, 3))
    layer = AffineCoupling(channel_mask(3, 4, 4), torch.nn.Identity())
    with pytest.raises(InputShapeError, match="permute"):
        layer(torch.rand(2, 4, 4, 3))
    with torch.no_grad():
        log_prob = flow.log_prob(torch.rand(2, 8, 8, 3).permute(0, 3, 1, 2))
    assert torch.isfinite(log_prob).all()
