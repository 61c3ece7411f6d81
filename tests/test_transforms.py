"""One harness runs every transform of flowlib.transforms through the same checks, plus layer-specific tests.

Every registry entry builds a small instance whose parameters are randomised (zero-initialised conditioners would
make the checks trivial), for vectors and images. Checks: inverse accuracy, log-det against the autograd Jacobian
(float64), forward + inverse log-dets cancelling, batch size 1 (and agreement with the batched result), float64,
finite outputs on extreme inputs, state_dict round trip, helpful shape errors, batch size 0. Conditional cases
(``context_features > 0``) get a context ``(B, K)`` in every check, in both directions.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from flowlib.nets import MLP, ConvNet
from flowlib.transforms import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Compose,
    Flatten,
    Householder1x1Conv,
    HouseholderLinear,
    InputOutsideDomainError,
    InputShapeError,
    Inverse,
    Invertible1x1Conv,
    Logit,
    MaskedAutoregressive,
    Permutation,
    PIECoupling,
    RationalQuadraticCoupling,
    Reshape,
    Reverse,
    Scaling,
    Split,
    Squeeze,
    Transform,
    channel_mask,
    checkerboard_mask,
    half_mask,
)

# ---------------------------------------------------------------------------------------------------------------
# Registry


def _normal(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=generator)


def _unit_interval(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return 0.05 + 0.9 * torch.rand(shape, generator=generator)


def _huge(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return 1e4 * torch.randn(shape, generator=generator)


def _large_logits(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    signs = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0)
    return signs * (50.0 + 1e4 * torch.rand(shape, generator=generator))


def _unit_edges(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=generator) < 0.5).float()  # exactly 0 and 1


@dataclass
class Case:
    name: str
    build: Callable[[], Transform]
    event_shape: tuple[int, ...]
    bad_event_shape: tuple[int, ...] | None  # an input shape the layer must reject with InputShapeError
    sample: Callable[[tuple[int, ...], torch.Generator], Tensor] = _normal
    extreme: Callable[[tuple[int, ...], torch.Generator], Tensor] = _huge  # extreme inputs of forward
    extreme_latent: Callable[[tuple[int, ...], torch.Generator], Tensor] = _huge  # ... and of inverse
    context_features: int = 0  # > 0: a conditional transform, called with a context (B, K)

    def __repr__(self) -> str:
        return self.name


def _compose_image() -> Transform:
    return Compose(
        ActNorm(2),
        Invertible1x1Conv(2),
        AffineCoupling(checkerboard_mask(2, 4, 4), ConvNet(2, 4, hidden_channels=8, num_blocks=1)),
        Squeeze(2, pattern="checkerboard"),
        Householder1x1Conv(8),
        PIECoupling(channel_mask(8, 2, 2), ConvNet(8, 16, 8, 1), ConvNet(8, 16, 8, 1)),
        Scaling(8),
    )


def _compose_vector() -> Transform:
    return Compose(
        ActNorm(4),
        AffineCoupling(half_mask(4), MLP(4, 8, hidden_features=16, num_hidden_layers=1)),
        Permutation(4),
        AdditiveCoupling(half_mask(4), MLP(4, 4, hidden_features=16, num_hidden_layers=1)),
        HouseholderLinear(4),
        Scaling(4),
    )


def _compose_conditional() -> Transform:
    return Compose(
        RationalQuadraticCoupling(half_mask(4), MLP(4, 4 * 11, 16, 1, context_features=3), num_bins=4),
        ActNorm(4),
        AffineCoupling(half_mask(4), MLP(4, 8, hidden_features=16, num_hidden_layers=1, context_features=3)),
        Reverse(),
        MaskedAutoregressive(4, hidden_features=8, context_features=3),
    )


CASES = [
    Case("additive_vector", lambda: AdditiveCoupling(half_mask(5), MLP(5, 5, 16, 1)), (5,), (4,)),
    Case("additive_image", lambda: AdditiveCoupling(checkerboard_mask(1, 4, 4), ConvNet(1, 1, 8, 1)), (1, 4, 4),
         (2, 4, 4)),
    Case("affine_vector", lambda: AffineCoupling(half_mask(5, parity=1), MLP(5, 10, 16, 1)), (5,), (6,)),
    Case("affine_checkerboard", lambda: AffineCoupling(checkerboard_mask(2, 4, 4, 1), ConvNet(2, 4, 8, 1)),
         (2, 4, 4), (3, 4, 4)),
    Case("affine_channel", lambda: AffineCoupling(channel_mask(4, 2, 2), ConvNet(4, 8, 8, 1)), (4, 2, 2),
         (4, 2, 3)),
    Case("pie_vector", lambda: PIECoupling(half_mask(4), MLP(4, 8, 16, 1), MLP(4, 8, 16, 1)), (4,), (5,)),
    Case("pie_image", lambda: PIECoupling(channel_mask(4, 3, 3, 1), ConvNet(4, 8, 8, 1), ConvNet(4, 8, 8, 1)),
         (4, 3, 3), (2, 3, 3)),
    Case("householder_vector", lambda: HouseholderLinear(5), (5,), (4,)),
    Case("householder_conv", lambda: Householder1x1Conv(3, num_reflections=2), (3, 4, 4), (2, 4, 4)),
    Case("invertible_1x1_conv", lambda: Invertible1x1Conv(3), (3, 4, 4), (4, 4, 4)),
    Case("invertible_1x1_vector", lambda: Invertible1x1Conv(3), (3,), (2,)),
    Case("permutation_random", lambda: Permutation(6, seed=3), (6,), (5,)),
    Case("permutation_height", lambda: Permutation(torch.tensor([2, 0, 3, 1]), dim=2), (2, 4, 3), (2, 3, 3)),
    Case("reverse_vector", lambda: Reverse(), (5,), None),
    Case("reverse_image", lambda: Reverse(dim=3), (2, 3, 4), None),
    Case("actnorm_vector", lambda: ActNorm(4), (4,), (3,)),
    Case("actnorm_image", lambda: ActNorm(3), (3, 4, 4), (1, 4, 4)),
    Case("scaling_vector", lambda: Scaling(4), (4,), (2,)),
    Case("scaling_image", lambda: Scaling(2), (2, 3, 3), (3, 3, 3)),
    Case("squeeze_space_to_depth", lambda: Squeeze(2), (2, 4, 6), (2, 5, 6)),
    Case("squeeze_checkerboard", lambda: Squeeze(2, pattern="checkerboard"), (1, 4, 4), (1, 4, 3)),
    Case("squeeze_checkerboard_3", lambda: Squeeze(3, pattern="checkerboard"), (2, 6, 3), (2, 6, 4)),
    Case("flatten", lambda: Flatten((2, 3, 3)), (2, 3, 3), (3, 3, 3)),
    Case("reshape", lambda: Reshape((2, 3, 4), (4, 6)), (2, 3, 4), (24,)),
    Case("logit", lambda: Logit(alpha=0.05), (2, 3), None, sample=_unit_interval, extreme=_unit_edges,
         extreme_latent=_large_logits),
    Case("split_vector", lambda: Split(2, num_features=5), (5,), (4,)),
    Case("split_image", lambda: Split(2, kernel_size=3), (4, 2, 2), (3, 2, 2)),
    Case("split_standard", lambda: Split(3, prior="standard"), (6, 2, 2), (5, 2, 2)),
    Case("compose_vector", _compose_vector, (4,), (3,)),
    Case("compose_image", _compose_image, (2, 4, 4), (2, 4, 5)),
    Case("inverse_affine", lambda: Inverse(AffineCoupling(half_mask(4), MLP(4, 8, 16, 1))), (4,), (3,)),
    Case("inverse_squeeze", lambda: Inverse(Squeeze(2, pattern="checkerboard")), (8, 2, 2), (6, 2, 2)),
    Case("inverse_logit", lambda: Inverse(Logit(alpha=0.01)), (3,), None, extreme=_large_logits,
         extreme_latent=_unit_edges),
    Case("spline_vector", lambda: RationalQuadraticCoupling(half_mask(5), MLP(5, 5 * 23, 16, 1)), (5,), (4,)),
    Case("spline_image", lambda: RationalQuadraticCoupling(checkerboard_mask(2, 4, 4), ConvNet(2, 2 * 11, 8, 1),
                                                           num_bins=4, tail_bound=2.0), (2, 4, 4), (1, 4, 4)),
    Case("maf", lambda: MaskedAutoregressive(4, hidden_features=8), (4,), (5,)),
    Case("maf_one_hidden_layer", lambda: MaskedAutoregressive(3, hidden_features=4, num_hidden_layers=1), (3,), (2,)),
    Case("affine_vector_conditional",
         lambda: AffineCoupling(half_mask(4), MLP(4, 8, 16, 1, context_features=3)), (4,), (3,), context_features=3),
    Case("affine_image_conditional",
         lambda: AffineCoupling(checkerboard_mask(2, 4, 4), ConvNet(2, 4, 8, 1, context_features=2)), (2, 4, 4),
         (2, 4, 5), context_features=2),
    Case("additive_conditional",
         lambda: AdditiveCoupling(half_mask(4), MLP(4, 4, 16, 1, context_features=2)), (4,), (5,), context_features=2),
    Case("pie_conditional", lambda: PIECoupling(half_mask(4), MLP(4, 8, 16, 1, context_features=2),
                                                MLP(4, 8, 16, 1, context_features=2)), (4,), (3,), context_features=2),
    Case("spline_conditional",
         lambda: RationalQuadraticCoupling(half_mask(4), MLP(4, 4 * 14, 16, 1, context_features=2), num_bins=5),
         (4,), (3,), context_features=2),
    Case("maf_conditional", lambda: MaskedAutoregressive(4, hidden_features=8, context_features=3), (4,), (2,),
         context_features=3),
    Case("compose_conditional", _compose_conditional, (4,), (5,), context_features=3),
    Case("inverse_conditional",
         lambda: Inverse(AffineCoupling(half_mask(4), MLP(4, 8, 16, 1, context_features=2))), (4,), (3,),
         context_features=2),
]


def contexts(case: Case, batch_size: int = 8, seed: int = 4, dtype: torch.dtype = torch.float32) -> Tensor | None:
    """A random context ``(batch_size, K)`` for a conditional case, ``None`` otherwise."""
    if not case.context_features:
        return None
    return torch.randn(batch_size, case.context_features, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def run(transform: Transform, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
    """``transform(x)``, with ``context=`` for a conditional case."""
    return transform(x) if context is None else transform(x, context=context)


def prepare(case: Case, seed: int = 0) -> Transform:
    """Build the case, initialise ActNorm from a batch and randomise every parameter; return it in eval mode."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    transform = case.build()
    transform.train()
    with torch.no_grad():
        # data-dependent initialisation (ActNorm)
        run(transform, case.sample((16, *case.event_shape), generator), contexts(case, 16))
        for parameter in transform.parameters():
            # weights: noise of the size of a default initialisation (the zeroed last layers get one too)
            scale = 0.3 if parameter.dim() < 2 else 1.0 / math.sqrt(parameter[0].numel())
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return transform.eval()


