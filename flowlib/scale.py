"""Run scales: ``quick`` (CI, seconds), ``standard`` (a laptop CPU, minutes) and ``full`` (paper scale on a GPU).

The scale comes from the environment variable ``FLOWLIB_SCALE``; without it, ``full`` when CUDA is available and
``standard`` otherwise. Every chapter looks up its sizes (epochs, subset sizes, widths) here, in :data:`SIZES`,
so the three scales of the whole book can be read side by side in one table.
"""

from __future__ import annotations

import os
import platform
from types import SimpleNamespace
from typing import Literal

import torch

__all__ = ["SCALES", "SIZES", "current_scale", "sizes", "describe_run"]

Scale = Literal["quick", "standard", "full"]
SCALES: tuple[Scale, ...] = ("quick", "standard", "full")

# chapter -> scale -> sizes. Every chapter keeps its own entry; keys are whatever that chapter needs.
SIZES: dict[str, dict[Scale, dict]] = {
    "00_change_of_variables": {
        "quick": dict(toy_samples=2_000, fit_steps=150, histogram_samples=20_000),
        "standard": dict(toy_samples=20_000, fit_steps=2_000, histogram_samples=200_000),
        "full": dict(toy_samples=50_000, fit_steps=5_000, histogram_samples=1_000_000),
    },
}


def current_scale() -> Scale:
    """The active scale: ``FLOWLIB_SCALE`` if set, else ``full`` with CUDA and ``standard`` without."""
    value = os.environ.get("FLOWLIB_SCALE", "").strip().lower()
    if not value:
        return "full" if torch.cuda.is_available() else "standard"
    if value not in SCALES:
        raise ValueError(f"FLOWLIB_SCALE={value!r} is not a scale; set it to one of {', '.join(SCALES)}")
    return value  # type: ignore[return-value]


def sizes(chapter: str, scale: Scale | None = None) -> SimpleNamespace:
    """The sizes of ``chapter`` at ``scale`` (default: the active scale), as attributes, plus ``.scale``."""
    if chapter not in SIZES:
        raise KeyError(f"no sizes for chapter {chapter!r}; known chapters: {', '.join(sorted(SIZES))}")
    scale = scale or current_scale()
    return SimpleNamespace(scale=scale, **SIZES[chapter][scale])


def describe_run(device: torch.device | str | None = None) -> str:
    """One line naming the scale, device and versions that a notebook's outputs came from (print it at the top)."""
    from flowlib.train import default_device

    device = torch.device(device) if device is not None else default_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return (
        f"scale: {current_scale()} | device: {device.type} ({name}, {torch.get_num_threads()} threads) | "
        f"torch {torch.__version__} | python {platform.python_version()}"
    )
