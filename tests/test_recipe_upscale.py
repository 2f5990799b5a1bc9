"""The Upscale section: two passes and the captioner, schema 2's single pass carried over,
seed 003's tiers."""

from __future__ import annotations

import json

import pytest

from engine.errors import RecipeError
from engine.recipe import SCHEMA_VERSION, LoraSlot, Recipe
from engine.recipe_json import recipe_from_json, recipe_to_json
from engine.recipe_upscale import UPSCALE_TIERS, UpscaleParams, apply_tier


def test_defaults_follow_the_suite_and_round_trip():
    up = Recipe().upscale
    assert up.enabled is False and up.active_passes() == ()
    assert (up.first.upscale_by, up.first.steps, up.first.denoise) == (2.0, 30, 0.25)
    assert (up.final.enabled, up.final.steps, up.final.denoise) == (False, 15, 0.27)
    assert up.final.detail_amount == 0.3 and up.first.detail_amount == 0.0
    assert up.first.seam_fix_denoise == 0.0  # the pass's own denoise, as ComfyUI samples seams
    on = recipe_from_json(json.dumps({"upscale": {"enabled": True, "final": {"enabled": True}}}))
    assert on.upscale.active_passes() == ("first", "final")
    assert recipe_from_json(recipe_to_json(on)) == on


def test_a_schema_2_single_pass_moves_to_upscale_first():
    v2 = {
        "schema_version": 2,
        "upscale": {
            "enabled": True, "model": "4x-UltraSharp.pth", "denoise": 0.3, "steps": 12,
            "tile_width": 512, "seam_fix": "half_tile", "seam_fix_denoise": 1.0,
        },
    }  # fmt: skip
    recipe = recipe_from_json(json.dumps(v2))
    first = recipe.upscale.first
    assert recipe.upscale.enabled and first.enabled
    assert (first.model, first.denoise, first.steps, first.tile_width) == (
        "4x-UltraSharp.pth", 0.3, 12, 512,
    )  # fmt: skip
    assert first.seam_fix == "half_tile" and first.seam_fix_denoise == 0.0
    assert json.loads(recipe_to_json(recipe))["schema_version"] == SCHEMA_VERSION == 3


def test_bad_upscale_values_are_refused_with_their_path():
    with pytest.raises(RecipeError) as refused:
        recipe_from_json(
            json.dumps({"upscale": {"first": {"seam_fix": "zigzag", "upscale_by": 9}}})
        )
    message = str(refused.value)
    assert "upscale.first.seam_fix" in message and "upscale.first.upscale_by" in message
    with pytest.raises(RecipeError, match="upscale.first.model"):
        recipe_from_json(json.dumps({"upscale": {"first": {"model": "../../etc/passwd"}}}))


@pytest.mark.parametrize("tier", sorted(UPSCALE_TIERS))
def test_a_tier_sets_the_final_pass_and_every_final_lora(tier: str):
    slots = (LoraSlot(file="a.safetensors"), LoraSlot(file="b.safetensors", strength_clip=0.1))
    chosen = apply_tier(UpscaleParams(final_loras=slots), tier)
    expected = UPSCALE_TIERS[tier]
    assert chosen.enabled and chosen.final.enabled
    assert (chosen.final.denoise, chosen.final.steps) == (expected.denoise, expected.steps)
    assert {s.strength_model for s in chosen.final_loras} == {expected.lora_strength}
    assert {s.strength_clip for s in chosen.final_loras} == {expected.lora_strength}
    assert [s.file for s in chosen.final_loras] == ["a.safetensors", "b.safetensors"]
