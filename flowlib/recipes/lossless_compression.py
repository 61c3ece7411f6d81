"""Chapter 7, lossless compression: Integer Discrete Flows for MNIST and for Fashion-MNIST.

All are :class:`flowlib.models.idf.IDF` models at the chapter's sizes, trained by :func:`flowlib.models.idf.train_idf`
on the dataset's training split with the same steps and data order:

* ``idf_<dataset>``: factor-out priors that are mixtures of ``S.factor_components`` discretized logistics; their
  checkpoints keep the names they had before recipes existed, ``07_idf-<dataset>-<scale>``;
* ``idf_single_logistic_<dataset>``: the paper's factor-out priors, one discretized logistic per value
  (``factor_components=1``), everything else the same.

Example:
    >>> from flowlib.scale import sizes
    >>> list(recipes(sizes(CHAPTER, "quick"), torch.device("cpu")))
    ['idf_mnist', 'idf_single_logistic_mnist', 'idf_fashion_mnist', 'idf_single_logistic_fashion_mnist']
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


def build_idf(S: SimpleNamespace, factor_components: int | None = None) -> IDF:
    """The chapter's IDF for ``(1, 28, 28)`` images at sizes ``S``, seeded; ``factor_components`` logistics in each
    factor-out prior (default ``S.factor_components``).

    Example:
        >>> from flowlib.scale import sizes
        >>> build_idf(sizes(CHAPTER, "quick")).config["hidden_channels"]
        8
    """
    seed_everything(0)
    return IDF((1, 28, 28), num_levels=S.num_levels, num_couplings=S.num_couplings,
               hidden_channels=S.hidden_channels, num_components=S.num_components,
               factor_components=S.factor_components if factor_components is None else factor_components)


def recipes(S: SimpleNamespace, device: torch.device) -> dict[str, Recipe]:
    """``idf_<dataset>`` (mixture factor-out priors) and ``idf_single_logistic_<dataset>``, dataset by dataset."""

    def train(model: IDF, dataset: str) -> dict:
        return train_idf(model, dataset, epochs=S.epochs, max_steps=S.max_steps, batch_size=S.batch_size, lr=S.lr,
                         warmup_steps=S.warmup_steps, train_subset=S.train_subset, eval_images=S.eval_images,
                         device=device)

    result = {}
    for dataset in DATASETS:
        result[f"idf_{dataset}"] = Recipe(CHAPTER, f"idf_{dataset}", lambda: build_idf(S),
                                          lambda model, dataset=dataset: train(model, dataset),
                                          stem=f"07_idf-{dataset}")
        name = f"idf_single_logistic_{dataset}"
        result[name] = Recipe(CHAPTER, name, lambda: build_idf(S, factor_components=1),
                              lambda model, dataset=dataset: train(model, dataset))
    return result
