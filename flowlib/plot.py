"""Plotting helpers shared by every notebook: image grids, 2-D densities and samples, image strips.

Each function draws on the given ``ax`` (or a new figure) and returns the ``Axes``; none calls ``plt.show()``.
Needs the ``plot`` extra (matplotlib): ``pip install "flows-and-bottlenecks[plot]"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from flowlib.extras import require

plt = require("matplotlib.pyplot", "flowlib.plot")
if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["density_2d", "image_grid", "image_rows", "scatter_2d", "to_display"]

Bounds = tuple[tuple[float, float], tuple[float, float]]


def to_display(images: Tensor) -> np.ndarray:
    """``(N, C, H, W)`` images (``uint8``, or floats in ``[0, 1]``) as a float ``(N, H, W, C)`` array in ``[0, 1]``."""
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    images = images.detach().cpu()
    images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return images.clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()


def _tile(images: np.ndarray, nrow: int, padding: int = 1) -> np.ndarray:
    count, height, width, channels = images.shape
    ncol = math.ceil(count / nrow)
    canvas = np.ones((nrow * (height + padding) + padding, ncol * (width + padding) + padding, channels))
    for index, image in enumerate(images):
        row, col = divmod(index, ncol)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        canvas[top : top + height, left : left + width] = image
    return canvas


def _show(canvas: np.ndarray, ax: Axes | None, title: str | None, size: float) -> Axes:
    if ax is None:
        height, width = canvas.shape[:2]
        _, ax = plt.subplots(figsize=(size * width / max(height, width), size * height / max(height, width)))
    ax.imshow(canvas.squeeze(-1) if canvas.shape[-1] == 1 else canvas, cmap="gray", vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def image_grid(
    images: Tensor, nrow: int | None = None, ax: Axes | None = None, title: str | None = None, size: float = 4.0
) -> Axes:
    """Tile ``(N, C, H, W)`` images into a grid with ``nrow`` rows (default: as square as possible)."""
    array = to_display(images)
    nrow = nrow or max(1, int(math.floor(math.sqrt(len(array)))))
    return _show(_tile(array, nrow), ax, title, size)


def image_rows(
    rows: Sequence[Tensor],
    row_labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    size: float = 6.0,
) -> Axes:
    """Stack image strips (each ``(N_i, C, H, W)``, e.g. an interpolation or originals vs reconstructions) as rows."""
    if not rows:
        raise ValueError("image_rows needs at least one row")
    arrays = [to_display(row) for row in rows]
    width = max(len(row) for row in arrays)
    height, image_width, channels = arrays[0].shape[1:]
    blank = np.ones((1, height, image_width, channels))
    padded = [np.concatenate([row] + [blank] * (width - len(row))) for row in arrays]
    ax = _show(_tile(np.concatenate(padded), nrow=len(rows)), ax, title, size)
    if row_labels is not None:
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([(height + 1) * (index + 0.5) for index in range(len(rows))], list(row_labels))
        for spine in ax.spines.values():
            spine.set_visible(False)
    return ax


def density_2d(
    log_prob_fn: Callable[[Tensor], Tensor],
    ax: Axes | None = None,
    bounds: Bounds = ((-4.0, 4.0), (-4.0, 4.0)),
    resolution: int = 200,
    title: str | None = None,
) -> Axes:
    """Heatmap of ``exp(log_prob_fn(points))`` on a ``resolution``-square grid; ``log_prob_fn`` maps ``(M, 2)`` to
    ``(M,)``. Evaluated without gradients, in chunks, on the CPU."""
    (x_low, x_high), (y_low, y_high) = bounds
    xs = torch.linspace(x_low, x_high, resolution)
    ys = torch.linspace(y_low, y_high, resolution)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        log_density = torch.cat([log_prob_fn(chunk).float().cpu() for chunk in grid.split(10_000)])
    density = log_density.exp().reshape(resolution, resolution).numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(density, origin="lower", extent=(x_low, x_high, y_low, y_high), cmap="viridis", aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def scatter_2d(
    points: Tensor, ax: Axes | None = None, title: str | None = None, bounds: Bounds | None = ((-4, 4), (-4, 4)),
    color: str | Sequence | None = None,
) -> Axes:
    """Scatter ``(N, 2)`` points with small translucent markers (good for a few thousand samples)."""
    points = points.detach().cpu().numpy() if isinstance(points, Tensor) else np.asarray(points)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.4, c=color if color is not None else "tab:blue")
    if bounds is not None:
        ax.set_xlim(*bounds[0])
        ax.set_ylim(*bounds[1])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax
