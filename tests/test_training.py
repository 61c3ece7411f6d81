"""GPU-ready training, tested on the CPU: devices, fit's deferred loss reads, torch.compile without graph breaks,
precision settings, on-device batches, train_idf's inputs, the gpu scale and python -m flowlib.pretrain."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flowlib import data, device, pretrain, scale, train
from flowlib.models.glow import glow
from flowlib.models.idf import IDF, train_idf
from flowlib.recipes import chapter_recipes, load_or_train

HAS_DATA = (data.data_root() / "MNIST" / "raw" / "t10k-images-idx3-ubyte").exists()
needs_data = pytest.mark.skipif(not HAS_DATA, reason="MNIST not found under FLOWLIB_DATA_DIR")


# --- devices ----------------------------------------------------------------------------------------------------


def test_resolve_device_gives_each_torchrun_process_its_gpu(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert device.resolve_device("cpu") == torch.device("cpu")
    assert device.resolve_device("cuda") == torch.device("cuda")
    assert device.resolve_device(None) == device.default_device()
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert device.resolve_device("cuda") == torch.device("cuda", 1)
    assert device.resolve_device("cuda:0") == torch.device("cuda", 0)  # an explicit index is kept
    assert device.resolve_device("cpu") == torch.device("cpu")


def test_default_optimizer_is_fused_adam_only_on_cuda():
    model = nn.Linear(2, 2)
    optimizer = train.default_optimizer(model.parameters(), 0.01, torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.Adam) and not optimizer.defaults.get("fused")
    assert optimizer.defaults["lr"] == 0.01


# --- fit --------------------------------------------------------------------------------------------------------


def _batches(count: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(32 * count, 3, generator=generator)
    targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5]])
    return list(zip(inputs.split(32), targets.split(32)))


def _mse(model: nn.Module, batch) -> torch.Tensor:
    inputs, targets = batch
    return (model(inputs) - targets).square().mean()


def test_deferred_loss_reads_give_the_same_history_and_name_the_nan_step():
    histories = []
    for sync_every in (1, 3):
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        histories.append(train.fit(model, _mse, _batches(), epochs=2, lr=0.05, device="cpu", progress=False,
                                   sync_every=sync_every).train_loss)
    assert histories[0] == histories[1] and len(histories[0]) == 16
    calls = iter(range(100))

    def poisoned(model, batch):
        return _mse(model, batch) * (float("nan") if next(calls) == 4 else 1.0)

    with pytest.raises(train.NonFiniteLossError, match="at step 4"):
        train.fit(nn.Linear(3, 1), poisoned, _batches(), device="cpu", progress=False, sync_every=3)


def test_progress_bars_follow_the_context(capsys):
    with train.progress_bars(False):
        train.fit(nn.Linear(3, 1), _mse, _batches(2), device="cpu", desc="hidden-bar")
    assert "hidden-bar" not in capsys.readouterr().err
    with train.progress_bars(True):
        train.fit(nn.Linear(3, 1), _mse, _batches(2), device="cpu", desc="shown-bar")
    assert "shown-bar" in capsys.readouterr().err


def test_float32_precision_sets_and_restores_tf32():
    def flags():
        if hasattr(torch.backends, "fp32_precision"):
            return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
        return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32

    before = flags()
    with train.float32_precision("tf32"):
        assert flags() in (("tf32", "tf32"), (True, True))
    with train.float32_precision("float32"):
        assert flags() in (("ieee", "ieee"), (False, False))
    assert flags() == before
    with pytest.raises(ValueError, match="precision"):
        train.fit(nn.Linear(3, 1), _mse, _batches(1), device="cpu", progress=False, precision="bf16")


def test_compiled_glow_step_has_no_graph_break_and_matches_eager():
    """The CUDA-graph path needs one graph per pass: ActNorm's initialisation and Logit's domain check must not
    break it. ``aot_eager`` traces forward and backward as ``reduce-overhead`` would, without generating code."""
    losses = []
    for compile_options in (False, {"backend": "aot_eager", "fullgraph": True}):
        torch.manual_seed(0)
        model = glow((1, 8, 8), num_levels=2, num_steps=1, hidden_channels=8)  # with Logit and ActNorm
        batches = [torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(index)) for index in range(3)]
        history = train.fit(model, lambda m, x: m.bits_per_dim(x).mean(), batches, lr=1e-3, device="cpu",
                            progress=False, compile=compile_options)
        losses.append(history.train_loss)
    assert torch.allclose(torch.tensor(losses[0]), torch.tensor(losses[1]), atol=1e-4)


# --- on-device batches ------------------------------------------------------------------------------------------


def test_tensor_batches_convert_each_batch_where_the_tensors_are():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    batches = data.TensorBatches((images, torch.arange(10)), 4, shuffle=True, drop_last=True, seed=3,
                                 transform=lambda x: x.float() / 2)
    first = list(batches)
    assert len(batches) == len(first) == 2 and all(batch[0].dtype == torch.float32 for batch in first)
    assert all(torch.equal(batch[0].flatten() * 2, batch[1].float()) for batch in first)  # rows stay paired


@needs_data
def test_image_loader_on_a_device_keeps_the_set_there():
    loader = data.image_loader("mnist", "test", 100, subset=300, form="dequantized", device="cpu")
    assert isinstance(loader, data.TensorBatches) and len(loader) == 3
    images, labels = next(iter(loader))
    assert images.shape == (100, 1, 28, 28) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert 0 <= float(images.min()) and float(images.max()) < 1


# --- train_idf ----------------------------------------------------------------------------------------------------


def _tiny_idf() -> IDF:
    torch.manual_seed(0)
    return IDF((1, 8, 8), num_levels=2, num_couplings=1, hidden_channels=4)


@pytest.mark.parametrize("form", ["tensor", "dataset", "dataloader"])
def test_train_idf_takes_a_tensor_a_dataset_or_a_dataloader(form):
    images = (torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.3).to(torch.uint8) * 255
    source = {"tensor": images, "dataset": TensorDataset(images, torch.zeros(64)),
              "dataloader": DataLoader(TensorDataset(images), batch_size=16, shuffle=True)}[form]
    model = _tiny_idf()
    with torch.no_grad():
        before = float(model.bits_per_dim(images).mean())
    metadata = train_idf(model, source, epochs=3, batch_size=16, lr=2e-2, warmup_steps=2, eval_images=images[:8],
                         device="cpu", progress=False)
    assert metadata["steps"] == 12 and metadata["device"] == "cpu" and metadata["warmup_steps"] == 2
    assert len(metadata["test_bits_per_dim"]) == 3 and metadata["eval_images"] == 8
    with torch.no_grad():
        assert float(model.bits_per_dim(images).mean()) < before


def test_train_idf_refuses_what_it_cannot_batch():
    with pytest.raises(TypeError, match="dataset name, a uint8 tensor"):
        train_idf(_tiny_idf(), 42, device="cpu")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="one-pass iterator"):
        train_idf(_tiny_idf(), iter([torch.zeros(4, 1, 8, 8, dtype=torch.uint8)]), max_steps=1, device="cpu")
    with pytest.raises(TypeError, match="uint8"):
        train_idf(_tiny_idf(), torch.rand(32, 1, 8, 8), batch_size=16, eval_images=None, device="cpu",
                  progress=False)


# --- scales -----------------------------------------------------------------------------------------------------


def test_gpu_is_the_default_scale_with_cuda(monkeypatch):
    monkeypatch.delenv("FLOWLIB_SCALE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert scale.current_scale() == "gpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert scale.current_scale() == "standard"
    assert "gpu" in scale.SCALES and "full" in scale.SCALES


@pytest.mark.parametrize("chapter", ["00_change_of_variables", "07_lossless_compression"])
def test_gpu_scale_checkpoints_stay_under_five_megabytes(chapter):
    for recipe in chapter_recipes(chapter, "gpu", "cpu").values():
        model = recipe.build()
        size = sum(value.numel() * value.element_size() for value in model.state_dict().values())
        assert size < 5_000_000, (recipe.name, size)


# --- recipes and pretrain ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("chapter", ["00_change_of_variables", "07_lossless_compression"])
def test_recipes_load_the_committed_standard_checkpoints(chapter):
    for recipe in chapter_recipes(chapter, "standard", "cpu").values():
        model, metadata = load_or_train(recipe, "standard", retrain=False)
        assert metadata["loaded"], recipe.checkpoint_name("standard")
        assert not model.training


@needs_data
def test_pretrain_quick_writes_checkpoints_the_recipes_load(tmp_path, capsys):
    out = tmp_path / "checkpoints"
    assert pretrain.main(["07_lossless_compression", "--scale", "quick", "--out", str(out), "--only", "idf_mnist",
                          "--no-progress"]) == 0
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert list(manifest) == ["07_idf-mnist-quick"] and manifest["07_idf-mnist-quick"]["steps"] == 30
    recipe = chapter_recipes("07_lossless_compression", "quick", "cpu")["idf_mnist"]
    _, metadata = load_or_train(recipe, "quick", retrain=False, directory=out)
    assert metadata["loaded"]
    rows = pretrain.pretrain("07_lossless_compression", scale="quick", out=out, only=["idf_mnist"], progress=False)
    assert [row["status"] for row in rows] == ["skipped"]
    assert "estimated time" in capsys.readouterr().out


def test_pretrain_says_when_a_chapter_has_no_recipes(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pretrain, "_recipes", _no_recipes)
    assert pretrain.main(["05_maskaae", "--out", str(tmp_path)]) == 1
    assert "has no recipes yet" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrain.main(["99_nothing"])


def _no_recipes(chapter, scale, device):
    raise pretrain.NoRecipesError(f"chapter {chapter} has no recipes yet")


def test_pretrain_keeps_quick_weights_out_of_the_committed_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWLIB_CHECKPOINT_DIR", str(tmp_path))
    rows = pretrain.pretrain("00_change_of_variables", scale="quick", device="cpu", progress=False)
    assert rows[0]["status"] == "trained (not saved)" and not any(tmp_path.iterdir())
