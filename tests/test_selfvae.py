"""Tests of the selfVAE chapter's models (flowlib/models/selfvae.py): the transformations d(x), the priors, the
likelihood, the bound of Eq. 2 and its K-level form, the importance-weighted bound and the Fig. 3 operations."""

from __future__ import annotations

import math

import pytest
import torch

from flowlib.models.selfvae import (
    FIG3_OPERATIONS,
    Downscale,
    GaussianMixture,
    SelfVAE,
    Sketch,
    latent_prior,
    latent_realnvp,
    logistic_mixture,
    selfvae,
    vae,
)
from flowlib.models.vae import gaussian_kl

TINY = dict(latent_channels=2, width=8, growth_rate=4, num_layers=1, num_components=3, prior_couplings=2,
            prior_hidden_channels=8)

MODELS = {
    "vae_normal": lambda: vae((1, 28, 28), "normal", **TINY),
    "vae_mog": lambda: vae((1, 28, 28), "mog", **TINY),
    "vae_realnvp": lambda: vae((1, 28, 28), "realnvp", **TINY),
    "downscale": lambda: selfvae((1, 28, 28), "downscale", **TINY),
    "sketch": lambda: selfvae((1, 28, 28), "sketch", **TINY),
    "downscale_3level": lambda: selfvae((1, 28, 28), "downscale", num_levels=2, **TINY),
}


def _images(batch: int = 4, seed: int = 0, shape: tuple[int, ...] = (1, 28, 28)) -> torch.Tensor:
    """Digit-like integer images: mostly 0 with bright blobs (a little structure for the transforms)."""
    generator = torch.Generator().manual_seed(seed)
    blobs = torch.rand(batch, *shape, generator=generator) > 0.8
    values = torch.randint(100, 256, (batch, *shape), generator=generator)
    return torch.where(blobs, values, torch.zeros_like(values)).to(torch.uint8)


# --- the transformations d(x) ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transform", [Downscale(2), Sketch(), Sketch(invert=True), Sketch(kernel_size=9, sigma=2.0)])
def test_transforms_are_deterministic_and_discrete(transform) -> None:
    x = _images(6)
    first, second = transform(x), transform(x.long())  # same result from uint8 and int64 input
    assert first.dtype == torch.int64 and torch.equal(first, second)
    assert int(first.min()) >= 0 and int(first.max()) <= 255
    assert tuple(first.shape[1:]) == transform.output_shape(x.shape[1:])


def test_downscale_is_the_rounded_block_mean() -> None:
    x = _images(3).long()
    expected = torch.floor(torch.nn.functional.avg_pool2d(x.double(), 2) + 0.5).long()
    assert torch.equal(Downscale(2)(x), expected)
    assert torch.equal(Downscale(2)(torch.full((1, 1, 4, 4), 7)), torch.full((1, 1, 2, 2), 7))


def test_sketch_keeps_edges_and_whitens_flat_regions() -> None:
    x = torch.zeros(1, 1, 20, 20, dtype=torch.long)
    x[..., 4:16, 4:16] = 200  # a bright square on black
    plain, inverted = Sketch()(x), Sketch(invert=True)(x)
    assert int(plain[0, 0, 0, 0]) == 0 and int(plain[0, 0, 10, 10]) == 255  # 0/0 -> 0; flat bright -> white
    assert int(inverted[0, 0, 0, 0]) == 0 and int(inverted[0, 0, 10, 10]) == 0  # flat regions: dark (negative)
    assert int(inverted[0, 0, 4, 10]) > 100  # the square's edge survives


def test_transforms_reject_bad_input() -> None:
    with pytest.raises(TypeError, match="integer pixels"):
        Downscale(2)(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="divisible by 2"):
        Downscale(2)(torch.zeros(1, 1, 5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="odd"):
        Sketch(kernel_size=4)
    with pytest.raises(ValueError, match="cannot be applied repeatedly"):
        selfvae((1, 28, 28), "sketch", num_levels=2, **TINY)


# --- likelihood and priors -----------------------------------------------------------------------------------------


def test_logistic_mixture_is_normalised_over_the_pixel_values() -> None:
    torch.manual_seed(0)
    mixture = logistic_mixture(torch.randn(1, 3 * 2 * 4, 1, 1), num_channels=2, num_components=4)
    values = torch.arange(256).view(256, 1, 1, 1).expand(256, 2, 1, 1)
    expanded = logistic_mixture(torch.randn(1, 24, 1, 1).expand(256, 24, 1, 1), 2, 4)
    assert torch.allclose(expanded.log_prob(values).exp().sum(0), torch.ones(2, 1, 1), atol=1e-5)
    with pytest.raises(ValueError, match="parameter channels"):
        logistic_mixture(torch.zeros(1, 5, 1, 1), 1, 2)
    assert mixture.log_prob(torch.zeros(1, 2, 1, 1, dtype=torch.long)).shape == (1, 2, 1, 1)


def test_gaussian_mixture_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    prior = GaussianMixture((2, 3), num_components=4)
    with torch.no_grad():
        prior.log_scales.normal_(0, 0.3)
    u = torch.randn(5, 2, 3)
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=torch.zeros(4)),
        torch.distributions.Independent(torch.distributions.Normal(prior.means, prior.log_scales.exp()), 1),
    ).log_prob(u.view(5, 6))
    assert torch.allclose(prior.log_prob(u), reference, atol=1e-5)
    assert prior.sample(7).shape == (7, 2, 3)


def test_every_prior_starts_near_the_standard_normal() -> None:
    torch.manual_seed(0)
    u = torch.randn(6, 2, 7, 7)
    normal = latent_prior("normal", (2, 7, 7)).log_prob(u)
    assert torch.allclose(latent_realnvp((2, 7, 7), num_couplings=4, hidden_channels=8).log_prob(u), normal)
    assert (latent_prior("mog", (2, 7, 7)).log_prob(u) - normal).abs().max() < 15.0  # means at 0.1 N(0, I)
    with pytest.raises(ValueError, match="unknown prior"):
        latent_prior("vamp", (2, 7, 7))


def test_gaussian_kl_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    mean, log_variance, prior_mean, prior_log_variance = torch.randn(3, 4, 5).unbind(1)
    q = torch.distributions.Normal(mean, (0.5 * log_variance).exp())
    p = torch.distributions.Normal(prior_mean, (0.5 * prior_log_variance).exp())
    reference = torch.distributions.kl_divergence(q, p).sum(1)
    assert torch.allclose(gaussian_kl(mean, log_variance, prior_mean, prior_log_variance), reference, atol=1e-5)
    standard = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(gaussian_kl(mean, log_variance), standard, atol=1e-5)


# --- the bound -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_elbo_terms_are_finite_with_the_right_signs(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name]()
    x = _images(4)
    terms = model.elbo_terms(x)
    expected = {f"RE_{data}" for data in model.data_names} | {f"KL_{latent}" for latent in model.latent_names}
    assert set(terms) == expected
    for term, value in terms.items():
        assert value.shape == (4,) and torch.isfinite(value).all(), term
        if term.startswith("RE"):
            assert (value <= 0).all(), term  # log-probabilities of discrete data
        elif term != f"KL_{model.latent_names[0]}":
            assert (value >= 0).all(), term  # Gaussian KL divergences, exact
    # the top KL is a single-sample estimate (non-Gaussian priors): non-negative on average
    repeated = x.repeat(32, 1, 1, 1)
    assert model.elbo_terms(repeated)[f"KL_{model.latent_names[0]}"].mean() >= 0
    loss = model.loss(x)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_elbo_is_the_sum_of_its_terms_and_loss_is_bits_per_dim() -> None:
    model = MODELS["downscale_3level"]()
    x = _images(3)
    torch.manual_seed(1)
    terms = model.elbo_terms(x)
    torch.manual_seed(1)
    elbo = model.elbo(x)
    by_hand = sum(v for k, v in terms.items() if k.startswith("RE")) - sum(v for k, v in terms.items()
                                                                            if k.startswith("KL"))
    assert torch.allclose(elbo, by_hand)
    torch.manual_seed(1)
    assert model.loss(x).item() == pytest.approx((-elbo.mean() / (784 * math.log(2))).item(), rel=1e-5)


