"""Chapter 7, lossless compression: an Integer Discrete Flow for MNIST and one for Fashion-MNIST.

Both are :class:`flowlib.models.idf.IDF` models at the chapter's sizes, trained by :func:`flowlib.models.idf.train_idf`
on the dataset's training split. Their checkpoints keep the names they had before recipes existed,
``07_idf-<dataset>-<scale>``.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from flowlib.models.idf import IDF, train_idf
from flowlib.recipes import Recipe
from flowlib.train import seed_everything

__all__ = ["CHAPTER", "DATASETS", "build_idf", "recipes"]

CHAPTER = "07_lossless_compression"
DATASETS = ("mnist", "fashion_mnist")


def build_idf(S: SimpleNamespace) -> IDF:
    """The chapter's IDF for ``(1, 28, 28)`` images at sizes ``S``, seeded.

    Example:
        >>> from flowlib.scale import sizes
        >>> build_idf(sizes(CHAPTER, "quick")).config["hidden_channels"]
        8
    """
    seed_everything(0)
    return IDF((1, 28, 28), num_levels=S.num_levels, num_couplings=S.num_couplings,
               hidden_channels=S.hidden_channels, num_components=S.num_components,
               factor_components=S.factor_components)


def recipes(S: SimpleNamespace, device: torch.device) -> dict[str, Recipe]:
    """``idf_mnist`` and ``idf_fashion_mnist``."""

    def train(model: IDF, dataset: str) -> dict:
        return train_idf(model, dataset, epochs=S.epochs, max_steps=S.max_steps, batch_size=S.batch_size, lr=S.lr,
                         warmup_steps=S.warmup_steps, train_subset=S.train_subset, eval_images=S.eval_images,
                         device=device)

    return {
        f"idf_{dataset}": Recipe(CHAPTER, f"idf_{dataset}", lambda: build_idf(S),
                                 lambda model, dataset=dataset: train(model, dataset), stem=f"07_idf-{dataset}")
        for dataset in DATASETS
    }
