"""Tests of the foundation modules: scale, data, train (fit loop, checkpoints), metrics and plot."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

matplotlib.use("Agg")

from flowlib import data, metrics, plot, scale, train  # noqa: E402

HAS_DATA = (data.data_root() / "MNIST" / "raw" / "t10k-images-idx3-ubyte").exists()
needs_data = pytest.mark.skipif(not HAS_DATA, reason="MNIST not found under FLOWLIB_DATA_DIR")


# --- scale ------------------------------------------------------------------------------------------------------


def test_scale_from_environment(monkeypatch):
    monkeypatch.setenv("FLOWLIB_SCALE", "Quick")
    assert scale.current_scale() == "quick"
    monkeypatch.delenv("FLOWLIB_SCALE")
    assert scale.current_scale() == ("gpu" if torch.cuda.is_available() else "standard")
    monkeypatch.setenv("FLOWLIB_SCALE", "huge")
    with pytest.raises(ValueError, match="FLOWLIB_SCALE"):
        scale.current_scale()


def test_every_chapter_defines_every_scale_with_the_same_keys():
    for chapter, by_scale in scale.SIZES.items():
        assert set(by_scale) == set(scale.SCALES), chapter
        keys = [set(values) for values in by_scale.values()]
        assert all(k == keys[0] for k in keys), f"{chapter}: scales define different keys"


def test_sizes_lookup(monkeypatch):
    monkeypatch.setenv("FLOWLIB_SCALE", "quick")
    sizes = scale.sizes("00_change_of_variables")
    assert sizes.scale == "quick" and sizes.fit_steps == scale.SIZES["00_change_of_variables"]["quick"]["fit_steps"]
    with pytest.raises(KeyError, match="known chapters"):
        scale.sizes("no_such_chapter")
    assert "scale: quick" in scale.describe_run("cpu")


# --- data -------------------------------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_load_images_shapes_and_subset(name):
    images, labels = data.load_images(name, "test", subset=50, seed=3)
    assert images.shape == (50, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (50,) and labels.dtype == torch.int64 and 0 <= labels.min() <= labels.max() <= 9
    again, _ = data.load_images(name, "test", subset=50, seed=3)
    assert torch.equal(images, again)  # reproducible subsets
    full, _ = data.load_images(name, "test")
    assert full.shape[0] == 10_000
    unit, _ = data.load_images(name, "test", subset=50, seed=3, form="unit")
    assert torch.allclose(unit, images.float() / 255)
    dequantized, _ = data.load_images(name, "test", subset=50, seed=3, form="dequantized")
    assert torch.equal((dequantized * 256).floor().to(torch.uint8), images)


@needs_data
def test_image_loader_forms():
    loader = data.image_loader("mnist", "test", batch_size=16, subset=32, form="dequantized", shuffle=False)
    first, second = next(iter(loader))[0], next(iter(loader))[0]
    assert first.dtype == torch.float32 and 0.0 <= first.min() and first.max() < 1.0
    assert not torch.equal(first, second)  # fresh dequantization noise each time
    assert torch.equal((first * 256).floor(), (second * 256).floor())  # ... around the same integers
    unit = next(iter(data.image_loader("mnist", "test", 16, subset=32, form="unit", shuffle=False)))[0]
    raw = next(iter(data.image_loader("mnist", "test", 16, subset=32, form="uint8", shuffle=False)))[0]
    assert raw.dtype == torch.uint8 and torch.allclose(unit, raw.float() / 255)
    with pytest.raises(ValueError, match="form"):
        data.image_loader("mnist", "test", form="bytes")


def test_missing_data_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWLIB_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("urllib.request.urlopen", _refuse)  # stay offline even where a network exists
    with pytest.raises(data.DataNotFoundError, match="FLOWLIB_DATA_DIR"):
        data.load_images("fashion_mnist", "test")


def _refuse(*args, **kwargs):
    raise OSError("network disabled in tests")


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="mnist"):
        data.load_images("imagenet")
    with pytest.raises(ValueError, match="split"):
        data.load_images("mnist", "validation")


def test_dequantize_maps_bins_into_unit_interval(monkeypatch):
    x = torch.tensor([[0, 1, 255]], dtype=torch.uint8)
    y = data.dequantize(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal((y * 256).floor().to(torch.uint8), x)
    # The largest float32 below 1 makes 255 + u round up to 256 in float32: the value must stay in its bin.
    monkeypatch.setattr(torch, "rand", lambda shape, **kwargs: torch.full(shape, 1.0 - 2**-24))
    y = data.dequantize(x)
    assert torch.equal((y * 256).floor().to(torch.uint8), x) and y.max() < 1.0


@pytest.mark.parametrize("name", data.TOY_DENSITIES)
def test_toy_densities(name):
    points = data.toy_2d(name, 500, seed=1)
    assert points.shape == (500, 2) and torch.isfinite(points).all()
    assert points.abs().max() < 6.0 and points.std(0).min() > 0.3
    assert torch.equal(points, data.toy_2d(name, 500, seed=1))


def test_checkerboard_fills_alternate_squares():
    points = data.toy_2d("checkerboard", 4000)
    cells = torch.floor(points / 2).long()
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all() or ((cells[:, 0] + cells[:, 1]) % 2 == 1).all()


def test_digits_8x8():
    images, labels = data.digits_8x8()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.uint8 and images.max() == 255
    assert labels.shape == (1797,)


# --- metrics ----------------------------------------------------------------------------------------------------


def test_bits_per_dim_by_hand():
    # A density of 2.0 on [0,1)^D (log p = D log 2 nats): each 1/256 bin has mass 2/256 = 2^-7, i.e. 7 bits/dim.
    num_dims = 784
    log_prob = torch.tensor([num_dims * math.log(2.0)])
    assert metrics.bits_per_dim(log_prob, num_dims).item() == pytest.approx(7.0)
    # The same model evaluated on data in [0, 256): density 2/256 per unit, bin width 1.
    log_prob_256 = torch.tensor([num_dims * math.log(2.0 / 256)])
    assert metrics.bits_per_dim(log_prob_256, num_dims, bin_width=1.0).item() == pytest.approx(7.0)
    # A discrete model with P(x) = 2^-1000 over 100 dims: 10 bits/dim.
    assert metrics.bits_per_dim(torch.tensor([-1000 * math.log(2)]), 100, bin_width=1).item() == pytest.approx(10)
    with pytest.raises(ValueError):
        metrics.bits_per_dim(log_prob, 0)


# --- train ------------------------------------------------------------------------------------------------------


def _regression_problem():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(256, 3, generator=generator)
    targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    batches = list(zip(inputs.split(32), targets.split(32)))
    return batches


def _mse(model, batch):
    inputs, targets = batch
    return ((model(inputs) - targets) ** 2).mean()


def test_fit_reduces_loss_and_records_history():
    train.seed_everything(0)
    model = nn.Linear(3, 1)
    history = train.fit(model, _mse, _regression_problem(), epochs=30, lr=0.05, progress=False,
                        eval_fn=lambda m: 0.0, device="cpu")
    assert len(history.train_loss) == 30 * 8 and len(history.eval_loss) == 30
    assert history.train_loss[-1] < 0.01 * history.train_loss[0]
    assert not model.training


def test_fit_stops_after_max_steps_and_clips():
    model = nn.Linear(3, 1)
    history = train.fit(model, _mse, _regression_problem(), epochs=5, max_steps=3, max_grad_norm=1e-3,
                        progress=False, device="cpu")
    assert len(history.train_loss) == 3


def test_nan_loss_names_the_step():
    model = nn.Linear(3, 1)
    calls = iter(range(100))

    def loss_fn(model, batch):
        return _mse(model, batch) * (float("nan") if next(calls) == 4 else 1.0)

    with pytest.raises(train.NonFiniteLossError, match="at step 4"):
        train.fit(model, loss_fn, _regression_problem(), epochs=1, progress=False, device="cpu")


def test_seed_everything_is_reproducible():
    train.seed_everything(7)
    first = (torch.randn(3), np.random.rand(), torch.randn(2, generator=train.seed_everything(7)))
    train.seed_everything(7)
    second = (torch.randn(3), np.random.rand(), torch.randn(2, generator=train.seed_everything(7)))
    assert torch.equal(first[0], second[0]) and first[1] == second[1] and torch.equal(first[2], second[2])


def test_checkpoint_round_trip_and_manifest(tmp_path):
    model = nn.Linear(4, 2)
    path = train.save_checkpoint(model, "toy", metadata={"epochs": 3}, directory=tmp_path)
    manifest = json.loads((tmp_path / "MANIFEST.json").read_text())
    assert manifest["toy"]["epochs"] == 3 and len(manifest["toy"]["sha256"]) == 64
    fresh = train.load_checkpoint(nn.Linear(4, 2), "toy", directory=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # corrupt one byte
    path.write_bytes(bytes(raw))
    with pytest.raises(train.CheckpointError, match="sha256"):
        train.load_checkpoint(nn.Linear(4, 2), "toy", directory=tmp_path)
    with pytest.raises(train.CheckpointError, match="FLOWLIB_RETRAIN"):
        train.load_checkpoint(nn.Linear(4, 2), "missing", directory=tmp_path)


def test_train_or_load_trains_once_then_loads(tmp_path, monkeypatch):
    monkeypatch.delenv("FLOWLIB_RETRAIN", raising=False)
    calls = []

    def train_fn(model):
        calls.append(1)
        with torch.no_grad():
            model.weight.fill_(1.5)
        return {"final_loss": 0.25, "curve": torch.tensor([1.0, 0.5]), "bad": float("nan")}

    trained, meta = train.train_or_load(nn.Linear(2, 2), "m", train_fn, save=True, directory=tmp_path)
    assert meta["loaded"] is False and meta["curve"] == [1.0, 0.5] and meta["bad"] is None
    loaded, meta = train.train_or_load(nn.Linear(2, 2), "m", train_fn, save=True, directory=tmp_path)
    assert meta["loaded"] is True and meta["final_loss"] == 0.25 and len(calls) == 1
    assert torch.equal(loaded.weight, torch.full((2, 2), 1.5))
    monkeypatch.setenv("FLOWLIB_RETRAIN", "1")
    train.train_or_load(nn.Linear(2, 2), "m", train_fn, save=True, directory=tmp_path)
    assert len(calls) == 2


def test_quick_scale_never_writes_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWLIB_SCALE", "quick")
    train.train_or_load(nn.Linear(2, 2), "q", lambda model: None, directory=tmp_path)
    assert not (tmp_path / "MANIFEST.json").exists()


def test_committed_checkpoints_match_their_manifest():
    from flowlib import checkpoints

    directory = Path(__file__).resolve().parent.parent / "checkpoints"
    for name, entry in checkpoints.read_manifest(directory).items():
        path = directory / entry["file"]
        assert path.exists(), f"{name}: {path} is missing"
        assert path.stat().st_size < 10 * 2**20, f"{name} is over 10 MB"
        assert checkpoints._sha256(path) == entry["sha256"], f"{name}: sha256 mismatch"


# --- plot -------------------------------------------------------------------------------------------------------


def test_plots_draw_without_error():
    import matplotlib.pyplot as plt

    images = torch.rand(10, 1, 8, 8)
    ax = plot.image_grid(images, nrow=2, title="grid")
    assert ax.images[0].get_array().shape == (2 * 9 + 1, 5 * 9 + 1)
    plot.image_grid(torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8))
    plot.image_rows([images[:5], images[5:8]], row_labels=["a", "b"])
    plot.density_2d(lambda points: -0.5 * (points**2).sum(1), resolution=32)
    plot.scatter_2d(torch.randn(100, 2), title="samples")
    plt.close("all")
    with pytest.raises(ValueError, match="N, C, H, W"):
        plot.image_grid(torch.rand(8, 8))


def test_concurrent_checkpoint_saves_keep_every_manifest_entry(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_save_one, args=(tmp_path, index)) for index in range(6)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert all(process.exitcode == 0 for process in processes)
    manifest = json.loads((tmp_path / "MANIFEST.json").read_text())
    assert sorted(manifest) == [f"model{index}" for index in range(6)]


def _save_one(directory, index):
    for _ in range(5):
        train.save_checkpoint(nn.Linear(2, 2), f"model{index}", directory=directory)


def test_count_parameters_and_history_curve():
    assert metrics.count_parameters(nn.Linear(3, 2)) == 8
    history = train.History(train_loss=[float(step) for step in range(10)])
    assert history.curve(num_points=5) == [0.5, 2.5, 4.5, 6.5, 8.5]
    assert train.History().curve() == []


def test_dataset_bits_per_dim_is_reproducible_and_restores_the_rng():
    class UniformOnUnitCube(nn.Module):  # density 1 on [0,1)^D: exactly 8 bits/dim whatever the data
        def bits_per_dim(self, x):
            return metrics.bits_per_dim(torch.zeros(len(x)), num_dims=x[0].numel())

    batches = [(torch.rand(4, 1, 2, 2), None) for _ in range(3)]
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    assert metrics.dataset_bits_per_dim(UniformOnUnitCube(), batches) == pytest.approx(8.0)
    assert torch.equal(torch.rand(1), expected_next)  # caller's RNG state restored
    with pytest.raises(ValueError, match="no examples"):
        metrics.dataset_bits_per_dim(UniformOnUnitCube(), [])


@needs_data
def test_dataset_bits_per_dim_fixes_the_dequantization_noise():
    class MeanPixel(nn.Module):
        def bits_per_dim(self, x):
            return x.flatten(1).mean(1)

    loader = data.image_loader("mnist", "test", 8, subset=16, shuffle=False)
    first = metrics.dataset_bits_per_dim(MeanPixel(), loader, seed=3)
    assert first == metrics.dataset_bits_per_dim(MeanPixel(), loader, seed=3)
    assert first != metrics.dataset_bits_per_dim(MeanPixel(), loader, seed=4)
