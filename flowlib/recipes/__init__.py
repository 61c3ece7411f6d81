"""Recipes: every checkpoint a chapter loads, defined once so a notebook and the command line train it the same way.

A recipe pairs a builder (a fresh, seeded model at the chapter's sizes) with a training function that returns the
metadata stored beside the weights in ``checkpoints/MANIFEST.json``. Each chapter has one module here, named after
the chapter without its number (chapter ``03_pie`` -> :mod:`flowlib.recipes.pie`), with a function

    recipes(S, device) -> dict[str, Recipe]

where ``S`` is :func:`flowlib.scale.sizes` of that chapter. A notebook builds its first model by hand, checks it
against the builder, then loads the rest with :func:`load_or_train`; ``python -m flowlib.pretrain CHAPTER`` trains
every recipe of a chapter without Jupyter.

Checkpoint names are ``<chapter>-<recipe name>-<scale>``, e.g. ``03_pie-pie_eps0.01-standard``, so every scale has
its own weights.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["CHAPTERS", "Recipe", "chapter_recipes", "load_or_train"]

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
