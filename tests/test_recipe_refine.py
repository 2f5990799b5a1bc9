"""The Refine section of the recipe: one detailer per region (schema 2), and schema-1
recipes carried over."""

from __future__ import annotations

import json

import pytest

from engine.errors import RecipeError
from engine.recipe import SCHEMA_VERSION, Recipe
from engine.recipe_json import recipe_from_json, recipe_to_json
from engine.recipe_refine import REFINE_REGIONS


def test_every_region_is_off_by_default_with_the_suite_s_settings() -> None:
    refine = Recipe().refine
    assert refine.enabled and refine.active_regions() == ()
    face = refine.face
    assert (face.denoise, face.steps, face.bbox_threshold, face.sam_threshold) == (
        0.15, 20, 0.5, 0.93,
    )  # fmt: skip
    assert (face.crop_factor, face.dilation, face.feather, face.guide_size) == (3.0, 10, 5, 512)
    assert (face.max_size, face.noise_mask, face.force_inpaint, face.cycles) == (
        1024,
        True,
        True,
        1,
    )
    assert (refine.chin.denoise, refine.chin.mask_expand, refine.chin.context_factor) == (
        1.0, 6, 1.26,
    )  # fmt: skip


def test_active_regions_run_in_the_suite_s_order() -> None:
    recipe = recipe_from_json('{"refine": {"hands": {"enabled": true}, "face": {"enabled": true}}}')
    assert recipe.refine.active_regions() == ("face", "hands")
    off = recipe_from_json('{"refine": {"enabled": false, "face": {"enabled": true}}}')
    assert off.refine.active_regions() == ()
    assert REFINE_REGIONS == ("face", "eyes", "hands", "hair", "skin")


def test_a_schema_1_recipe_moves_its_detailer_to_each_target_region() -> None:
    v1 = {
        "schema_version": 1,
        "refine": {
            "enabled": True, "targets": ["face", "hands"], "denoise": 0.3, "steps": 12,
            "crop_factor": 2.5, "feather": 8,
        },
    }  # fmt: skip
    recipe = recipe_from_json(json.dumps(v1))
    assert recipe.refine.active_regions() == ("face", "hands")
    assert (recipe.refine.hands.denoise, recipe.refine.hands.steps) == (0.3, 12)
    assert (recipe.refine.face.crop_factor, recipe.refine.face.feather) == (2.5, 8)
    assert not recipe.refine.eyes.enabled
    saved = json.loads(recipe_to_json(recipe))
    assert saved["schema_version"] == SCHEMA_VERSION and "targets" not in saved["refine"]


def test_a_schema_1_default_refine_section_loads_with_every_region_off() -> None:
    v1 = {"schema_version": 1, "refine": {"enabled": False, "targets": ["face"]}}
    assert recipe_from_json(json.dumps(v1)).refine.active_regions() == ()


def test_an_unknown_v1_target_is_named() -> None:
    v1 = {"schema_version": 1, "refine": {"enabled": True, "targets": ["elbows"]}}
    with pytest.raises(RecipeError, match=r"refine\.elbows: unknown field"):
        recipe_from_json(json.dumps(v1))
