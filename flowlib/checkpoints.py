"""Trained weights that follow the package: where checkpoints are found, downloaded, verified and saved.

A checkpoint is a ``state_dict`` file ``<name>.pt`` with an entry in a manifest, ``MANIFEST.json``, that records its
sha256, size and training metadata (``seconds``, ``device``, losses, a model config). Names follow
``<chapter>-<model>-<scale>``, e.g. ``03_pie-pie_eps0.1-standard``, so each scale has its own weights.

Where :func:`load_checkpoint` looks for a checkpoint, in order:

1. ``$FLOWLIB_CHECKPOINT_DIR``, if set: that folder and nothing else (its ``MANIFEST.json``).
2. **The clone**: the repository's ``checkpoints/`` folder, when flowlib is imported from a clone (an editable
   install or ``PYTHONPATH``) or the current directory lies inside one (a plain install used from a clone).
3. **Your own trainings** outside a clone: ``<cache>/checkpoints/trained/``, where :func:`train_or_load` saves.
4. **The published weights**: the manifest shipped inside the package (``flowlib/checkpoint_manifest.json``,
   a copy of the repository's ``checkpoints/MANIFEST.json`` made when the package is built) names every committed
   checkpoint; on first use the file is downloaded from the repository (:func:`download_base_url`) into
   ``<cache>/checkpoints/downloads/``, and used only if its sha256 matches the manifest.

``<cache>`` is ``$FLOWLIB_CACHE_DIR``, else ``$XDG_CACHE_HOME/flowlib``, else ``~/.cache/flowlib``; nothing is ever
written into the installed package. Every load checks the sha256 and uses ``torch.load(weights_only=True)``.

Errors are :class:`CheckpointError` (missing, corrupt, download failed) and its subclass :class:`ManifestError`
(a manifest that is not valid JSON); each message says what to do.

Example:
    >>> import tempfile
    >>> from torch import nn
    >>> folder = Path(tempfile.mkdtemp())
    >>> path = save_checkpoint(nn.Linear(2, 2), "demo-linear-standard", metadata={"seconds": 1.5}, directory=folder)
    >>> load_checkpoint(nn.Linear(2, 2), "demo-linear-standard", directory=folder).weight.shape
    torch.Size([2, 2])
    >>> checkpoint_metadata("demo-linear-standard", folder)["seconds"]
    1.5
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata as package_metadata
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "DISTRIBUTION",
    "PACKAGED_MANIFEST",
    "REPOSITORY_URL",
    "CheckpointError",
    "ManifestError",
    "available_checkpoints",
    "cache_dir",
    "checkpoint_metadata",
    "checkpoint_path",
    "clone_checkpoint_dir",
    "download_base_url",
    "load_checkpoint",
    "read_manifest",
    "retrain_requested",
    "save_checkpoint",
    "save_dir",
    "train_or_load",
]

DISTRIBUTION = "flows-and-bottlenecks"  # the name on the package index; the import name is `flowlib`
REPOSITORY_URL = "https://github.com/flows-and-bottlenecks/book"  # used only if the package metadata has none
PACKAGED_MANIFEST = "checkpoint_manifest.json"  # inside the `flowlib` package, written by the build (setup.py)
MANIFEST = "MANIFEST.json"
DOWNLOAD_TIMEOUT = 60.0  # seconds without data before a download gives up


class CheckpointError(RuntimeError):
    """A checkpoint is missing, could not be downloaded, or its bytes do not match the recorded sha256."""


class ManifestError(CheckpointError):
    """A ``MANIFEST.json`` is not a JSON object of entries (e.g. a broken merge or an interrupted write)."""


# --- where checkpoints live -------------------------------------------------------------------------------------


def _is_clone(root: Path) -> bool:
    return all((root / part).is_file() for part in (f"checkpoints/{MANIFEST}", "pyproject.toml", "flowlib/__init__.py"))


def clone_checkpoint_dir() -> Path | None:
    """The ``checkpoints/`` folder of the repository clone in use, or ``None`` outside a clone.

    The clone is the folder above the imported ``flowlib`` package (editable install, ``PYTHONPATH``), else the
    current directory or one of its parents (a plain install used from inside a clone, e.g. from ``notebooks/``).
    """
    package_parent = Path(__file__).resolve().parent.parent
    for root in (package_parent, *(Path.cwd().resolve() / "_").parents):
        if _is_clone(root):
            return root / "checkpoints"
    return None


def cache_dir() -> Path:
    """flowlib's cache: ``$FLOWLIB_CACHE_DIR``, else ``$XDG_CACHE_HOME/flowlib``, else ``~/.cache/flowlib``."""
    configured = os.environ.get("FLOWLIB_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "flowlib"


def _explicit_dir() -> Path | None:
    configured = os.environ.get("FLOWLIB_CHECKPOINT_DIR")
    return Path(configured).expanduser() if configured else None


def save_dir() -> Path:
    """Where :func:`train_or_load` saves: ``$FLOWLIB_CHECKPOINT_DIR``, else the clone's ``checkpoints/``, else
    ``<cache>/checkpoints/trained`` (never inside the installed package)."""
    return _explicit_dir() or clone_checkpoint_dir() or cache_dir() / "checkpoints" / "trained"


def _download_dir() -> Path:
    return cache_dir() / "checkpoints" / "downloads"


# --- manifests --------------------------------------------------------------------------------------------------


def _parse_manifest(text: str, where: str) -> dict[str, dict[str, Any]]:
    advice = (
        f"{where} is damaged (a broken merge or an interrupted write?). In a clone, restore it with "
        "`git checkout -- checkpoints/MANIFEST.json` (or resolve the merge); in the cache, delete the file; an "
        "installed package: reinstall it"
    )
    try:
        manifest = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as error:
        raise ManifestError(f"{advice}. JSON error: {error}") from error
    if not isinstance(manifest, dict) or not all(
        isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and isinstance(entry.get("file"), str)
        for entry in manifest.values()
    ):
        raise ManifestError(f"{advice}. Expected an object of entries with 'file' and 'sha256'")
    return manifest


def read_manifest(directory: Path | str) -> dict[str, dict[str, Any]]:
    """The entries of ``<directory>/MANIFEST.json`` (empty if there is none).

    Raises :class:`ManifestError` if the file is not a JSON object of entries, each with ``file`` and ``sha256``.
    """
    path = Path(directory) / MANIFEST
    return _parse_manifest(path.read_text(), str(path)) if path.exists() else {}


def _packaged_manifest() -> dict[str, dict[str, Any]]:
    resource = resources.files("flowlib") / PACKAGED_MANIFEST
    if not resource.is_file():
        return {}
    return _parse_manifest(resource.read_text(), f"the package's {PACKAGED_MANIFEST}")


def _sources() -> list[tuple[Path | None, dict[str, dict[str, Any]]]]:
    """(folder, manifest) pairs in lookup order; folder ``None`` means "download into the cache"."""
    explicit = _explicit_dir()
    if explicit is not None:
        return [(explicit, read_manifest(explicit))]
    clone = clone_checkpoint_dir()
    if clone is not None:
        return [(clone, read_manifest(clone))]
    trained = cache_dir() / "checkpoints" / "trained"
    return [(trained, read_manifest(trained)), (None, _packaged_manifest())]


def available_checkpoints() -> dict[str, dict[str, Any]]:
    """Every checkpoint that :func:`load_checkpoint` can find (name -> manifest entry), without downloading any."""
    found: dict[str, dict[str, Any]] = {}
    for _, manifest in reversed(_sources()):
        found.update(manifest)
    return found


def checkpoint_metadata(name: str, directory: Path | str | None = None) -> dict[str, Any]:
    """The manifest entry of checkpoint ``name`` (sha256, size and whatever metadata was saved with it).

    With ``directory``, only that folder's manifest is read; otherwise the lookup order of :mod:`flowlib.checkpoints`
    applies.
    """
    manifest = read_manifest(directory) if directory is not None else available_checkpoints()
    if name not in manifest:
        nearby = sorted(key for key in manifest if key.split("-")[0] == name.split("-")[0])
        hint = f" Checkpoints of this chapter: {', '.join(nearby)}." if nearby else ""
        raise CheckpointError(
            f"no checkpoint named {name!r}.{hint} Train it with FLOWLIB_RETRAIN=1 (notebooks, "
            "`python -m flowlib.pretrain`), or point FLOWLIB_CHECKPOINT_DIR at a folder that has it"
        )
    return manifest[name]


# --- files: hashing, downloading, saving, loading ---------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_base_url() -> str:
    """The URL (ending in ``/``) under which the committed checkpoint files are fetched.

    ``$FLOWLIB_CHECKPOINT_URL`` if set (any URL ``urllib`` opens, ``file://`` included); else the raw files of the
    repository named by the package metadata (``Project-URL: Repository``), at the commit pip recorded when it
    installed from git, or at ``main``.

    Example:
        >>> os.environ["FLOWLIB_CHECKPOINT_URL"] = "https://example.org/weights"
        >>> download_base_url()
        'https://example.org/weights/'
        >>> del os.environ["FLOWLIB_CHECKPOINT_URL"]
    """
    configured = os.environ.get("FLOWLIB_CHECKPOINT_URL")
    if configured:
        return configured.rstrip("/") + "/"
    repository, revision = REPOSITORY_URL, "main"
    try:
        distribution = package_metadata.distribution(DISTRIBUTION)
        for line in distribution.metadata.get_all("Project-URL") or []:
            label, _, url = line.partition(",")
            if label.strip().lower() == "repository":
                repository = url.strip()
        direct_url = json.loads(distribution.read_text("direct_url.json") or "{}")
        revision = direct_url.get("vcs_info", {}).get("commit_id", revision)
    except (package_metadata.PackageNotFoundError, json.JSONDecodeError):
        pass
    parts = urllib.parse.urlparse(repository)
    if parts.netloc == "github.com":
        owner_and_name = parts.path.strip("/").removesuffix(".git")
        return f"https://raw.githubusercontent.com/{owner_and_name}/{revision}/checkpoints/"
    return repository.rstrip("/") + f"/raw/{revision}/checkpoints/"


def _download(entry: dict[str, Any], destination: Path) -> None:
    """Fetch ``entry['file']`` into ``destination``, keeping it only if its sha256 matches the manifest."""
    url = download_base_url() + urllib.parse.quote(entry["file"])
    destination.parent.mkdir(parents=True, exist_ok=True)
    size = f" ({entry['bytes'] / 2**20:.1f} MiB)" if isinstance(entry.get("bytes"), int) else ""
    print(f"downloading {entry['file']}{size} from {url}", file=sys.stderr)
    handle, temporary_name = tempfile.mkstemp(dir=destination.parent, suffix=".part")
    temporary = Path(temporary_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as output, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                output.write(block)
        if digest.hexdigest() != entry["sha256"]:
            raise CheckpointError(
                f"the download of {entry['file']} from {url} has sha256 {digest.hexdigest()[:12]}..., the package's "
                f"manifest says {entry['sha256'][:12]}...; refusing to use it. The published file changed or the "
                "transfer was altered: upgrade flowlib, or set FLOWLIB_CHECKPOINT_URL to a trusted copy"
            )
        os.replace(temporary, destination)
    except (urllib.error.URLError, OSError) as error:
        raise CheckpointError(
            f"could not download {entry['file']} from {url} ({error}). Connect to the internet, or clone the "
            "repository and run from it, or set FLOWLIB_CHECKPOINT_URL to a folder or server holding the file "
            "(a notebook can also train it: FLOWLIB_RETRAIN=1)"
        ) from error
    finally:
        temporary.unlink(missing_ok=True)


def _verified(path: Path, entry: dict[str, Any]) -> Path:
    digest = _sha256(path)
    if digest != entry["sha256"]:
        raise CheckpointError(
            f"checkpoint {path} has sha256 {digest[:12]}..., the manifest says {entry['sha256'][:12]}...: the file "
            "is corrupt or was replaced; restore it from git (`git checkout -- checkpoints/`) or retrain with "
            "FLOWLIB_RETRAIN=1"
        )
    return path


def checkpoint_path(name: str, directory: Path | str | None = None) -> Path:
    """The verified local file of checkpoint ``name``, downloading it first if it is only published.

    Raises :class:`CheckpointError` if it is unknown, missing, fails to download or fails its sha256 check.
    """
    sources = [(Path(directory), read_manifest(directory))] if directory is not None else _sources()
    found = [(folder, manifest[name]) for folder, manifest in sources if name in manifest]
    if not found:
        checkpoint_metadata(name, directory)  # raises the "no checkpoint named ..." error with nearby names
    folder, entry = found[0]
    if folder is not None:
        path = folder / entry["file"]
        if not path.exists():
            raise CheckpointError(f"checkpoint file {path} is missing; restore it from git or retrain with "
                                  "FLOWLIB_RETRAIN=1")
        return _verified(path, entry)
    path = _download_dir() / f"{Path(entry['file']).stem}-{entry['sha256'][:16]}.pt"
    if not path.exists() or _sha256(path) != entry["sha256"]:
        _download(entry, path)
    return path


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive OS-level lock on ``path`` (released when the file is closed, even if the process dies)."""
    with open(path, "a+") as handle:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def save_checkpoint(
    model: nn.Module, name: str, *, metadata: dict[str, Any] | None = None, directory: Path | str | None = None
) -> Path:
    """Save ``model.state_dict()`` as ``<directory>/<name>.pt`` and record its sha256 (and ``metadata``) in that
    folder's manifest. ``directory`` defaults to :func:`~flowlib.checkpoints.save_dir`. Returns the file's path.

    Raises :class:`~flowlib.checkpoints.ManifestError` (and writes nothing) if the folder's manifest is damaged.
    """
    directory = Path(directory) if directory is not None else save_dir()
    directory.mkdir(parents=True, exist_ok=True)
    read_manifest(directory)  # refuse before writing anything next to a damaged manifest
    path = directory / f"{name}.pt"
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    torch.save(state, path)
    entry = {"file": path.name, "sha256": _sha256(path), "bytes": path.stat().st_size, **(metadata or {})}
    # Several trainings may finish at once: lock the manifest for the read-modify-write and replace it atomically.
    with _exclusive_lock(directory / ".MANIFEST.lock"):
        manifest = read_manifest(directory)
        manifest[name] = entry
        temporary = (directory / MANIFEST).with_suffix(".json.tmp")
        temporary.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
        os.replace(temporary, directory / MANIFEST)
    return path


def load_checkpoint(model: nn.Module, name: str, *, directory: Path | str | None = None) -> nn.Module:
    """Load checkpoint ``name`` into ``model`` after checking its sha256 against the manifest.

    With ``directory``, only that folder is used; otherwise the lookup order of :mod:`flowlib.checkpoints` applies
    (the published file is downloaded on first use). Raises :class:`~flowlib.checkpoints.CheckpointError` with what
    to do if that fails.
    """
    path = checkpoint_path(name, directory)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model


def retrain_requested() -> bool:
    """Whether ``FLOWLIB_RETRAIN`` asks to train instead of loading (any value but empty, ``0`` or ``false``)."""
    return os.environ.get("FLOWLIB_RETRAIN", "0").strip().lower() not in ("", "0", "false", "no")


def train_or_load(
    model: nn.Module,
    name: str,
    train: Callable[[nn.Module], dict[str, Any] | None],
    *,
    retrain: bool | None = None,
    save: bool | None = None,
    directory: Path | str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load checkpoint ``name`` into ``model`` if one can be found, else call ``train(model)`` and save.

    Name checkpoints after chapter, model and scale (``"03_pie-eps0.1-standard"``) so each scale has its own.
    ``train`` may return a dict of metadata (training time, final loss, a short loss curve) that is stored in the
    manifest and returned, so a notebook that loads weights can still show how they were obtained.
    ``retrain`` defaults to :func:`~flowlib.checkpoints.retrain_requested`; ``save`` defaults to True except at
    the ``quick`` scale, whose throw-away weights never enter a manifest; ``directory`` defaults to the lookup order
    of :mod:`flowlib.checkpoints` for loading and :func:`~flowlib.checkpoints.save_dir` for saving.
    Returns ``(model, metadata)``; the model is in eval mode.
    """
    from flowlib.distributed import is_main_process
    from flowlib.scale import current_scale

    if retrain is None:
        retrain = retrain_requested()
    if save is None:
        save = current_scale() != "quick"
    known = read_manifest(directory) if directory is not None else available_checkpoints()
    if not retrain and name in known:
        load_checkpoint(model, name, directory=directory)
        metadata = {"loaded": True, **known[name]}
    else:
        metadata = _json_safe(dict(train(model) or {}))
        if save and is_main_process():  # under torchrun every process trains; one writes
            save_checkpoint(model, name, metadata=metadata, directory=directory)
        metadata = {"loaded": False, **metadata}
    model.eval()
    return model, metadata


def _json_safe(value: Any) -> Any:
    """Metadata must be JSON: floats stay floats (NaN becomes None), tensors become lists."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, Tensor):
        return _json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value
