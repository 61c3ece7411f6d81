"""Tests of the sample-quality metrics in flowlib.metrics: Fréchet distance, proxy FID and NAC."""

from __future__ import annotations

import math

import pytest
import torch

from flowlib import data
from flowlib.metrics import (
    ProxyFIDClassifier,
    frechet_distance,
    frechet_distance_gaussians,
    gaussian_statistics,
    load_proxy_fid_classifier,
    normalized_absolute_covariance,
    proxy_fid,
    proxy_fid_features,
)
from flowlib.train import checkpoint_metadata

HAS_DATA = all((data.data_root() / folder / "raw" / "t10k-images-idx3-ubyte").exists()
               for folder in ("MNIST", "FashionMNIST"))
needs_data = pytest.mark.skipif(not HAS_DATA, reason="MNIST / Fashion-MNIST not found under FLOWLIB_DATA_DIR")


def _random_covariance(d: int, generator: torch.Generator) -> torch.Tensor:
    factor = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return factor @ factor.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


# --- Fréchet distance --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 5, 64])
def test_frechet_distance_of_identical_sets_is_zero(d: int) -> None:
    features = torch.randn(2_000, d, generator=torch.Generator().manual_seed(d)) * 3 + 1
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)
    shuffled = features[torch.randperm(len(features), generator=torch.Generator().manual_seed(1))]
    assert frechet_distance(features, shuffled) == pytest.approx(0.0, abs=1e-8)  # a set, not a sequence


def test_frechet_distance_matches_the_commuting_closed_form() -> None:
    # Diagonal covariances commute: d^2 = ||mu_a - mu_b||^2 + sum_i (sigma_a,i - sigma_b,i)^2.
    mean_a, mean_b = torch.tensor([0.0, 1.0, -2.0]).double(), torch.tensor([1.0, 1.0, 0.5]).double()
    std_a, std_b = torch.tensor([1.0, 2.0, 0.5]).double(), torch.tensor([3.0, 0.1, 0.5]).double()
    expected = (mean_a - mean_b).square().sum() + (std_a - std_b).square().sum()
    value = frechet_distance_gaussians(mean_a, torch.diag(std_a**2), mean_b, torch.diag(std_b**2))
    assert value == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_frechet_distance_matches_the_two_dimensional_closed_form(seed: int) -> None:
    # For 2x2 PSD A, B (not commuting): Tr sqrt(A^1/2 B A^1/2) = sqrt(Tr(AB) + 2 sqrt(det A det B)), because the
    # eigenvalues l1, l2 of A^1/2 B A^1/2 satisfy (sqrt l1 + sqrt l2)^2 = l1 + l2 + 2 sqrt(l1 l2).
    generator = torch.Generator().manual_seed(seed)
    a, b = _random_covariance(2, generator), _random_covariance(2, generator)
    mean_a, mean_b = (torch.randn(2, generator=generator, dtype=torch.float64) for _ in range(2))
    trace_of_root = torch.sqrt(torch.trace(a @ b) + 2 * torch.sqrt(torch.det(a) * torch.det(b)))
    expected = (mean_a - mean_b).square().sum() + a.trace() + b.trace() - 2 * trace_of_root
    assert frechet_distance_gaussians(mean_a, a, mean_b, b) == pytest.approx(expected.item(), rel=1e-10)


def test_frechet_distance_is_symmetric_and_matches_a_general_matrix_square_root() -> None:
    scipy_linalg = pytest.importorskip("scipy.linalg")
    generator = torch.Generator().manual_seed(3)
    a, b = _random_covariance(20, generator), _random_covariance(20, generator)
    mean_a, mean_b = (torch.randn(20, generator=generator, dtype=torch.float64) for _ in range(2))
    root = scipy_linalg.sqrtm((a @ b).numpy()).real
    expected = (mean_a - mean_b).square().sum().item() + (a.trace() + b.trace()).item() - 2 * root.trace()
    forward = frechet_distance_gaussians(mean_a, a, mean_b, b)
    assert forward == pytest.approx(expected, rel=1e-8)
    assert frechet_distance_gaussians(mean_b, b, mean_a, a) == pytest.approx(forward, rel=1e-10)


def test_frechet_distance_of_samples_converges_to_the_gaussian_value() -> None:
    generator = torch.Generator().manual_seed(0)
    covariance_b = torch.tensor([[2.0, 0.8], [0.8, 1.0]])
    samples_a = torch.randn(200_000, 2, generator=generator)
    samples_b = torch.randn(200_000, 2, generator=generator) @ torch.linalg.cholesky(covariance_b).T + 1.0
    exact = frechet_distance_gaussians(torch.zeros(2), torch.eye(2), torch.ones(2), covariance_b)
    assert frechet_distance(samples_a, samples_b) == pytest.approx(exact, rel=0.02)


