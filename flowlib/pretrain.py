"""Train every checkpoint a chapter loads, from the command line (no Jupyter needed).

Usage::

    python -m flowlib.pretrain CHAPTER [CHAPTER ...] [--scale S] [--out DIR] [--device D] [--only NAME ...]
                                                      [--retrain]
    python -m flowlib.pretrain --list

For each chapter this builds the recipes of :mod:`flowlib.recipes` at the scale (default: ``FLOWLIB_SCALE``, else
``gpu`` with CUDA and ``standard`` without), trains every one whose checkpoint is not in ``DIR/MANIFEST.json`` yet
(all of them with ``--retrain``), and saves the weights and their manifest entries there. ``DIR`` defaults to the
folder where notebooks save (:func:`flowlib.checkpoints.save_dir`: ``FLOWLIB_CHECKPOINT_DIR``, else the clone's
``checkpoints/``); a notebook run with ``FLOWLIB_CHECKPOINT_DIR=DIR`` and the same scale loads what was trained
here. ``quick``-scale weights are only saved into an explicit ``--out``, never among the committed checkpoints.

Before training it prints the plan with the time each checkpoint took when it was last trained at this scale on this
kind of device (from the manifests), then shows a bar over the recipes and each training's own bar with its rate and
time left. Under ``torchrun`` every process trains (see :mod:`flowlib.distributed`) and rank 0 writes and prints.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from flowlib.device import resolve_device
from flowlib.distributed import is_main_process
from flowlib.recipes import CHAPTERS, Recipe, chapter_recipes
from flowlib.scale import SCALES, current_scale
from flowlib.checkpoints import CheckpointError, checkpoint_metadata, save_dir, train_or_load
from flowlib.train import progress_bars

__all__ = ["NoRecipesError", "main", "pretrain", "previous_seconds"]


class NoRecipesError(LookupError):
    """The chapter trains nothing yet: its recipe module does not exist."""


def _recipes(chapter: str, scale: str, device: torch.device) -> dict[str, Recipe]:
    module = "flowlib.recipes." + chapter.split("_", 1)[1]
    try:
        return chapter_recipes(chapter, scale, device)
    except ModuleNotFoundError as error:
        if error.name != module:  # a dependency of the recipe module is missing: that is another problem
            raise
        raise NoRecipesError(
            f"chapter {chapter} has no recipes yet ({module.replace('.', '/')}.py does not exist), so there is "
            "nothing to pretrain; its notebook trains its models itself"
        ) from None


def _entry(name: str, directory: Path | None) -> dict[str, Any] | None:
    """The manifest entry of checkpoint ``name`` in ``directory`` (``None``: wherever notebooks would find it,
    see :mod:`flowlib.checkpoints`), or ``None``."""
    try:
        return checkpoint_metadata(name, directory)
    except CheckpointError:
        return None


def previous_seconds(name: str, device: torch.device, directories: list[Path | None]) -> float | None:
    """How long checkpoint ``name`` took to train last time on this kind of device, from the first manifest that
    records it (``None`` in the list: the checkpoints notebooks load), or ``None`` if none does or it was trained on
    another kind of device.

    Example:
        >>> previous_seconds("no-such-checkpoint", torch.device("cpu"), [None]) is None
        True
    """
    for directory in directories:
        entry = _entry(name, directory)
        if entry is not None and entry.get("seconds") is not None:
            trained_on = str(entry.get("device", "cpu")).split(":")[0]  # entries without one were trained on CPUs
            return float(entry["seconds"]) if trained_on == device.type else None
    return None


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def pretrain(
    chapter: str,
    *,
    scale: str | None = None,
    out: Path | None = None,
    device: torch.device | str | None = None,
    only: list[str] | None = None,
    retrain: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train ``chapter``'s recipes into ``out``; returns one row per recipe (name, checkpoint, status, seconds).

    Raises :class:`NoRecipesError` when the chapter has no recipe module and ``KeyError`` for an unknown chapter or
    recipe name.
    """
    scale = scale or current_scale()
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    device = resolve_device(device)
    explicit_out = out is not None
    out = Path(out) if out is not None else save_dir()
    save = scale != "quick" or explicit_out
    recipes = _recipes(chapter, scale, device)
    if only:
        unknown = sorted(set(only) - set(recipes))
        if unknown:
            raise KeyError(f"chapter {chapter} has no recipe {', '.join(unknown)}; its recipes: {', '.join(recipes)}")
        recipes = {name: recipe for name, recipe in recipes.items() if name in only}
    todo = {name: recipe for name, recipe in recipes.items()
            if retrain or _entry(recipe.checkpoint_name(scale), out) is None}
    estimates = {name: previous_seconds(recipe.checkpoint_name(scale), device, [out, None])
                 for name, recipe in todo.items()}
    try:  # progress bars come with the ``progress`` extra; without tqdm, plain lines
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    progress = progress and is_main_process()

    def say(message: str) -> None:
        if is_main_process():
            (print if tqdm is None else tqdm.write)(message)

    say(f"{chapter} at scale {scale} on {device}: {len(recipes)} recipe(s), {len(todo)} to train into {out}"
        + ("" if save else " (quick-scale weights are not saved among the committed checkpoints: pass --out DIR)"))
    for name, recipe in recipes.items():
        status = f"last time {_format_seconds(estimates[name])}" if name in todo else "already trained, skipped"
        say(f"  {name:32s} {recipe.checkpoint_name(scale):48s} {status}")
    known = [seconds for seconds in estimates.values() if seconds is not None]
    if todo:
        total = _format_seconds(sum(known)) if known else "unknown"
        say(f"estimated time: {total}" + (f" for {len(known)} of {len(todo)} (the others were never trained at this "
                                            "scale on this device)" if 0 < len(known) < len(todo) else ""))
    rows = [{"recipe": name, "checkpoint": recipe.checkpoint_name(scale), "status": "skipped", "seconds": None}
            for name, recipe in recipes.items() if name not in todo]
    bar = todo.items() if tqdm is None else tqdm(todo.items(), desc=chapter, unit="checkpoint", disable=not progress)
    for name, recipe in bar:
        if tqdm is not None:
            bar.set_postfix_str(name)
        start = time.perf_counter()
        with progress_bars(progress):
            train_or_load(recipe.build(), recipe.checkpoint_name(scale), recipe.train, retrain=True, save=save,
                          directory=out)
        seconds = time.perf_counter() - start
        rows.append({"recipe": name, "checkpoint": recipe.checkpoint_name(scale),
                     "status": "trained and saved" if save else "trained (not saved)", "seconds": seconds})
        say(f"  {name}: {_format_seconds(seconds)}"
            + (f" (last time {_format_seconds(estimates[name])})" if estimates[name] is not None else ""))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowlib.pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("chapters", nargs="*", metavar="CHAPTER", help=f"one of: {', '.join(CHAPTERS)}")
    parser.add_argument("--scale", choices=SCALES, help="default: FLOWLIB_SCALE, else gpu with CUDA, else standard")
    parser.add_argument("--out", type=Path, help="checkpoint folder (default: the one notebooks load)")
    parser.add_argument("--device", help="e.g. cuda, cuda:1, cpu (default: a GPU if there is one)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="train only these recipes of the chapter")
    parser.add_argument("--retrain", action="store_true", help="train even where the manifest has the checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in logs)")
    parser.add_argument("--list", action="store_true", help="list the chapters and their recipes, then exit")
    args = parser.parse_args(argv)
    if args.list:
        for chapter in CHAPTERS:
            try:
                names = ", ".join(_recipes(chapter, args.scale or current_scale(), torch.device("cpu")))
            except NoRecipesError:
                names = "(no recipes yet)"
            print(f"{chapter:26s} {names}")
        return 0
    if not args.chapters:
        parser.error("name at least one chapter (or --list)")
    unknown = [chapter for chapter in args.chapters if chapter not in CHAPTERS]
    if unknown:
        parser.error(f"unknown chapter(s) {', '.join(unknown)}; chapters: {', '.join(CHAPTERS)}")
    failed = False
    for chapter in args.chapters:
        try:
            pretrain(chapter, scale=args.scale, out=args.out, device=args.device, only=args.only,
                     retrain=args.retrain, progress=not args.no_progress)
        except (NoRecipesError, KeyError) as error:
            print(f"error: {error.args[0]}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
