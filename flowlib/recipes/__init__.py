"""Recipes: every checkpoint a chapter loads, defined once so a notebook and the command line train it the same way.

A recipe pairs a builder (a fresh, seeded model at the chapter's sizes) with a training function that returns the
metadata stored beside the weights in ``checkpoints/MANIFEST.json``. Each chapter has one module here, named after
the chapter without its number (chapter ``03_pie`` -> ``flowlib.recipes.pie``), with a function

    recipes(S, device) -> dict[str, Recipe]

where ``S`` is :func:`flowlib.scale.sizes` of that chapter. A notebook takes its sizes from :func:`chapter_sizes`
(which falls back to a scale that has checkpoints, or says how long training will take), builds its first model by
hand, checks it against the builder, then loads the rest with :func:`load_or_train`; ``python -m flowlib.pretrain
CHAPTER`` trains every recipe of a chapter without Jupyter.

Checkpoint names are ``<chapter>-<recipe name>-<scale>``, e.g. ``03_pie-pie_eps0.01-standard``, so every scale has
its own weights.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

__all__ = ["CHAPTERS", "Recipe", "chapter_recipes", "chapter_sizes", "load_or_train"]

# Chapter identifiers (notebook names) in book order; the recipe module is the identifier without its number.
CHAPTERS: tuple[str, ...] = (
    "00_change_of_variables",
    "01_coupling_layers",
    "02_multiscale_flows",
    "03_pie",
    "04_virtual_bottleneck",
    "05_maskaae",
    "06_selfvae",
    "07_lossless_compression",
)


@dataclass(frozen=True)
class Recipe:
    """How one checkpoint of a chapter is built and trained.

    Arguments:
        chapter: the chapter identifier, e.g. ``"03_pie"``.
        name: the recipe's name within the chapter, e.g. ``"pie_eps0.01"``.
        build: returns a freshly initialised (seeded) model.
        train: trains the model it is given in place and returns JSON-able metadata (seconds, steps, losses).
        stem: the checkpoint name without its scale, ``<chapter>-<name>`` unless given; only checkpoints that
            were committed before recipes existed keep another stem (chapter 7's ``07_idf-mnist``).

    Example:
        >>> recipe = Recipe("00_change_of_variables", "demo", build=lambda: nn.Linear(2, 2), train=lambda m: {})
        >>> recipe.checkpoint_name("standard")
        '00_change_of_variables-demo-standard'
    """

    chapter: str
    name: str
    build: Callable[[], nn.Module]
    train: Callable[[nn.Module], dict[str, Any] | None]
    stem: str | None = None

    def checkpoint_name(self, scale: str) -> str:
        """The checkpoint's name in the manifest at ``scale``."""
        return f"{self.stem or f'{self.chapter}-{self.name}'}-{scale}"


def _module_name(chapter: str) -> str:
    if chapter not in CHAPTERS:
        raise KeyError(f"unknown chapter {chapter!r}; chapters: {', '.join(CHAPTERS)}")
    return "flowlib.recipes." + chapter.split("_", 1)[1]


def chapter_recipes(
    chapter: str, scale: str | None = None, device: torch.device | str | None = None
) -> dict[str, Recipe]:
    """Every recipe of ``chapter`` at ``scale`` (default: the active scale) training on ``device``.

    Raises ``KeyError`` for an unknown chapter and ``ModuleNotFoundError`` when the chapter trains nothing.
    """
    from flowlib.device import default_device
    from flowlib.scale import sizes

    module = importlib.import_module(_module_name(chapter))
    device = torch.device(device) if device is not None else default_device()
    return module.recipes(sizes(chapter, scale), device)


def load_or_train(
    recipe: Recipe,
    scale: str | None = None,
    *,
    retrain: bool | None = None,
    directory: Path | None = None,
    progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load ``recipe``'s checkpoint at ``scale`` if there is one, else build, train and save it.

    A thin wrapper over :func:`flowlib.train.train_or_load` (which documents ``retrain`` and ``directory``); as
    there, ``quick``-scale weights are never saved. ``progress`` shows the training's progress bars (off in
    notebooks). Returns ``(model, metadata)`` with the model in eval mode.
    """
    from flowlib.scale import current_scale
    from flowlib.train import progress_bars, train_or_load

    scale = scale or current_scale()
    with progress_bars(progress):
        return train_or_load(recipe.build(), recipe.checkpoint_name(scale), recipe.train, retrain=retrain,
                             save=scale != "quick", directory=directory)


def _chapter_checkpoints(chapter: str, scale: str) -> dict[str, dict[str, Any]]:
    """The checkpoints of ``chapter`` (by its number: ``07_idf-...`` belongs to ``07_lossless_compression``) at
    ``scale`` that can be loaded here (see :mod:`flowlib.checkpoints`)."""
    from flowlib.checkpoints import available_checkpoints

    number = chapter.split("_", 1)[0] + "_"
    return {name: entry for name, entry in available_checkpoints().items()
            if name.startswith(number) and name.endswith(f"-{scale}")}


def _recorded_time(entries: dict[str, dict[str, Any]]) -> str:
    """``"recorded training time: 4.2 min on cpu"`` from the manifest's ``seconds`` (and ``device``) of ``entries``."""
    seconds = [entry["seconds"] for entry in entries.values() if isinstance(entry.get("seconds"), (int, float))]
    if not seconds:
        return "no training time is recorded"
    total = sum(seconds)
    duration = f"{total:.0f} s" if total < 120 else f"{total / 60:.1f} min" if total < 7200 else f"{total / 3600:.1f} h"
    devices = sorted({str(entry["device"]) for entry in entries.values() if "device" in entry})
    return f"recorded training time: {duration}" + (f" on {'/'.join(devices)}" if devices else "")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def chapter_sizes(chapter: str) -> SimpleNamespace:
    """The sizes a chapter's notebook runs at (what :func:`flowlib.scale.sizes` returns), and a line saying why.

    * At the active scale, if the chapter has checkpoints there (or ``FLOWLIB_RETRAIN=1`` asks to train, or the
      scale is ``quick``, whose models train in seconds): those sizes.
    * If the active scale is a default (``FLOWLIB_SCALE`` unset, e.g. a GPU machine whose default scale has no
      checkpoints): it falls back to the largest scale below it that has checkpoints, sets ``FLOWLIB_SCALE`` to it
      for this process (so checkpoint names, :func:`load_or_train` and :func:`flowlib.scale.describe_run` all
      agree), and says so. Set ``FLOWLIB_SCALE`` to train at the default scale instead.
    * If ``FLOWLIB_SCALE`` names a scale without checkpoints: those sizes, after saying that training starts now
      and how long the trainings at the nearest recorded scale took (``seconds`` in the manifest).

    Example:
        >>> previous = os.environ.get("FLOWLIB_SCALE")
        >>> os.environ["FLOWLIB_SCALE"] = "quick"
        >>> chapter_sizes("00_change_of_variables").scale
        scale 'quick': every model of 00_change_of_variables trains now, in seconds (quick weights are never saved)
        'quick'
        >>> if previous is None:
        ...     del os.environ["FLOWLIB_SCALE"]
        ... else:
        ...     os.environ["FLOWLIB_SCALE"] = previous
    """
    from flowlib.checkpoints import retrain_requested
    from flowlib.scale import SCALES, current_scale, sizes

    scale = current_scale()
    if scale == "quick":
        print(f"scale 'quick': every model of {chapter} trains now, in seconds (quick weights are never saved)")
        return sizes(chapter, scale)
    found = _chapter_checkpoints(chapter, scale)
    if found and not retrain_requested():
        print(f"scale {scale!r}: loading {_count(len(found), 'checkpoint')} of {chapter} instead of training "
              f"(FLOWLIB_RETRAIN=1 trains again; {_recorded_time(found)})")
        return sizes(chapter, scale)
    if found:
        print(f"FLOWLIB_RETRAIN=1: the models of {chapter} train now at scale {scale!r} ({_recorded_time(found)})")
        return sizes(chapter, scale)
    recorded = {other: _chapter_checkpoints(chapter, other) for other in SCALES if other != "quick"}
    recorded = {other: entries for other, entries in recorded.items() if entries}
    below = [other for other in recorded if SCALES.index(other) < SCALES.index(scale)]
    nearest = below[-1] if below else next(iter(recorded), None)  # the largest smaller scale, else the smallest
    if not os.environ.get("FLOWLIB_SCALE", "").strip() and nearest is not None and not retrain_requested():
        os.environ["FLOWLIB_SCALE"] = nearest
        print(f"No checkpoints of {chapter} at the default scale {scale!r}: using scale {nearest!r}, whose "
              f"{_count(len(recorded[nearest]), 'checkpoint')} load in seconds. To train at {scale!r} instead, set "
              f"FLOWLIB_SCALE={scale} before running ({nearest!r}: {_recorded_time(recorded[nearest])}).")
        return sizes(chapter, nearest)
    if nearest is None:
        print(f"No checkpoints of {chapter} at any scale: its models train now at scale {scale!r}")
    else:
        print(f"No checkpoints of {chapter} at scale {scale!r}: its models train now. At scale {nearest!r}, "
              f"{_recorded_time(recorded[nearest])}; {scale!r} differs in size and device, so expect a different "
              f"time. Set FLOWLIB_SCALE={nearest} to load those checkpoints instead.")
    return sizes(chapter, scale)