def test_frechet_distance_of_a_singular_covariance_is_finite() -> None:
    # Features on a line (rank-1 covariance): eigenvalues that round-off makes negative must not produce NaN.
    t = torch.randn(1_000, 1, generator=torch.Generator().manual_seed(0))
    on_a_line = torch.cat([t, 2 * t, -t], dim=1)
    value = frechet_distance(on_a_line, torch.randn(1_000, 3, generator=torch.Generator().manual_seed(1)))
    assert math.isfinite(value) and value > 0


def test_frechet_distance_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="same d"):
        frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(torch.randn(1, 3), torch.randn(10, 3))
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance_gaussians(torch.zeros(2), torch.eye(3), torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        gaussian_statistics(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))


# --- NAC ---------------------------------------------------------------------------------------------------------


def test_nac_of_independent_and_of_dependent_codes() -> None:
    generator = torch.Generator().manual_seed(0)
    independent = torch.randn(20_000, 8, generator=generator)
    assert normalized_absolute_covariance(independent) < 0.02  # sampling noise only: about sqrt(2 / (pi N))
    t = torch.randn(1_000, 1, generator=generator)
    assert normalized_absolute_covariance(torch.cat([t, -3 * t, 0.5 * t], 1)) == pytest.approx(1.0)


def test_nac_is_scale_invariant_and_selects_dims() -> None:
    generator = torch.Generator().manual_seed(1)
    codes = torch.randn(500, 4, generator=generator) @ torch.randn(4, 4, generator=generator)
    nac = normalized_absolute_covariance(codes)
    assert normalized_absolute_covariance(codes * torch.tensor([10.0, 0.1, 3.0, 1.0])) == pytest.approx(nac)
    # A dead (constant) dimension is left out with dims=, which equals computing NAC without it.
    with_dead = torch.cat([codes, torch.zeros(500, 1)], dim=1)
    assert normalized_absolute_covariance(with_dead, dims=[0, 1, 2, 3]) == pytest.approx(nac)
    with pytest.raises(ValueError, match="zero variance"):
        normalized_absolute_covariance(with_dead)
    with pytest.raises(ValueError, match="two latent dimensions"):
        normalized_absolute_covariance(codes, dims=[2])


# --- proxy FID ---------------------------------------------------------------------------------------------------


def test_proxy_classifier_shapes_and_batch_independence() -> None:
    torch.manual_seed(0)
    net = ProxyFIDClassifier().eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(net.features(x)[:1], net.features(x[:1]), atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        net.features(torch.rand(2, 3, 32, 32))


@needs_data
@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_committed_proxy_classifier_is_accurate(dataset: str) -> None:
    assert checkpoint_metadata(f"proxy_fid-{dataset}")["test_accuracy"] > 0.85
    images, labels = data.load_images(dataset, "test", subset=1_000, seed=1, form="unit")
    with torch.no_grad():
        accuracy = (load_proxy_fid_classifier(dataset)(images).argmax(1) == labels).float().mean().item()
    assert accuracy > (0.97 if dataset == "mnist" else 0.85)


@needs_data
def test_proxy_fid_orders_real_blurred_and_noise_images() -> None:
    test = data.load_images("mnist", "test", subset=2_000, seed=0)[0]
    train = data.load_images("mnist", "train", subset=2_000, seed=0)[0]
    blurred = torch.nn.functional.avg_pool2d(test.float() / 255, 3, stride=1, padding=1)
    noise = torch.rand(2_000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    real = proxy_fid(train, test, "mnist")
    assert proxy_fid(test, test, "mnist") == pytest.approx(0.0, abs=1e-6)
    assert real < proxy_fid(blurred, test, "mnist") < proxy_fid(noise, test, "mnist")
    # the accepted layouts give the same features
    flat = proxy_fid_features(test[:10].reshape(10, 784), "mnist")
    assert torch.allclose(flat, proxy_fid_features(test[:10].float() / 255, "mnist"), atol=1e-5)


def test_proxy_fid_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="mnist, fashion_mnist"):
        proxy_fid(torch.rand(4, 784), torch.rand(4, 784), "cifar10")
    if HAS_DATA:
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            proxy_fid_features(torch.rand(4, 784) * 255, "mnist")
        with pytest.raises(ValueError, match="28x28"):
            proxy_fid_features(torch.rand(4, 3, 32, 32), "mnist")
