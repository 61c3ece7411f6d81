"""Recipes: checkpoint names, the chapter registry, and load_or_train (train once, then load the same weights)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flowlib.recipes import CHAPTERS, Recipe, chapter_recipes, load_or_train


def _recipe(calls: list[int]) -> Recipe:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return nn.Linear(3, 2)

    def train(model: nn.Module) -> dict:
        calls.append(1)
        with torch.no_grad():
            model.weight.add_(1.0)
        return {"steps": 1}

    return Recipe("03_pie", "demo", build, train)


def test_checkpoint_name_has_chapter_name_and_scale():
    assert _recipe([]).checkpoint_name("quick") == "03_pie-demo-quick"


def test_unknown_chapter_is_a_clear_key_error():
    with pytest.raises(KeyError, match="unknown chapter"):
        chapter_recipes("99_nothing")


def test_chapters_are_in_book_order():
    assert list(CHAPTERS) == sorted(CHAPTERS) and len(CHAPTERS) == 8


def test_load_or_train_trains_once_then_loads(tmp_path):
    calls: list[int] = []
    trained, first = load_or_train(_recipe(calls), "standard", retrain=False, directory=tmp_path)
    assert not first["loaded"] and first["steps"] == 1 and (tmp_path / "03_pie-demo-standard.pt").exists()
    loaded, second = load_or_train(_recipe(calls), "standard", retrain=False, directory=tmp_path)
    assert second["loaded"] and len(calls) == 1
    assert torch.equal(loaded.weight, trained.weight)
    assert not torch.equal(loaded.weight, _recipe([]).build().weight)  # the trained weights, not a fresh model
