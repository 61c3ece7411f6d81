"""Checkpoint resolution: the clone, the user cache, downloads checked against the packaged manifest, damaged
manifests, the scale fallback of notebooks, and a plain (non-editable) install used outside the clone."""

from __future__ import annotations

import functools
import http.server
import shutil
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from flowlib import checkpoints, recipes, scale
from flowlib.checkpoints import CheckpointError, ManifestError

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture
def outside_clone(tmp_path, monkeypatch):
    """flowlib as if installed in site-packages, run from a folder outside any clone, with an empty cache."""
    package = tmp_path / "site-packages" / "flowlib"
    package.mkdir(parents=True)
    monkeypatch.setattr(checkpoints, "__file__", str(package / "checkpoints.py"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for variable in ("FLOWLIB_CHECKPOINT_DIR", "FLOWLIB_CHECKPOINT_URL", "FLOWLIB_RETRAIN", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FLOWLIB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def _publish(folder: Path, name: str = "07_demo-linear-standard") -> tuple[nn.Linear, dict]:
    """Save a checkpoint into ``folder`` (the "repository") and return the model and its manifest."""
    torch.manual_seed(1)
    model = nn.Linear(3, 2)
    checkpoints.save_checkpoint(model, name, metadata={"seconds": 90.0, "device": "cpu"}, directory=folder)
    return model, checkpoints.read_manifest(folder)


def _same_weights(first: nn.Module, second: nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


# --- the clone --------------------------------------------------------------------------------------------------


def test_the_clone_is_found_from_the_package_or_the_working_directory(outside_clone, monkeypatch):
    assert checkpoints.clone_checkpoint_dir() is None
    clone = outside_clone / "clone"
    (clone / "flowlib").mkdir(parents=True)
    (clone / "flowlib" / "__init__.py").write_text("")
    (clone / "pyproject.toml").write_text("")
    model, _ = _publish(clone / "checkpoints")
    (clone / "notebooks").mkdir()
    monkeypatch.chdir(clone / "notebooks")  # a plain install, used from inside a clone
    assert checkpoints.clone_checkpoint_dir() == clone / "checkpoints"
    assert checkpoints.save_dir() == clone / "checkpoints"
    loaded = checkpoints.load_checkpoint(nn.Linear(3, 2), "07_demo-linear-standard")
    assert _same_weights(loaded, model)
    assert not (outside_clone / "cache").exists()  # nothing downloaded or cached


def test_this_repository_is_a_clone_with_the_committed_manifest(monkeypatch):
    monkeypatch.delenv("FLOWLIB_CHECKPOINT_DIR", raising=False)
    assert checkpoints.clone_checkpoint_dir() == REPOSITORY / "checkpoints"


# --- the cache: downloads checked against the packaged manifest -------------------------------------------------


def test_download_into_the_cache_then_reuse(outside_clone, monkeypatch):
    model, manifest = _publish(outside_clone / "published")
    monkeypatch.setattr(checkpoints, "_packaged_manifest", lambda: manifest)
    monkeypatch.setenv("FLOWLIB_CHECKPOINT_URL", (outside_clone / "published").as_uri())
    assert "07_demo-linear-standard" in checkpoints.available_checkpoints()
    loaded = checkpoints.load_checkpoint(nn.Linear(3, 2), "07_demo-linear-standard")
    assert _same_weights(loaded, model)
    cached = list((outside_clone / "cache" / "checkpoints" / "downloads").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".pt"
    monkeypatch.setenv("FLOWLIB_CHECKPOINT_URL", "http://127.0.0.1:9/unreachable")  # no second download
    assert _same_weights(checkpoints.load_checkpoint(nn.Linear(3, 2), "07_demo-linear-standard"), model)


def test_a_download_with_the_wrong_sha256_is_refused(outside_clone, monkeypatch):
    _, manifest = _publish(outside_clone / "published")
    published = outside_clone / "published" / manifest["07_demo-linear-standard"]["file"]
    torch.save({"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}, published)  # replaced after publishing
    monkeypatch.setattr(checkpoints, "_packaged_manifest", lambda: manifest)
    monkeypatch.setenv("FLOWLIB_CHECKPOINT_URL", (outside_clone / "published").as_uri())
    with pytest.raises(CheckpointError, match="refusing to use it"):
        checkpoints.load_checkpoint(nn.Linear(3, 2), "07_demo-linear-standard")
    assert list((outside_clone / "cache" / "checkpoints" / "downloads").iterdir()) == []  # nothing kept


def test_a_damaged_cached_file_is_fetched_again(outside_clone, monkeypatch):
    model, manifest = _publish(outside_clone / "published")
    monkeypatch.setattr(checkpoints, "_packaged_manifest", lambda: manifest)
    monkeypatch.setenv("FLOWLIB_CHECKPOINT_URL", (outside_clone / "published").as_uri())
    path = checkpoints.checkpoint_path("07_demo-linear-standard")
    path.write_bytes(b"truncated")
    assert _same_weights(checkpoints.load_checkpoint(nn.Linear(3, 2), "07_demo-linear-standard"), model)


def test_download_over_http_from_a_local_server(outside_clone, monkeypatch):
    model, manifest = _publish(outside_clone / "published")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(outside_clone / "published")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setattr(checkpoints, "_packaged_manifest", lambda: manifest)
        monkeypatch.setenv("FLOWLIB_CHECKPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}/")
        assert _same_weights(checkpoints.load_checkpoint(nn.Linear(3, 2), "07_demo-linear-standard"), model)
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_offline_download_says_what_to_do(outside_clone, monkeypatch):
    _, manifest = _publish(outside_clone / "published")
    monkeypatch.setattr(checkpoints, "_packaged_manifest", lambda: manifest)
    monkeypatch.setenv("FLOWLIB_CHECKPOINT_URL", (outside_clone / "nowhere").as_uri())
    with pytest.raises(CheckpointError, match="FLOWLIB_CHECKPOINT_URL"):
        checkpoints.load_checkpoint(nn.Linear(3, 2), "07_demo-linear-standard")


def test_the_download_url_comes_from_the_package_metadata(monkeypatch):
    monkeypatch.delenv("FLOWLIB_CHECKPOINT_URL", raising=False)

    class Distribution:
        metadata = type("Metadata", (), {"get_all": lambda self, key: ["Repository, https://github.com/o/r.git"]})()

        def read_text(self, name):
            return json.dumps({"url": "https://github.com/o/r", "vcs_info": {"vcs": "git", "commit_id": "abc123"}})

    monkeypatch.setattr(checkpoints.package_metadata, "distribution", lambda name: Distribution())
    assert checkpoints.download_base_url() == "https://raw.githubusercontent.com/o/r/abc123/checkpoints/"


def test_outside_a_clone_trainings_are_saved_in_the_cache(outside_clone, monkeypatch):
    monkeypatch.setattr(checkpoints, "_packaged_manifest", lambda: {})
    monkeypatch.setenv("FLOWLIB_SCALE", "standard")
    calls = []
    checkpoints.train_or_load(nn.Linear(2, 2), "07_demo-mine-standard", lambda model: calls.append(1))
    trained = outside_clone / "cache" / "checkpoints" / "trained"
    assert (trained / "07_demo-mine-standard.pt").exists() and "07_demo-mine-standard" in checkpoints.read_manifest(
        trained)
    checkpoints.train_or_load(nn.Linear(2, 2), "07_demo-mine-standard", lambda model: calls.append(1))
    assert len(calls) == 1  # loaded the second time
    assert not any((outside_clone / "site-packages").rglob("*.pt"))


# --- damaged manifests ------------------------------------------------------------------------------------------


def test_a_damaged_manifest_is_a_clear_error_and_is_not_overwritten(tmp_path):
    broken = '{\n<<<<<<< HEAD\n  "a": {}\n'
    (tmp_path / "MANIFEST.json").write_text(broken)
    with pytest.raises(ManifestError, match="git checkout -- checkpoints/MANIFEST.json"):
        checkpoints.load_checkpoint(nn.Linear(2, 2), "a", directory=tmp_path)
    with pytest.raises(CheckpointError, match="damaged"):  # ManifestError is a CheckpointError
        checkpoints.save_checkpoint(nn.Linear(2, 2), "b", directory=tmp_path)
    assert (tmp_path / "MANIFEST.json").read_text() == broken and not (tmp_path / "b.pt").exists()
    (tmp_path / "MANIFEST.json").write_text('["not", "entries"]')
    with pytest.raises(ManifestError, match="'file' and 'sha256'"):
        checkpoints.read_manifest(tmp_path)


def test_a_damaged_manifest_through_the_old_import_path(tmp_path):
    from flowlib import train

    (tmp_path / "MANIFEST.json").write_text("{ not json")
    with pytest.raises(train.CheckpointError, match="damaged"):
        train.checkpoint_metadata("anything", tmp_path)


# --- scale fallback in notebooks --------------------------------------------------------------------------------


def _only_standard_checkpoints(monkeypatch):
    entries = {"03_pie-a-standard": {"file": "a.pt", "sha256": "0" * 64, "seconds": 600.0, "device": "cpu"},
               "03_pie-b-standard": {"file": "b.pt", "sha256": "1" * 64, "seconds": 1200.0, "device": "cpu"}}
    monkeypatch.setattr(checkpoints, "available_checkpoints", lambda: entries)
    monkeypatch.delenv("FLOWLIB_RETRAIN", raising=False)


def test_default_scale_without_checkpoints_falls_back(monkeypatch, capsys):
    _only_standard_checkpoints(monkeypatch)
    monkeypatch.delenv("FLOWLIB_SCALE", raising=False)
    monkeypatch.setattr(scale, "current_scale", lambda: os.environ.get("FLOWLIB_SCALE") or "full")  # CUDA default
    sizes = recipes.chapter_sizes("03_pie")
    assert sizes.scale == "standard" and os.environ["FLOWLIB_SCALE"] == "standard"
    message = capsys.readouterr().out
    assert "default scale 'full'" in message and "using scale 'standard'" in message and "30.0 min" in message


def test_explicit_scale_without_checkpoints_says_how_long_before_training(monkeypatch, capsys):
    _only_standard_checkpoints(monkeypatch)
    monkeypatch.setenv("FLOWLIB_SCALE", "full")
    assert recipes.chapter_sizes("03_pie").scale == "full"
    message = capsys.readouterr().out
    assert "train now" in message and "30.0 min on cpu" in message and "FLOWLIB_SCALE=standard" in message


def test_scale_with_checkpoints_loads_them(monkeypatch, capsys):
    _only_standard_checkpoints(monkeypatch)
    monkeypatch.setenv("FLOWLIB_SCALE", "standard")
    assert recipes.chapter_sizes("03_pie").scale == "standard"
    assert "loading 2 checkpoints of 03_pie" in capsys.readouterr().out
    monkeypatch.setenv("FLOWLIB_RETRAIN", "1")
    assert recipes.chapter_sizes("03_pie").scale == "standard"
    assert "train now at scale 'standard'" in capsys.readouterr().out


# --- a plain install, outside the clone -------------------------------------------------------------------------


def test_command_line_names_itself(monkeypatch, capsys):
    from flowlib import compress

    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/flowlib-compress"])
    with pytest.raises(SystemExit):
        compress.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: flowlib-compress")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from the files of this working tree that a build reads (no checkpoint files)."""
    output = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source")
    for path in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "checkpoints/MANIFEST.json"):
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPOSITORY / path, source / path)
    shutil.copytree(REPOSITORY / "flowlib", source / "flowlib", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(output), str(source)], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.fail(f"could not build the wheel (the test extra brings setuptools>=77): {built.stderr[-800:]}")
    return next(output.glob("flows_and_bottlenecks-*.whl"))


def test_the_wheel_ships_the_repository_manifest(wheel):
    with zipfile.ZipFile(wheel) as archive:
        shipped = json.loads(archive.read("flowlib/checkpoint_manifest.json"))
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA"))).decode()
    assert shipped == json.loads((REPOSITORY / "checkpoints" / "MANIFEST.json").read_text())
    assert "Name: flows-and-bottlenecks" in metadata
    assert "Project-URL: Repository, https://github.com/flows-and-bottlenecks/book" in metadata


def test_plain_install_runs_the_command_line_with_downloaded_weights(wheel, tmp_path):
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    images = np.random.default_rng(0).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8)
    np.save(work / "images.npy", images)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("FLOWLIB_")}
    environment.update(PYTHONPATH=str(site), FLOWLIB_CACHE_DIR=str(tmp_path / "cache"),
                       FLOWLIB_CHECKPOINT_URL=(REPOSITORY / "checkpoints").as_uri(), OMP_NUM_THREADS="1")
    model = ["--model", "07_idf-mnist-standard"]
    runs = [subprocess.run([sys.executable, "-m", "flowlib.compress", *command], cwd=work, env=environment,
                           capture_output=True, text=True, timeout=300)
            for command in (["encode", "images.npy", *model, "--output", "x.flz"],
                            ["decode", "x.flz", *model, "--output", "decoded.npy"])]
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    assert np.array_equal(np.load(work / "decoded.npy"), images)
    assert "downloading 07_idf-mnist-standard.pt" in runs[0].stderr  # first use downloads ...
    assert "downloading" not in runs[1].stderr  # ... and the second finds it in the cache
    assert len(list((tmp_path / "cache" / "checkpoints" / "downloads").glob("07_idf-mnist-standard-*.pt"))) == 1
    assert not (site / "checkpoints").exists() and not list(site.rglob("*.pt"))  # nothing written into the package
