"""Recipes of chapters 1 and 2: every recipe builds a seeded model of the chapter's sizes, the mask-comparison flows
split the image as documented, and the shared MNIST loop trains and reports what the notebooks print."""

from __future__ import annotations

import pytest
import torch

from flowlib.recipes import chapter_recipes
from flowlib.recipes.coupling_layers import MASK_VARIANTS, build_mask_flow, train_on_images, warmup_cosine
from flowlib.scale import sizes
from flowlib.transforms import AffineCoupling, Squeeze, channel_mask, checkerboard_mask

CHAPTERS = ("01_coupling_layers", "02_multiscale_flows")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_recipe_builds_the_same_model_twice(chapter: str) -> None:
    for name, recipe in chapter_recipes(chapter, scale="quick", device="cpu").items():
        first, second = recipe.build().state_dict(), recipe.build().state_dict()
        assert first.keys() == second.keys(), name
        assert all(torch.equal(first[key], second[key]) for key in first), name


def test_recipe_names_cover_seeds_and_variants() -> None:
    S = sizes("02_multiscale_flows", "quick")
    names = set(chapter_recipes("02_multiscale_flows", scale="quick", device="cpu"))
    expected = {f"ablation_{mixing}_seed{seed}" for mixing in S.ablation_mixings for seed in range(S.ablation_seeds)}
    assert names == expected | {"glow_lu"}
    names = set(chapter_recipes("01_coupling_layers", scale="quick", device="cpu"))
    assert {f"mask_{variant}_seed0" for variant in MASK_VARIANTS} <= names


@pytest.mark.parametrize("variant", MASK_VARIANTS)
def test_mask_flows_put_checkerboards_before_the_squeeze(variant: str) -> None:
    S = sizes("01_coupling_layers", "standard")
    flow = build_mask_flow(S, variant)
    kinds = []
    for layer in flow.transform:
        if isinstance(layer, Squeeze):
            kinds.append("squeeze")
        elif isinstance(layer, AffineCoupling):
            shape = tuple(layer.mask.shape)
            kind = "checkerboard" if shape == (1, 28, 28) else "channel"
            make_mask = checkerboard_mask if kind == "checkerboard" else channel_mask
            assert torch.equal(layer.mask, make_mask(*shape, parity=sum(k != "squeeze" for k in kinds) % 2))
            kinds.append(kind)
    couplings = S.mask_couplings
    expected = {
        "checkerboard": ["checkerboard"] * couplings,
        "channel": ["squeeze"] + ["channel"] * couplings,
        "realnvp": ["checkerboard"] * (couplings // 2) + ["squeeze"] + ["channel"] * (couplings - couplings // 2),
    }[variant]
    assert kinds == expected
    x = torch.rand(2, 1, 28, 28)
    assert flow.log_prob(x).shape == (2,)
    with torch.no_grad():
        z, _ = flow.transform(x)
        assert torch.allclose(flow.transform.inverse(z)[0], x, atol=1e-5)


def test_unknown_mask_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="variant must be one of"):
        build_mask_flow(sizes("01_coupling_layers", "quick"), "diagonal")


def test_warmup_cosine_refuses_a_schedule_without_steps() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="steps"):
        warmup_cosine(optimizer, steps=0, warmup_steps=0)


def test_train_on_images_trains_and_reports_its_run() -> None:
    S = sizes("01_coupling_layers", "quick")
    flow = build_mask_flow(S, "channel")
    before = {key: value.clone() for key, value in flow.state_dict().items()}
    metadata = train_on_images(flow, S, torch.device("cpu"), steps=3, lr=1e-3, warmup_steps=1)
    assert metadata["steps"] == 3 and metadata["images_seen"] == 3 * S.batch_size
    assert len(metadata["train_bpd_curve"]) == 3 and metadata["final_train_bpd"] == metadata["train_bpd_curve"][-1]
    assert metadata["epochs"] == round(3 * S.batch_size / S.train_subset, 2)
    assert any(not torch.equal(before[key], value) for key, value in flow.state_dict().items())


def test_chapter_7_single_logistic_ablation_differs_only_in_the_factor_out_prior() -> None:
    recipes = chapter_recipes("07_lossless_compression", scale="quick", device="cpu")
    for dataset in ("mnist", "fashion_mnist"):
        mixture = recipes[f"idf_{dataset}"].build()
        single = recipes[f"idf_single_logistic_{dataset}"].build()
        assert single.config["factor_components"] == 1
        assert {key: value for key, value in mixture.config.items() if key != "factor_components"} == {
            key: value for key, value in single.config.items() if key != "factor_components"
        }
    assert recipes["idf_mnist"].checkpoint_name("standard") == "07_idf-mnist-standard"
    assert (recipes["idf_single_logistic_mnist"].checkpoint_name("standard")
            == "07_lossless_compression-idf_single_logistic_mnist-standard")
