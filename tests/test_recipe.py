"""Recipe JSON round trip and validation messages that name the field path."""

import json

import pytest

from engine.errors import RecipeError
from engine.recipe import SCHEMA_VERSION, LoraSlot, Recipe
from engine.recipe_json import (
    field_paths,
    get_path,
    overlay,
    recipe_from_json,
    recipe_to_json,
    set_path,
)


def test_default_round_trip_is_exact():
    recipe = Recipe()
    text = recipe_to_json(recipe)
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION
    assert recipe_from_json(text) == recipe


def test_changed_values_and_lora_stack_round_trip():
    recipe = set_path(Recipe(), "color.tone.contrast", 1.25)
    recipe = set_path(recipe, "settings.seed", 2**40)
    recipe = set_path(recipe, "prompt.loras", [{"file": "skin.safetensors", "strength_model": 0.3}])
    back = recipe_from_json(recipe_to_json(recipe))
    assert back == recipe
    assert back.prompt.loras == (LoraSlot(file="skin.safetensors", strength_model=0.3),)
    assert get_path(back, "color.tone.contrast") == 1.25


def test_defaults_follow_the_suite_documentation():
    r = Recipe()
    assert (r.settings.guidance, r.settings.steps, r.settings.seed) == (1.9, 25, 0)
    assert (r.settings.max_shift, r.settings.base_shift) == (1.15, 0.5)
    assert (r.latent.upscale, r.latent.denoise, r.latent.noise_strength) == (1.25, 0.45, 0.3)
    assert (r.color.grain.power, r.color.grain.scale, r.color.grain.saturation) == (0.2, 0.4, 0.75)
    assert (r.color.tone.contrast, r.color.tone.saturation, r.color.lut.strength) == (1.1, 0.95, 50)
    assert r.settings.first_block_cache.threshold == 0.08


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"settings": {"steps": "25"}}, "settings.steps: expected an integer, got a string"),
        ({"settings": {"steps": True}}, "settings.steps: expected an integer, got a boolean"),
        ({"color": {"tone": {"contrast": 9}}}, "color.tone.contrast: 9.0 is outside the allowed"),
        ({"settings": {"sampler": "Euler a"}}, "settings.sampler: 'Euler a' is not one of"),
        ({"settings": {"stepz": 3}}, "settings.stepz: unknown field"),
        ({"prompt": {"loras": [{"file": 3}]}}, "prompt.loras[0].file: expected a string"),
        ({"color": []}, "color: expected an object, got a list"),
        ({"schema_version": 99}, "schema_version 99 is newer"),
    ],
)
def test_validation_messages_name_the_field(doc, expected):
    with pytest.raises(RecipeError) as info:
        recipe_from_json(json.dumps(doc))
    assert expected in str(info.value)


def test_all_problems_are_reported_together():
    doc = {"settings": {"steps": 0, "guidance": "high"}, "nope": 1}
    with pytest.raises(RecipeError) as info:
        recipe_from_json(json.dumps(doc))
    message = str(info.value)
    for path in ("settings.steps", "settings.guidance", "nope"):
        assert path in message


def test_not_json_and_not_object():
    with pytest.raises(RecipeError, match="not valid JSON"):
        recipe_from_json("{settings: 1")
    with pytest.raises(RecipeError, match="JSON object"):
        recipe_from_json("[1, 2]")


def test_partial_overlay_keeps_everything_else():
    base = set_path(Recipe(), "prompt.prompt", "a portrait")
    out = overlay(base, {"settings": {"steps": 10}})
    assert out.settings.steps == 10
    assert out.prompt.prompt == "a portrait"
    assert out.color == base.color


def test_float_fields_accept_integers_and_reject_nan():
    assert recipe_from_json('{"settings": {"guidance": 2}}').settings.guidance == 2.0
    with pytest.raises(RecipeError, match="settings.guidance"):
        recipe_from_json('{"settings": {"guidance": NaN}}')


def test_every_leaf_has_a_path_and_every_number_a_range():
    paths = dict(field_paths())
    assert "color.lut.strength" in paths and "settings.detail_daemon.amount" in paths
    for path, f in paths.items():
        if f.type in ("int", "float"):
            assert "bounds" in f.metadata, path