def inputs(case: Case, batch_size: int = 8, seed: int = 1, dtype: torch.dtype = torch.float32) -> Tensor:
    return case.sample((batch_size, *case.event_shape), torch.Generator().manual_seed(seed)).to(dtype)


def invert(transform: Transform, x: Tensor, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``transform.inverse(z)``; a ``Split`` is handed the factored-out part of ``x`` so that it is a bijection."""
    if isinstance(transform, Split):
        return transform.inverse(z, r=x[:, transform.num_kept :])
    return transform.inverse(z) if context is None else transform.inverse(z, context=context)


ids = [case.name for case in CASES]


# ---------------------------------------------------------------------------------------------------------------
# The harness


def test_registry_covers_every_transform():
    import flowlib.transforms as transforms

    public = {
        obj for name in transforms.__all__ if isinstance(obj := getattr(transforms, name), type)
        and issubclass(obj, Transform) and obj is not Transform
    }
    covered = set()
    for case in CASES:
        for module in prepare(case).modules():
            covered.add(type(module))
    assert public - covered == set()


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_inverse_accuracy(case: Case):
    transform = prepare(case)
    x, context = inputs(case), contexts(case)
    with torch.no_grad():
        z, _ = run(transform, x, context)
        x_back, _ = invert(transform, x, z, context)
    assert x_back.shape == x.shape
    assert (x_back - x).abs().max() <= 1e-5


@pytest.mark.parametrize("case", [c for c in CASES if not c.name.startswith("split")], ids=lambda c: c.name)
def test_logabsdet_matches_autograd_jacobian(case: Case):
    transform = prepare(case).double()
    x = inputs(case, batch_size=2, dtype=torch.float64)
    context = contexts(case, batch_size=2, dtype=torch.float64)
    z, logabsdet = run(transform, x, context)
    _, inverse_logabsdet = invert(transform, x, z.detach(), context)
    for i in range(x.shape[0]):
        row = None if context is None else context[i : i + 1]
        for function, point, expected in (
            (lambda v, row=row: run(transform, v, row), x[i], logabsdet[i]),
            (lambda v, row=row: invert(transform, x, v, row), z[i].detach(), inverse_logabsdet[i]),
        ):
            def flat(v: Tensor, function=function, point=point) -> Tensor:
                return function(v.view(1, *point.shape))[0].flatten()

            jacobian = torch.autograd.functional.jacobian(flat, point.flatten())
            sign, logabs = torch.linalg.slogdet(jacobian)
            assert sign != 0
            assert abs(logabs.item() - expected.item()) <= 1e-4


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_forward_and_inverse_logabsdets_cancel(case: Case):
    transform = prepare(case)
    x, context = inputs(case), contexts(case)
    with torch.no_grad():
        z, logabsdet = run(transform, x, context)
        _, inverse_logabsdet = invert(transform, x, z, context)
    assert logabsdet.shape == inverse_logabsdet.shape == (x.shape[0],)
    assert torch.allclose(logabsdet + inverse_logabsdet, torch.zeros_like(logabsdet), atol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_batch_size_one_agrees_with_batch(case: Case):
    transform = prepare(case)
    x, context = inputs(case, batch_size=4), contexts(case, batch_size=4)
    single = None if context is None else context[2:3]
    with torch.no_grad():
        z, logabsdet = run(transform, x, context)
        z_single, logabsdet_single = run(transform, x[2:3], single)
        x_single, inverse_single = invert(transform, x[2:3], z_single, single)
    assert logabsdet_single.shape == inverse_single.shape == (1,)
    assert torch.allclose(z_single, z[2:3], atol=1e-6)
    assert torch.allclose(logabsdet_single, logabsdet[2:3], atol=1e-5)
    assert torch.allclose(x_single, x[2:3], atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_float64(case: Case):
    transform = prepare(case).double()
    x, context = inputs(case, dtype=torch.float64), contexts(case, dtype=torch.float64)
    with torch.no_grad():
        z, logabsdet = run(transform, x, context)
        x_back, inverse_logabsdet = invert(transform, x, z, context)
    assert z.dtype == logabsdet.dtype == x_back.dtype == torch.float64
    assert (x_back - x).abs().max() <= 1e-10
    assert (logabsdet + inverse_logabsdet).abs().max() <= 1e-9


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_extreme_inputs_give_finite_outputs(case: Case):
    transform = prepare(case)
    x = case.extreme((4, *case.event_shape), torch.Generator().manual_seed(2))
    context = None if case.context_features == 0 else 1e4 * contexts(case, batch_size=4)
    with torch.no_grad():
        z, logabsdet = run(transform, x, context)
        assert torch.isfinite(z).all() and torch.isfinite(logabsdet).all()
        latent = case.extreme_latent(tuple(z.shape), torch.Generator().manual_seed(3))
        x_back, inverse_logabsdet = invert(transform, x, latent, context)
        assert torch.isfinite(x_back).all() and torch.isfinite(inverse_logabsdet).all()


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_state_dict_save_load_round_trip(case: Case):
    transform = prepare(case, seed=0)
    fresh = prepare(case, seed=5)
    x = inputs(case)
    buffer = io.BytesIO()
    torch.save(transform.state_dict(), buffer)  # as flowlib.train checkpoints do: saved, then loaded weights-only
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    context = contexts(case)
    with torch.no_grad():
        z, logabsdet = run(transform, x, context)
        z_fresh, logabsdet_fresh = run(fresh, x, context)
        x_back, _ = invert(transform, x, z, context)
        x_back_fresh, _ = invert(fresh, x, z, context)
    assert torch.equal(z, z_fresh) and torch.equal(logabsdet, logabsdet_fresh)
    assert torch.equal(x_back, x_back_fresh)


@pytest.mark.parametrize("case", [c for c in CASES if c.bad_event_shape is not None], ids=lambda c: c.name)
def test_wrong_shape_raises_input_shape_error(case: Case):
    transform = prepare(case)
    bad = torch.randn(2, *case.bad_event_shape)
    with pytest.raises(InputShapeError, match="expects|needs"):
        run(transform, bad, contexts(case, batch_size=2))


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_batch_size_zero_gives_empty_outputs(case: Case):
    transform = prepare(case)
    x = inputs(case, batch_size=4)
    context = contexts(case, batch_size=4)
    with torch.no_grad():
        z, logabsdet = run(transform, x, context)
        empty = None if context is None else context[:0]
        z_empty, logabsdet_empty = run(transform, x[:0], empty)
        x_empty, inverse_empty = invert(transform, x[:0], z[:0], empty)
    assert z_empty.shape == (0, *z.shape[1:]) and x_empty.shape == (0, *x.shape[1:])
    assert logabsdet_empty.shape == inverse_empty.shape == (0,)


@pytest.mark.parametrize("case", [c for c in CASES if c.context_features], ids=lambda c: c.name)
def test_conditional_transforms_use_the_context_and_check_it(case: Case):
    transform = prepare(case)
    x, context = inputs(case), contexts(case)
    with torch.no_grad():
        z, logabsdet = run(transform, x, context)
        z_other, logabsdet_other = run(transform, x, contexts(case, seed=9))
    assert not torch.allclose(z, z_other) or not torch.allclose(logabsdet, logabsdet_other)
    with pytest.raises(ValueError, match="context"):
        transform(x)  # built with a context: leaving it out is refused
    with pytest.raises(ValueError, match="context"):
        run(transform, x, context[:, :-1])  # wrong number of context features


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_repr_shows_configuration(case: Case):
    transform = prepare(case)
    leaves = [m for m in transform.modules() if isinstance(m, Transform) and not isinstance(m, (Compose, Inverse))]
    assert leaves
    for leaf in leaves:
        assert leaf.extra_repr() != "", f"{type(leaf).__name__} has no extra_repr"
    assert type(transform).__name__ in repr(transform)


# ---------------------------------------------------------------------------------------------------------------
# Couplings and masks


def test_masks():
    assert checkerboard_mask(1, 2, 2).flatten().tolist() == [1.0, 0.0, 0.0, 1.0]
    assert torch.equal(checkerboard_mask(3, 4, 5, 0) + checkerboard_mask(3, 4, 5, 1), torch.ones(3, 4, 5))
    assert channel_mask(4, 2, 2)[:, 0, 0].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert torch.equal(channel_mask(5, 2, 2, 1), 1 - channel_mask(5, 2, 2, 0))
    assert half_mask(4).tolist() == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="at least 2"):
        channel_mask(1, 2, 2)
    with pytest.raises(ValueError, match="at least 2"):
        half_mask(1)


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: AdditiveCoupling(half_mask(4), MLP(4, 4, 8)), (4,)),
        (lambda: AffineCoupling(checkerboard_mask(2, 4, 4), ConvNet(2, 4, 8, 1)), (2, 4, 4)),
        (lambda: PIECoupling(channel_mask(4, 2, 2), ConvNet(4, 8, 8, 1), ConvNet(4, 8, 8, 1)), (4, 2, 2)),
        (lambda: RationalQuadraticCoupling(half_mask(4), MLP(4, 4 * 23, 8)), (4,)),
        (lambda: MaskedAutoregressive(4, hidden_features=8), (4,)),
    ],
    ids=["additive", "affine", "pie", "spline", "maf"],
)
def test_zero_initialised_couplings_start_as_identity(build, shape):
    layer = build()
    x = torch.randn(3, *shape)
    z, logabsdet = layer(x)
    assert torch.allclose(z, x, atol=1e-6) and torch.allclose(logabsdet, torch.zeros(3), atol=1e-6)


def test_coupling_keeps_masked_part_and_bounds_scales():
    mask = half_mask(4)
    layer = AffineCoupling(mask, MLP(4, 8, 8, zero_init_last=False), scale_bound=0.5)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.mul_(100.0)  # huge raw log-scales
    x = torch.randn(5, 4)
    z, logabsdet = layer(x)
    assert torch.equal(z[:, :2], x[:, :2])
    assert (logabsdet.abs() <= 2 * 0.5 + 1e-6).all()  # two transformed entries, |log s| < 0.5 each


def test_pie_coupling_transforms_both_parts():
    layer = PIECoupling(half_mask(4), MLP(4, 8, 8, zero_init_last=False), MLP(4, 8, 8, zero_init_last=False))
    x = torch.randn(5, 4)
    z, _ = layer(x)
    assert not torch.allclose(z[:, :2], x[:, :2]) and not torch.allclose(z[:, 2:], x[:, 2:])


def test_conditioner_with_wrong_output_size_is_reported():
    layer = AffineCoupling(half_mask(4), MLP(4, 4, 8))  # should output 8 = 2 x 4
    with pytest.raises(ValueError, match=r"\(3, 8\)"):
        layer(torch.randn(3, 4))


def test_coupling_wrong_channels_message_names_expected_shape():
    layer = AffineCoupling(checkerboard_mask(3, 4, 4), ConvNet(3, 6, 8, 1))
    with pytest.raises(InputShapeError, match=r"\(B, 3, 4, 4\).*\(2, 1, 4, 4\)"):
        layer(torch.randn(2, 1, 4, 4))


# ---------------------------------------------------------------------------------------------------------------
# Splines and autoregressive layers


def test_spline_is_monotonic_maps_the_interval_onto_itself_and_has_identity_tails():
    from flowlib.transforms import rational_quadratic_spline

    generator = torch.Generator().manual_seed(0)
    x = torch.linspace(-5, 5, 2001, dtype=torch.float64)
    raw = [3 * torch.randn(7, generator=generator, dtype=torch.float64).expand(len(x), -1) for _ in range(2)]
    derivatives = 3 * torch.randn(6, generator=generator, dtype=torch.float64).expand(len(x), -1)
    y, log_derivative = rational_quadratic_spline(x, *raw, derivatives, tail_bound=3.0)
    assert (y.diff() > 0).all()
    outside = x.abs() > 3
    assert torch.equal(y[outside], x[outside]) and (log_derivative[outside] == 0).all()
    edges, _ = rational_quadratic_spline(torch.tensor([-3.0, 3.0], dtype=torch.float64),
                                         *[r[:2] for r in raw], derivatives[:2], tail_bound=3.0)
    assert torch.allclose(edges, torch.tensor([-3.0, 3.0], dtype=torch.float64))
    points = x[x.abs() != 3].clone().requires_grad_()  # (the clamp at the two edges has a one-sided gradient)
    rows = [r[: len(points)] for r in (*raw, derivatives)]
    (slope,) = torch.autograd.grad(rational_quadratic_spline(points, *rows)[0].sum(), points)
    # element-wise, so the sum's gradient is dg/dx
    assert torch.allclose(slope.log(), log_derivative[x.abs() != 3], atol=1e-9)
    with pytest.raises(ValueError, match="K - 1 derivatives"):
        rational_quadratic_spline(x, raw[0], raw[1], derivatives[:, :3])


def test_spline_conditioner_with_wrong_output_size_is_reported():
    layer = RationalQuadraticCoupling(half_mask(4), MLP(4, 8, 8), num_bins=4)  # needs 4 x 11 = 44 outputs
    with pytest.raises(ValueError, match=r"\(3, 44\).*11 = 3 x 4 - 1"):
        layer(torch.randn(3, 4))
    with pytest.raises(ValueError, match="num_bins"):
        RationalQuadraticCoupling(half_mask(4), MLP(4, 8, 8), num_bins=1)


def test_maf_jacobian_is_triangular_and_sampling_direction_is_sequential():
    torch.manual_seed(0)
    layer = MaskedAutoregressive(5, hidden_features=12).double()
    with torch.no_grad():
        layer.made.output[-1].weight.normal_()
        layer.made.output[-1].bias.normal_()
    x = torch.randn(5, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v.view(1, 5))[0][0], x)
    assert torch.equal(jacobian.triu(1), torch.zeros(5, 5, dtype=torch.float64))  # u_i depends on x_<=i only
    assert (jacobian.diagonal() != 0).all()
    with pytest.raises(ValueError, match="at least num_features - 1"):
        MaskedAutoregressive(5, hidden_features=3)


def test_conditioners_without_context_refuse_one():
    with pytest.raises(ValueError, match="built without context"):
        AffineCoupling(half_mask(4), MLP(4, 8, 8))(torch.randn(2, 4), context=torch.randn(2, 3))


# ---------------------------------------------------------------------------------------------------------------
# Linear maps


def test_householder_is_orthogonal_and_lu_inverse_is_exact():
    householder = HouseholderLinear(6, num_reflections=4).double()
    weight = householder.matrix()
    assert torch.allclose(weight @ weight.T, torch.eye(6, dtype=torch.float64), atol=1e-12)
    conv = Invertible1x1Conv(5).double()
    with torch.no_grad():
        conv.log_scale.add_(0.5)
        conv.lower.add_(0.3)
        conv.upper.add_(-0.2)
    identity = conv.inverse_matrix() @ conv.matrix()
    assert torch.allclose(identity, torch.eye(5, dtype=torch.float64), atol=1e-10)
    _, logabsdet = conv(torch.randn(2, 5, 3, 4, dtype=torch.float64))
    assert torch.allclose(logabsdet, 12 * torch.linalg.slogdet(conv.matrix())[1].expand(2))


def test_householder_zero_vector_is_safe():
    layer = HouseholderLinear(3, num_reflections=1)
    with torch.no_grad():
        layer.vectors.zero_()
    z, _ = layer(torch.ones(2, 3))
    assert torch.isfinite(z).all()


def test_permutation_validation_and_seeding():
    with pytest.raises(ValueError, match="permutation"):
        Permutation(torch.tensor([0, 0, 1]))
    assert torch.equal(Permutation(10, seed=1).permutation, Permutation(10, seed=1).permutation)
    assert not torch.equal(Permutation(10, seed=1).permutation, Permutation(10, seed=2).permutation)


def test_actnorm_initialisation_and_train_eval_parity():
    torch.manual_seed(0)
    layer = ActNorm(3)
    x = 2.0 + 3.0 * torch.randn(32, 3, 4, 4)
    z, logabsdet = layer(x)  # training mode: initialises on this batch
    assert bool(layer.initialized)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    initial_state = {name: value.clone() for name, value in layer.state_dict().items()}
    other = 5.0 * torch.randn(8, 3, 4, 4) - 1.0
    z_train, logabsdet_train = layer(other)  # no re-initialisation on later batches
    assert all(torch.equal(value, initial_state[name]) for name, value in layer.state_dict().items())
    layer.eval()
    z_eval, logabsdet_eval = layer(other)
    assert torch.equal(z_train, z_eval) and torch.equal(logabsdet_train, logabsdet_eval)
    # a loaded checkpoint is never re-initialised
    loaded = ActNorm(3)
    loaded.load_state_dict(layer.state_dict())
    loaded.train()
    assert torch.equal(loaded(other)[0], z_eval)
    assert torch.equal(loaded.bias, layer.bias) and torch.equal(loaded.log_scale, layer.log_scale)


def test_actnorm_eval_before_init_is_identity_and_tiny_batch_is_refused():
    layer = ActNorm(2).eval()
    x = torch.randn(1, 2)
    assert torch.equal(layer(x)[0], x)
    with pytest.raises(ValueError, match="at least 2 values"):
        ActNorm(2).train()(x)


def test_actnorm_refuses_a_first_batch_with_nan_and_initialises_on_the_next():
    layer = ActNorm(2)
    x = torch.randn(16, 2)
    poisoned = x.clone()
    poisoned[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        layer(poisoned)
    assert not bool(layer.initialized)
    assert torch.isfinite(layer.bias).all() and torch.isfinite(layer.log_scale).all()
    z, logabsdet = layer(x)  # a clean batch initialises it
    assert bool(layer.initialized) and torch.isfinite(z).all() and torch.isfinite(logabsdet).all()


def _refuse_host_reads():
    """Make any ``bool(tensor)`` (a host synchronisation on a GPU) fail inside the block."""
    return mock.patch.object(torch.Tensor, "__bool__", side_effect=AssertionError("host read of a tensor"))


def test_actnorm_reads_its_initialized_buffer_only_until_it_is_initialised():
    layer = ActNorm(3)
    x = torch.randn(8, 3, 2, 2)
    layer(x)
    with _refuse_host_reads():
        layer(x)  # training mode, already initialised: no host read
    loaded = ActNorm(3)
    loaded.load_state_dict(layer.state_dict())
    loaded(x)  # reads the loaded buffer once...
    with _refuse_host_reads():
        z, _ = loaded(x)  # ...and never again
    assert torch.equal(z, layer(x)[0])
    fresh = ActNorm(3)
    fresh.load_state_dict(ActNorm(3).state_dict())  # an uninitialised checkpoint initialises on its first batch
    fresh(5.0 + x)
    assert bool(fresh.initialized) and not torch.equal(fresh.bias, torch.zeros(3))


# ---------------------------------------------------------------------------------------------------------------
# Reshapes


def test_squeeze_odd_size_error_names_size_and_factor():
    with pytest.raises(InputShapeError, match=r"factor=2.*divisible by 2.*5x4"):
        Squeeze(2)(torch.randn(1, 1, 5, 4))
    with pytest.raises(InputShapeError, match=r"factor=3.*divisible by 3.*6x4"):
        Squeeze(3, pattern="checkerboard")(torch.randn(1, 1, 6, 4))
    with pytest.raises(InputShapeError, match="divisible by 4"):
        Squeeze(2).inverse(torch.randn(1, 6, 2, 2))


def test_squeeze_patterns():
    x = torch.randn(2, 3, 4, 6)
    space_to_depth, _ = Squeeze(2)(x)
    assert torch.equal(space_to_depth, torch.nn.functional.pixel_unshuffle(x, 2))
    checkerboard, _ = Squeeze(2, pattern="checkerboard")(x)
    assert checkerboard.shape == space_to_depth.shape == (2, 12, 2, 3)
    assert not torch.equal(checkerboard, space_to_depth)
    assert torch.equal(checkerboard.flatten(1).sort().values, x.flatten(1).sort().values)  # a rearrangement
    # the first half of the channels holds exactly the checkerboard-mask pixels
    mask = checkerboard_mask(3, 4, 6)
    black = x[mask.bool().expand_as(x)].view(2, -1).sort().values
    assert torch.equal(checkerboard[:, :6].flatten(1).sort().values, black)
    masked, _ = Squeeze(2, pattern="checkerboard")(x * mask)
    assert torch.equal(masked[:, :6], checkerboard[:, :6]) and (masked[:, 6:] == 0).all()


@settings(max_examples=25, deadline=None)
@given(
    channels=st.integers(1, 3),
    blocks_high=st.integers(1, 3),
    blocks_wide=st.integers(1, 3),
    factor=st.integers(1, 3),
    pattern=st.sampled_from(["space_to_depth", "checkerboard"]),
)
def test_squeeze_round_trip_property(channels, blocks_high, blocks_wide, factor, pattern):
    layer = Squeeze(factor, pattern=pattern)
    x = torch.randn(2, channels, blocks_high * factor, blocks_wide * factor)
    z, _ = layer(x)
    assert z.shape == (2, channels * factor**2, blocks_high, blocks_wide)
    assert torch.equal(layer.inverse(z)[0], x)


def test_reshape_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="cannot reshape"):
        Reshape((2, 3), (5,))
    with pytest.raises(InputShapeError, match=r"\(B, 4\)"):
        Reshape((2, 2), (4,)).inverse(torch.randn(3, 5))


# ---------------------------------------------------------------------------------------------------------------
# Logit


def test_logit_edges_and_domain():
    layer = Logit(alpha=0.05)
    x = torch.tensor([[0.0, 1.0, 0.5]])
    y, logabsdet = layer(x)
    assert torch.isfinite(y).all() and torch.isfinite(logabsdet).all()
    expected = math.log(0.9) * 3 - 2 * math.log(0.05) - 2 * math.log(0.95) - 2 * math.log(0.5)
    assert abs(float(logabsdet) - expected) < 1e-5
    with pytest.raises(InputOutsideDomainError, match=r"\[0, 1\]"):
        layer(torch.tensor([[1.5]]))
    with pytest.raises(ValueError, match="alpha"):
        Logit(alpha=0.5)


def test_logit_domain_check_catches_nan():
    layer = Logit(alpha=0.05)
    with pytest.raises(InputOutsideDomainError, match="NaN"):
        layer(torch.tensor([[0.5, float("nan")]]))
    with pytest.raises(InputOutsideDomainError):
        layer(torch.tensor([[-0.1, 0.5]]))


def test_logit_domain_check_can_be_switched_off():
    x = torch.tensor([[0.25, 0.75]])
    with _refuse_host_reads():
        y, _ = Logit(alpha=0.05, check_domain=False)(x)  # no host read in the forward pass
    assert torch.equal(y, Logit(alpha=0.05)(x)[0])
    y, logabsdet = Logit(alpha=0.05, check_domain=False)(torch.tensor([[float("nan"), 2.0]]))
    assert not torch.isfinite(logabsdet).any()  # unchecked: NaN goes through, to be caught as a non-finite loss
    assert "check_domain=False" in repr(Logit(check_domain=False))


# ---------------------------------------------------------------------------------------------------------------
# Split (factor-out)


def _randomised_split(**kwargs) -> Split:
    torch.manual_seed(0)
    layer = Split(**kwargs)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return layer


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(num_kept=2, num_features=5), (5,)),
        (dict(num_kept=2, kernel_size=3), (4, 3, 3)),
        (dict(num_kept=1, prior="standard"), (2, 2, 2)),
    ],
    ids=["vector_uneven", "image_conv", "standard"],
)
def test_split_term_is_the_conditional_gaussian_log_prob(kwargs, shape):
    layer = _randomised_split(**kwargs)
    x = torch.randn(6, *shape)
    z, term = layer(x)
    num_kept = kwargs["num_kept"]
    assert torch.equal(z, x[:, :num_kept])
    mean, log_scale = layer.conditional(z)
    r = x[:, num_kept:]
    expected = torch.distributions.Normal(mean.expand_as(r), log_scale.exp().expand_as(r)).log_prob(r)
    assert torch.allclose(term, expected.flatten(1).sum(1), atol=1e-5)
    if kwargs.get("prior") != "standard":
        assert mean.abs().max() > 0  # the randomised network really conditions on z


def test_split_starts_as_standard_normal_and_temperature_zero_returns_the_mean():
    layer = Split(2, num_features=3)
    x = torch.randn(4, 3)
    _, term = layer(x)
    assert torch.allclose(term, torch.distributions.Normal(0.0, 1.0).log_prob(x[:, 2:]).sum(1))
    layer = _randomised_split(num_kept=2, num_features=3)
    layer.temperature = 0.0
    z = torch.randn(4, 2)
    x_back, _ = layer.inverse(z)
    assert torch.equal(x_back[:, :2], z) and torch.allclose(x_back[:, 2:], layer.conditional(z)[0])


def test_split_sampling_temperature():
    torch.manual_seed(0)
    layer = Split(1, num_features=2, prior="standard", temperature=0.5)
    x, _ = layer.inverse(torch.zeros(20000, 1))
    assert abs(float(x[:, 1].std()) - 0.5) < 0.02


def test_split_uneven_without_num_features_is_refused():
    with pytest.raises(InputShapeError, match="num_features"):
        Split(2)(torch.randn(3, 5))
    with pytest.raises(ValueError, match="num_kept"):
        Split(4, num_features=4)


def test_split_subclass_overriding_conditional_builds_no_network():
    class EpsilonSplit(Split):  # the PIE pattern: N(r | g(z), eps^2 I), decode with r = g(z)
        def __init__(self):
            super().__init__(2, num_features=3, temperature=0.0)
            self.g = nn.Linear(2, 1)

        def conditional(self, z):
            return self.g(z), z.new_tensor(math.log(0.1))

    layer = EpsilonSplit()
    assert layer.prior_net is None
    z = torch.randn(3, 2)
    x, minus_term = layer.inverse(z)
    assert torch.allclose(x[:, 2:], layer.g(z))
    _, term = layer(x)
    assert torch.allclose(term, -minus_term)
    assert "EpsilonSplit.conditional" in repr(layer)


def test_split_with_custom_prior_network():
    layer = Split(2, prior=ConvNet(2, 4, 8, 1, zero_init_last=False))
    x = torch.randn(3, 4, 4, 4)
    z, term = layer(x)
    x_back, minus_term = layer.inverse(z, r=x[:, 2:])
    assert torch.equal(x_back, x) and torch.allclose(term + minus_term, torch.zeros(3), atol=1e-5)
    with pytest.raises(ValueError, match="prior must be"):
        Split(2, prior="laplace")