@pytest.mark.parametrize("name", ["vae_realnvp", "downscale", "downscale_3level"])
def test_importance_weighted_bound_is_above_the_elbo_on_average(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    x = _images(4)
    with torch.no_grad():
        elbo = model.elbo(x.repeat(64, 1, 1, 1)).view(64, 4).mean(0)
        single = model.log_likelihood(x.repeat(64, 1, 1, 1), num_samples=1).view(64, 4).mean(0)
        iw = model.log_likelihood(x, num_samples=64, chunk_size=16)
    assert iw.shape == (4,) and torch.isfinite(iw).all()
    assert (iw >= elbo).all()
    # with one sample the importance weight is an unbiased estimate of the ELBO (MC instead of analytic KL_z)
    assert torch.allclose(single, elbo, rtol=0.02)


def test_a_vae_is_a_selfvae_without_transformations() -> None:
    model = vae((1, 28, 28), "normal", **TINY)
    assert model.data_names == ["x"] and model.latent_names == ["z"] and len(model.levels) == 0
    one, three = MODELS["downscale"](), MODELS["downscale_3level"]()
    assert (one.data_names, one.latent_names) == (["y", "x"], ["u", "z"])
    assert [shape[1] for shape in three.data_shapes] == [7, 14, 28]


def test_model_rejects_bad_images() -> None:
    model = MODELS["downscale"]()
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        model.elbo_terms(torch.zeros(2, 1, 32, 32, dtype=torch.long))
    with pytest.raises(TypeError, match="integer pixels"):
        model.elbo_terms(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="power of 2"):
        selfvae((1, 28, 28), "downscale", latent_size=6, **{k: v for k, v in TINY.items()})


# --- Fig. 3 operations -----------------------------------------------------------------------------------------------


def test_fig3_operations_return_images_and_bits() -> None:
    torch.manual_seed(0)
    model = MODELS["downscale"]().eval()
    x = _images(3)
    for name, operation in FIG3_OPERATIONS.items():
        images, bits = model.operation(x, **operation)
        assert images.shape == x.shape and images.dtype == torch.int64, name
        assert bits.shape == (3,) and torch.isfinite(bits).all(), name
        if not operation["infer"] and not operation["observe"]:
            assert (bits == 0).all()  # generation sends nothing
    observed = model.operation(x, infer=("u",), observe=("y",))[0]
    assert model.sample(2).shape == (2, 1, 28, 28)
    assert model.top_down(2, mode="mean")[0].is_floating_point()
    assert observed.shape == x.shape
    with pytest.raises(ValueError, match="unknown names"):
        model.operation(x, infer=("w",))
    with pytest.raises(ValueError, match="needs the images"):
        model.top_down(2, infer=("u",))


def test_bits_of_the_operations_match_the_bound() -> None:
    """Sending everything (x observed, every latent inferred) costs -ELBO in bits, and conditional reconstruction
    costs that minus the RE_x term, in expectation over the posterior draws."""
    torch.manual_seed(0)
    model = MODELS["downscale"]().eval()
    x = _images(2).repeat(200, 1, 1, 1)
    with torch.no_grad():
        terms = model.elbo_terms(x)
        _, lossless = model.operation(x, infer=("u", "z"), observe=("y", "x"))
        _, conditional = model.operation(x, **FIG3_OPERATIONS["conditional reconstruction"])
    to_bits = 1 / math.log(2)
    negative_elbo = -(terms["RE_x"] + terms["RE_y"] - terms["KL_z"] - terms["KL_u"]) * to_bits
    assert lossless.mean().item() == pytest.approx(negative_elbo.mean().item(), rel=0.01)
    expected = negative_elbo + terms["RE_x"] * to_bits
    assert conditional.mean().item() == pytest.approx(expected.mean().item(), rel=0.02)


def test_state_dict_round_trip_gives_the_same_bound() -> None:
    first, second = MODELS["sketch"](), MODELS["sketch"]()
    second.load_state_dict(first.state_dict())
    x = _images(2)
    torch.manual_seed(3)
    a = first.elbo(x)
    torch.manual_seed(3)
    assert torch.equal(a, second.elbo(x))
    assert isinstance(first, SelfVAE)


# --- recipes and the book's existing VAE ---------------------------------------------------------------------------


def test_recipes_cover_every_model_dataset_and_seed() -> None:
    from flowlib.recipes import chapter_recipes
    from flowlib.recipes.selfvae import MODELS as RECIPE_MODELS
    from flowlib.scale import sizes

    S = sizes("06_selfvae", "quick")
    recipes = chapter_recipes("06_selfvae", scale="quick", device="cpu")
    assert len(recipes) == len(RECIPE_MODELS) * len(S.datasets) * S.num_seeds
    recipe = recipes["downscale_3level-mnist"]
    assert recipe.checkpoint_name("standard") == "06_selfvae-downscale_3level-mnist-standard"
    model = recipe.build()
    assert isinstance(model, SelfVAE) and model.latent_names == ["u", "z1", "z2"]
    assert recipes["sketch-fashion_mnist"].build().transforms[0].invert  # light strokes on black


def test_the_chapter_3_vae_is_unchanged() -> None:
    """vae.VAE now uses gaussian_kl and reparameterize: same state dict, same closed-form KL as before."""
    from flowlib.models.vae import VAE
    from flowlib.checkpoints import clone_checkpoint_dir, load_checkpoint

    model = VAE(1, 28, latent_dim=10, base_channels=32)
    directory = clone_checkpoint_dir()  # no download: the committed file of a clone, if there is one
    if directory is not None and (directory / "03_pie-vae-standard.pt").exists():
        load_checkpoint(model, "03_pie-vae-standard", directory=directory)
    model.eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        mean, log_variance = model.posterior(x)
        _, kl = model.loss_terms(x)
    assert torch.equal(kl, 0.5 * (mean.pow(2) + log_variance.exp() - log_variance - 1.0).sum(1))
