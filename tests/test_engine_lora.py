"""LoRAs through the whole engine on tiny models: match notes, re-runs, no re-reads, triggers."""

import pytest
from test_lora import build_kohya, build_peft

from engine.engine import Engine, EngineConfig
from engine.errors import InputError, RecipeError
from engine.models.manager import ModelConfig
from engine.recipe import Recipe
from engine.recipe_json import set_path


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    loras = root / "models" / "loras"
    peft = build_peft()
    peft.metadata = {"modelspec.trigger_phrase": "flux skin texture"}
    peft.save(loras / "skin.safetensors")
    build_kohya().save(loras / "style.safetensors")
    (loras / "broken.safetensors").write_bytes(b"not a safetensors file")
    config = ModelConfig(tiny=True, device="cpu", models_dir=root / "models")
    return Engine(EngineConfig(models=config, outputs_dir=root / "o", data_dir=root / "d"))


def recipe(*slots) -> Recipe:
    r = Recipe()
    for path, value in {
        "prompt.width": 64,
        "prompt.height": 64,
        "settings.steps": 2,
        "settings.seed": 4,
        "prompt.prompt": "a portrait",
    }.items():
        r = set_path(r, path, value)
    return set_path(r, "prompt.loras", list(slots))


def pixels(result):
    return result.images[0].tobytes()


def test_listing_and_triggers(engine):
    assert engine.list_loras() == ["broken.safetensors", "skin.safetensors", "style.safetensors"]
    assert engine.lora_triggers("skin.safetensors") == ["flux skin texture"]
    assert any(item["trigger"] == "photorealistic skin" for item in engine.lora_library())


def test_lora_render_reports_matches_and_strengths_never_reload(engine):
    plain = engine.run(recipe(), save=False)
    on = engine.run(recipe({"file": "skin.safetensors", "strength_model": 0.8}), save=False)
    assert any("skin.safetensors (peft)" in n and "layers matched" in n for n in on.report.notes)
    assert "Prompt as encoded: flux skin texture, a portrait" in on.report.notes
    assert pixels(on) != pixels(plain)
    reads = dict(engine.models.loras().file_reads)
    moved = engine.run(recipe({"file": "skin.safetensors", "strength_model": 0.4}), save=False)
    assert moved.report.ran_names == ["base", "decode", "color"]  # text keeps CLIP strength
    zero = engine.run(
        recipe(
            {
                "file": "skin.safetensors",
                "strength_model": 0.0,
                "strength_clip": 0.0,
                "trigger": "a portrait",
            }
        ),
        save=False,
    )
    assert pixels(zero) == pixels(plain)
    off = engine.run(recipe({"file": "skin.safetensors", "enabled": False}), save=False)
    assert pixels(off) == pixels(plain)
    assert dict(engine.models.loras().file_reads) == reads


def test_two_slots_warn_about_the_total_strength(engine):
    result = engine.run(
        recipe(
            {"file": "skin.safetensors", "strength_model": 0.7},
            {"file": "style.safetensors", "strength_model": 0.6},
        ),
        save=False,
    )
    assert any("1.0" in n and "1.3" in n for n in result.report.notes)
    assert any("style.safetensors (kohya)" in n for n in result.report.notes)


def test_bad_lora_files_are_refused_by_name(engine):
    for name in ("broken.safetensors", "missing.safetensors"):
        with pytest.raises(InputError, match="safetensors"):
            engine.run(recipe({"file": name}), save=False)
    with pytest.raises(RecipeError, match=r"'\.\./skin\.safetensors' is not a file name"):
        recipe({"file": "../skin.safetensors"})  # refused before any render
    assert engine.run(recipe(), save=False).images  # still serving
