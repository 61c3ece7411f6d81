"""Tests of the NICE, RealNVP and Glow builders: shapes, finite log-densities, exact invertibility of the composed
model (with the factored-out parts restored), log-dets against autograd, normalisation in 2-D, parameter counts and
clear errors for images of the wrong size."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from flowlib.models.glow import MIXINGS, GlowConditioner, glow
from flowlib.models.nice import interleaved_mask, nice
from flowlib.models.realnvp import realnvp, realnvp_vector
from flowlib.transforms import Compose, InputShapeError, Split, Transform

BUILDERS = {
    "nice_vector": lambda: nice(2, hidden_features=8, num_hidden_layers=1),
    "nice_image": lambda: nice((1, 4, 4), hidden_features=8, num_hidden_layers=1, prior="normal"),
    "realnvp_vector": lambda: realnvp_vector(2, num_couplings=4, hidden_features=8),
    "realnvp_image": lambda: realnvp((1, 8, 8), num_scales=2, hidden_channels=4, num_blocks=1),
    **{
        f"glow_{mixing}": lambda mixing=mixing: glow((1, 8, 8), num_steps=2, hidden_channels=4, mixing=mixing)
        for mixing in MIXINGS
    },
}
EVENT_SHAPES = {"nice_vector": (2,), "realnvp_vector": (2,)}


def _event_shape(name: str) -> tuple[int, ...]:
    return EVENT_SHAPES.get(name, (1, 8, 8) if "image" in name or "glow" in name else (2,))


def _data(name: str, batch_size: int = 5) -> Tensor:
    generator = torch.Generator().manual_seed(1)
    if name == "nice_image":
        return torch.rand(batch_size, 1, 4, 4, generator=generator)
    shape = _event_shape(name)
    if len(shape) == 3:  # images in (0, 1), as dequantized data
        return torch.rand(batch_size, *shape, generator=generator) * 0.98 + 0.01
    return torch.randn(batch_size, *shape, generator=generator)


def _build(name: str) -> nn.Module:
    """Build, initialise ActNorm on a batch, then perturb every parameter so no coupling is the identity."""
    torch.manual_seed(0)
    flow = BUILDERS[name]()
    flow.train()
    with torch.no_grad():
        flow.log_prob(_data(name, batch_size=16))
        for parameter in flow.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return flow.eval()


def _leaves(transform: Transform) -> list[Transform]:
    """The layers of nested ``Compose``s in data -> latent order."""
    if isinstance(transform, Compose):
        return [leaf for child in transform.transforms for leaf in _leaves(child)]
    return [transform]


def _round_trip(flow: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """x -> z -> x layer by layer, giving each Split back its factored-out ``r``; returns (x_back, fwd, inv)."""
    layers = _leaves(flow.transform)
    removed: list[Tensor | None] = []
    forward_total = x.new_zeros(x.shape[0])
    h = x
    for layer in layers:
        removed.append(h[:, layer.num_kept :] if isinstance(layer, Split) else None)
        h, logabsdet = layer(h)
        forward_total = forward_total + (0 if isinstance(layer, Split) else logabsdet)
    inverse_total = x.new_zeros(x.shape[0])
    for layer, r in zip(reversed(layers), reversed(removed)):
        if isinstance(layer, Split):
            h, _ = layer.inverse(h, r=r)
        else:
            h, logabsdet = layer.inverse(h)
            inverse_total = inverse_total + logabsdet
    return h, forward_total, inverse_total


@pytest.mark.parametrize("name", list(BUILDERS))
def test_log_prob_shape_and_finite(name: str) -> None:
    flow = _build(name)
    log_prob = flow.log_prob(_data(name))
    assert log_prob.shape == (5,)
    assert torch.isfinite(log_prob).all()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_exact_round_trip_with_factored_parts_restored(name: str) -> None:
    flow = _build(name).double()
    x = _data(name).double()
    with torch.no_grad():
        x_back, forward_logabsdet, inverse_logabsdet = _round_trip(flow, x)
    assert torch.allclose(x_back, x, atol=1e-9), float((x_back - x).abs().max())
    assert torch.allclose(forward_logabsdet + inverse_logabsdet, torch.zeros_like(forward_logabsdet), atol=1e-8)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_samples_have_the_data_shape_and_batch_size_one_works(name: str) -> None:
    flow = _build(name)
    with torch.no_grad():
        samples = flow.sample(3)
        single = flow.log_prob(_data(name, batch_size=1))
    expected = (1, 4, 4) if name == "nice_image" else _event_shape(name)
    assert samples.shape == (3, *expected)
    assert torch.isfinite(samples).all()
    assert single.shape == (1,) and torch.isfinite(single).all()


@pytest.mark.parametrize(
    "name", ["nice_vector", "realnvp_vector", "glow_lu_single_level", "glow_householder_single_level"]
)
def test_logabsdet_matches_autograd_jacobian(name: str) -> None:
    if name.startswith("glow"):
        torch.manual_seed(0)
        mixing = name.split("_")[1]
        flow = glow((1, 2, 2), num_levels=1, num_steps=2, hidden_channels=4, mixing=mixing, logit_alpha=0.1)
        flow.train()
        with torch.no_grad():
            flow.log_prob(torch.rand(8, 1, 2, 2))
            for parameter in flow.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
        flow.eval()
        x = torch.rand(1, 1, 2, 2) * 0.9 + 0.05
    else:
        flow = _build(name)
        x = _data(name, batch_size=1)
    flow = flow.double()
    x = x.double()
    jacobian = torch.autograd.functional.jacobian(lambda inputs: flow.transform(inputs)[0], x)
    jacobian = jacobian.reshape(x.numel(), x.numel())
    _, logabsdet = flow.transform(x)
    assert torch.allclose(logabsdet[0], torch.linalg.slogdet(jacobian)[1], atol=1e-8)


@pytest.mark.parametrize("name", ["nice_vector", "realnvp_vector"])
def test_two_dimensional_density_integrates_to_one(name: str) -> None:
    flow = _build(name)
    grid = torch.linspace(-12, 12, 481)
    points = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        density = flow.log_prob(points).exp()
    cell = float(grid[1] - grid[0]) ** 2
    assert abs(float(density.sum()) * cell - 1.0) < 0.02


@pytest.mark.filterwarnings("ignore:torch.lu is deprecated:UserWarning")
def test_glow_parameter_count_matches_normflows_glow() -> None:
    """The benchmark's two models have the same architecture: their parameter counts differ only by normflows'
    learned per-channel base distributions (4 numbers per latent channel)."""
    pytest.importorskip("normflows")
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "train_throughput.py"
    spec = importlib.util.spec_from_file_location("train_throughput", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    ours, _ = benchmark.build_flowlib(num_levels=2, num_steps=2, hidden_channels=16)
    theirs, _ = benchmark.build_normflows(num_levels=2, num_steps=2, hidden_channels=16)
    count = lambda model: sum(parameter.numel() for parameter in model.parameters())  # noqa: E731
    base_parameters = 4 * (8 + 2)  # GlowBase: loc, loc_logs, log_scale, log_scale_logs per channel of both latents
    assert count(ours) == count(theirs) - base_parameters


def test_parameter_count_grows_with_width_and_mixing_costs() -> None:
    count = lambda model: sum(parameter.numel() for parameter in model.parameters())  # noqa: E731
    sizes = {mixing: count(glow((1, 8, 8), num_steps=1, hidden_channels=8, mixing=mixing)) for mixing in MIXINGS}
    assert sizes["reverse"] == sizes["permutation"] < sizes["householder"] < sizes["lu"]
    assert count(glow((1, 8, 8), num_steps=1, hidden_channels=16)) > sizes["lu"]
    narrow, wide = (realnvp((1, 8, 8), num_scales=1, hidden_channels=width) for width in (8, 16))
    assert count(wide) > count(narrow)


def test_glow_conditioner_reads_only_the_conditioning_half() -> None:
    torch.manual_seed(0)
    net = GlowConditioner(4, hidden_channels=8)
    for parameter in net.parameters():
        nn.init.normal_(parameter)
    x = torch.randn(2, 4, 3, 3)
    changed = x.clone()
    changed[:, 2:] = torch.randn(2, 2, 3, 3)
    out = net(x)
    assert out.shape == (2, 8, 3, 3)
    assert torch.equal(out, net(changed))  # the transformed half never reaches the network
    assert torch.equal(out[:, :2], torch.zeros(2, 2, 3, 3)) and torch.equal(out[:, 4:6], torch.zeros(2, 2, 3, 3))


@pytest.mark.parametrize(
    "build",
    [
        lambda: glow((1, 28, 28), num_levels=3),
        lambda: glow((1, 30, 30), num_levels=2),
        lambda: realnvp((1, 28, 28), num_scales=3),
        lambda: realnvp((3, 28)),
    ],
)
def test_bad_image_size_raises_a_clear_error(build) -> None:
    with pytest.raises(InputShapeError, match=r"(divisible by|expects image_shape)"):
        build()


def test_model_rejects_images_of_another_size() -> None:
    flow = glow((1, 8, 8), num_levels=2, num_steps=1, hidden_channels=4)
    for shape in [(2, 1, 16, 16), (2, 1, 6, 6), (2, 3, 8, 8), (2, 64)]:
        with pytest.raises(InputShapeError, match=r"built for images of shape \(B, 1, 8, 8\)"):
            flow.log_prob(torch.rand(*shape))


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="mixing"):
        glow((1, 8, 8), mixing="shuffle")
    with pytest.raises(ValueError, match="partition"):
        nice(4, partition="random")
    with pytest.raises(ValueError, match="num_couplings"):
        realnvp_vector(2, num_couplings=1)


def test_interleaved_mask_alternates() -> None:
    assert interleaved_mask(6).tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert (interleaved_mask(6) + interleaved_mask(6, parity=1)).tolist() == [1.0] * 6


def test_nice_logistic_prior_log_prob_at_zero() -> None:
    """An untrained NICE (zero-initialised couplings, unit scaling) is the identity: log p(0) = D log(1/4)."""
    flow = nice(6, hidden_features=8, num_hidden_layers=1)
    assert torch.allclose(flow.log_prob(torch.zeros(1, 6)), torch.tensor([6 * math.log(0.25)]))
