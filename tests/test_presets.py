"""Presets (presets/*.json), golden seeds and seed control: pure JSON and functions."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest

from conftest import FRECKLES, SKIN, StudioPage, build_studio_page
from engine.errors import StudioError
from engine.recipe import MAX_SEED, Recipe
from engine.recipe_json import recipe_from_dict
from studio.golden_seeds import GoldenSeeds, GoldenSeedsError
from studio.panels.settings import FIXED, LAST, RANDOMIZE, draw_seed, seed_for_run
from studio.preset_changes import changed_fields, field_label
from studio.presets import META_KEYS, PRESETS_DIR, find_lora, load_preset, load_presets

EXPECTED = {
    "core",
    "lite",
    "expression",
    "turbo_fast",
    "turbo_production",
    "turbo_quality",
    "turbo_premium",
    "speed_mode",
    "two_characters",
    "two_characters_fast",
}
TURBO = "FLUX.1-Turbo-Alpha.safetensors"
# seed 004's tier table: steps, true CFG, Turbo LoRA strength
TURBO_ROWS = {
    "turbo_fast": (8, 1.5, 0.8),
    "turbo_production": (10, 2.0, 0.75),
    "turbo_quality": (12, 2.5, 0.7),
    "turbo_premium": (15, 3.0, 0.6),
}


@pytest.fixture(scope="module")
def presets() -> dict[str, Recipe]:
    """Each preset laid over the default recipe."""
    library = load_presets()
    assert not library.problems
    return {p.id: p.apply(Recipe()) for p in library.presets}


# -- presets ----------------------------------------------------------------------------


def test_every_preset_file_loads_validates_and_has_a_label() -> None:
    files = sorted(PRESETS_DIR.glob("*.json"))
    assert {f.stem for f in files} == EXPECTED
    for path in files:
        preset = load_preset(path)
        assert preset.label and preset.description
        assert not set(META_KEYS) & set(preset.partial)  # metadata never reaches the recipe
        assert recipe_from_dict(preset.partial, Recipe()) == preset.apply(Recipe())
        assert preset.apply(Recipe()) != Recipe()


def test_the_readme_documents_every_preset() -> None:
    readme = (PRESETS_DIR / "README.md").read_text(encoding="utf-8")
    for preset_id in EXPECTED:
        assert f"`{preset_id}`" in readme


def test_core_is_the_suites_starting_point(presets: dict[str, Recipe]) -> None:
    core = presets["core"]
    s = core.settings
    assert (s.sampler, s.scheduler, s.steps, s.guidance, s.cfg) == ("euler", "beta", 25, 1.9, 1.0)
    assert (core.prompt.width, core.prompt.height, core.prompt.resolution) == (1024, 1024, 1.0)
    assert s.detail_daemon.enabled and 0.05 <= s.detail_daemon.amount <= 0.10
    assert s.lying_sigma.enabled and -0.06 <= s.lying_sigma.dishonesty <= -0.05
    assert (s.detail_daemon.start, s.detail_daemon.end) == (0.1, 0.9)
    assert not s.first_block_cache.enabled


def test_lite_is_core_with_fewer_steps_a_smaller_canvas_and_the_cache(
    presets: dict[str, Recipe],
) -> None:
    core, lite = presets["core"], presets["lite"]
    assert lite.settings.steps < core.settings.steps
    assert lite.prompt.width * lite.prompt.height < core.prompt.width * core.prompt.height
    fbc = lite.settings.first_block_cache
    assert fbc.enabled and fbc.threshold == 0.08
    same = ("sampler", "scheduler", "guidance", "cfg", "detail_daemon", "lying_sigma")
    for name in same:
        assert getattr(lite.settings, name) == getattr(core.settings, name)


def test_expression_is_core_plus_a_neutral_expression_editor(presets: dict[str, Recipe]) -> None:
    expression, core = presets["expression"], presets["core"]
    assert expression.settings == core.settings and expression.prompt == core.prompt
    assert load_preset(PRESETS_DIR / "expression.json").partial["expression"]
    e = expression.expression
    assert (e.sample_parts, e.crop_factor, e.smile) == ("OnlyExpression", 1.7, 0.0)
    assert e.enabled  # on, but neutral: the stage is skipped until a slider moves


@pytest.mark.parametrize("preset_id", sorted(TURBO_ROWS))
def test_turbo_rows_match_the_tier_table(presets: dict[str, Recipe], preset_id: str) -> None:
    recipe = presets[preset_id]
    steps, cfg, strength = TURBO_ROWS[preset_id]
    s = recipe.settings
    assert (s.steps, s.cfg, s.sampler, s.scheduler) == (steps, cfg, "euler", "simple")
    assert (recipe.prompt.width, recipe.prompt.height) == (1024, 1024)
    assert "blurry" in recipe.prompt.negative_prompt  # true CFG needs its negative prompt
    (lora,) = recipe.prompt.loras
    assert lora.file == TURBO
    assert lora.strength_model == lora.strength_clip == strength
    assert lora.enabled  # documented: on as written, switched off on apply when missing
    preset = load_presets().get(preset_id)
    assert "until the studio loads" not in preset.description
    assert (
        "https://huggingface.co/alimama-creative/FLUX.1-Turbo-Alpha" in preset.lora_sources[TURBO]
    )


def test_speed_mode_follows_the_two_character_workflow(presets: dict[str, Recipe]) -> None:
    recipe = presets["speed_mode"]
    s = recipe.settings
    assert (s.sampler, s.scheduler, s.steps, s.guidance) == (
        "euler_ancestral",
        "sgm_uniform",
        18,
        3.5,
    )
    assert (recipe.prompt.width, recipe.prompt.height) == (768, 768)
    assert recipe.model == Recipe().model  # files are the person's choice (README)


def test_two_character_presets_switch_regions_on_with_the_seeds_blur(
    presets: dict[str, Recipe],
) -> None:
    quality, fast = presets["two_characters"], presets["two_characters_fast"]
    assert (quality.regions.enabled, quality.regions.layout, quality.regions.blur) == (
        True,
        "left_right",
        48.0,
    )
    assert (quality.prompt.width, quality.settings.steps, quality.settings.scheduler) == (
        896,
        24,
        "simple",
    )
    assert (fast.regions.blur, fast.prompt.width, fast.settings.steps) == (32.0, 768, 18)
    assert (quality.regions.text_tokens, fast.regions.text_tokens) == (0, 128)
    assert quality.regions.regions == Recipe().regions.regions  # the person's regions stay


def sampler_setup(recipe: Recipe) -> tuple:
    """What every variant and tier sets (presets/README.md)."""
    s = recipe.settings
    switches = (s.detail_daemon.enabled, s.lying_sigma.enabled, s.first_block_cache.enabled)
    size = (recipe.prompt.width, recipe.prompt.height, recipe.prompt.resolution)
    return (s.sampler, s.scheduler, s.steps, s.guidance, s.cfg, s.max_shift, s.base_shift,
            switches, size)  # fmt: skip


def test_a_preset_sets_the_same_setup_whatever_was_applied_before() -> None:
    library = load_presets()
    for first in library.presets:
        for second in library.presets:
            alone = sampler_setup(second.apply(Recipe()))
            after = sampler_setup(second.apply(first.apply(Recipe())))
            assert after == alone, (first.id, second.id)


def test_a_preset_keeps_what_it_does_not_name() -> None:
    preset = load_presets().get("turbo_production")
    mine = recipe_from_dict({"prompt": {"prompt": "my words"}, "settings": {"seed": 99}})
    applied = preset.apply(mine)
    assert (applied.prompt.prompt, applied.settings.seed) == ("my words", 99)
    assert applied.color == mine.color and applied.latent == mine.latent


def test_the_change_list_names_every_field_as_the_page_does() -> None:
    applied = load_presets().get("turbo_production").apply(Recipe())
    changes = changed_fields(Recipe(), applied)
    assert changes == [
        "Negative prompt set",
        f"LoRA slot 1 {TURBO} (model 0.75, CLIP 0.75, on)",
        "Steps 25 → 10",
        "Flux guidance (distilled) 1.9 → 3.5",
        "True CFG scale 1 → 2",
    ]
    mine = recipe_from_dict({"settings": {"seed": 2**53 - 1}, "source": {"kind": "img2img"}})
    assert changed_fields(Recipe(), mine) == [
        "Start from this image (img2img) off → on",
        f"Seed 0 → {2**53 - 1}",  # never 9.0072e+15
    ]


def test_field_labels_are_unambiguous_inside_a_group() -> None:
    assert field_label("settings.first_block_cache.start") == "First-block cache start"
    assert field_label("settings.detail_daemon.bias") == "Detail Daemon bias"
    assert field_label("settings.detail_daemon.amount") == "Detail amount"
    assert field_label("settings.lying_sigma.dishonesty") == "Lying Sigma dishonesty factor"
    assert field_label("color.tone.saturation") == "Saturation"
    assert field_label("expression.enabled") == "Expression editor"
    assert field_label("upscale.tile_width") == "Tile width"  # no control: in words


def test_a_lora_file_is_found_by_name_or_alone_in_a_subfolder() -> None:
    assert find_lora(TURBO, [SKIN, TURBO]) == TURBO
    assert find_lora(TURBO, ["turbo/flux.1-turbo-alpha.safetensors"]) == (
        "turbo/flux.1-turbo-alpha.safetensors"
    )
    assert find_lora(TURBO, [f"a/{TURBO}", f"b/{TURBO}"]) == ""  # which one? neither
    assert find_lora(TURBO, [SKIN]) == ""


def test_every_preset_renders_on_the_tiny_engine(tiny_engine: Any) -> None:
    """At 64² and 3 steps so that it is quick."""
    quick = {"prompt": {"width": 64, "height": 64}, "settings": {"steps": 3}}
    files = tiny_engine.list_loras()
    for preset in load_presets().presets:
        applied = preset.apply_checked(tiny_engine.default_recipe(), files)
        recipe = recipe_from_dict(quick, applied.recipe)
        result = tiny_engine.run(recipe, save=False)
        assert result.images[0].size == (64, 64), preset.id


def test_bad_preset_files_are_reported_by_name_and_skipped(tmp_path: Path) -> None:
    (tmp_path / "good.json").write_text(json.dumps({"label": "Good", "settings": {"steps": 9}}))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "nolabel.json").write_text(json.dumps({"settings": {"steps": 9}}))
    (tmp_path / "range.json").write_text(json.dumps({"label": "R", "settings": {"steps": 999}}))
    (tmp_path / "unknown.json").write_text(json.dumps({"label": "U", "settings": {"stepz": 1}}))
    library = load_presets(tmp_path)
    assert [p.id for p in library.presets] == ["good"]
    text = "\n".join(library.problems)
    assert "broken.json is not valid JSON" in text
    assert "'nolabel'" in text and "label" in text
    assert "'range'" in text and "settings.steps" in text
    assert "'unknown'" in text and "stepz" in text
    with pytest.raises(StudioError, match="no preset"):
        library.get("missing")


# -- the Settings tab's preset handlers ----------------------------------------------------

MISSING_TURBO = (
    "- ⚠ LoRA slot 1 stays off: FLUX.1-Turbo-Alpha.safetensors is not in the loras/ folder "
    "of the models folder. Put FLUX.1-Turbo-Alpha.safetensors (from "
    "https://huggingface.co/alimama-creative/FLUX.1-Turbo-Alpha, where the file is called "
    "diffusion\\_pytorch\\_model.safetensors) in \\<models\\>/loras and apply the preset again."
)


@pytest.fixture
def page(tiny_engine: Any, tmp_path: Path) -> StudioPage:
    """The studio's tabs over the tiny engine, whose loras/ holds SKIN and FRECKLES only."""
    built = build_studio_page(tiny_engine, tmp_path / "golden_seeds.json")
    settings = dataclasses.replace(built.settings, lora_files=tiny_engine.list_loras)
    return dataclasses.replace(built, settings=settings)


def apply(page: StudioPage, preset_id: str, recipe: Recipe) -> tuple[dict, Recipe]:
    """Apply a preset over `recipe` on the page: the updates, and the session's new recipe."""
    data = page.values(recipe, {page.tab.preset: preset_id})
    updates = page.settings.apply_preset(data)
    return updates, data[page.state].base


def test_applying_says_every_change_by_section_with_no_more(page: StudioPage) -> None:
    core = load_presets().get("core").apply(Recipe())
    updates, applied = apply(page, "turbo_production", core)
    message = updates[page.tab.message]
    assert message == "\n".join(
        [
            "Applied **Turbo · production (10 steps, CFG 2.0)**, 8 changes:",
            "- **Size / LoRA / Prompt:** Negative prompt set, LoRA slot 1 "
            "FLUX.1-Turbo-Alpha.safetensors (model 0.75, CLIP 0.75, off)",
            "- **Settings:** Scheduler beta → simple, Steps 25 → 10, Flux guidance (distilled) "
            "1.9 → 3.5, True CFG scale 1 → 2, Detail Daemon on → off, Lying Sigma on → off",
            MISSING_TURBO,
        ]
    )
    assert "more" not in message and len(changed_fields(core, applied)) == 8
    row = page.controls.lora_row(0)
    assert updates[row["file"]] == TURBO and updates[row["enabled"]] is False
    assert not applied.prompt.loras[0].enabled  # missing: off in the recipe, renders work
    again, same = apply(page, "turbo_production", applied)
    assert same == applied
    assert again[page.tab.message] == "\n".join(
        [
            "Applied **Turbo · production (10 steps, CFG 2.0)**: nothing changed, the tabs "
            "already hold its values.",
            MISSING_TURBO,
        ]
    )


def test_a_preset_lora_that_is_in_the_loras_folder_is_switched_on(
    page: StudioPage, tmp_path: Path
) -> None:
    (tmp_path / "presets").mkdir()
    preset = {
        "label": "Skin and freckles",
        "lora_sources": {"gone.safetensors": "the LoRA library"},
        "prompt": {
            "loras": [
                {"file": SKIN, "strength_model": 0.4, "strength_clip": 0.3},
                {"file": "gone.safetensors", "strength_model": 0.2},
                {"file": FRECKLES, "strength_model": 0.1, "enabled": False},
            ]
        },
    }
    (tmp_path / "presets" / "skin.json").write_text(json.dumps(preset))
    page.settings.presets = load_presets(tmp_path / "presets")
    updates, applied = apply(page, "skin", Recipe())
    assert [(s.file, s.enabled) for s in applied.prompt.loras] == [
        (SKIN, True),
        ("gone.safetensors", False),  # not in loras/: switched off
        (FRECKLES, False),  # written off: left off, though the file is there
    ]
    assert [updates[page.controls.lora_row(r)["enabled"]] for r in range(3)] == [
        True,
        False,
        False,
    ]
    assert updates[page.tab.message] == "\n".join(
        [
            "Applied **Skin and freckles**, 3 changes:",
            "- **Size / LoRA / Prompt:** "
            "LoRA slot 1 skin\\_detail.safetensors (model 0.4, CLIP 0.3, on), "
            "LoRA slot 2 gone.safetensors (model 0.2, CLIP 1, off), "
            "LoRA slot 3 freckles.safetensors (model 0.1, CLIP 1, off)",
            "- LoRA slot 1 is on: skin\\_detail.safetensors is in \\<models\\>/loras.",
            "- ⚠ LoRA slot 2 stays off: gone.safetensors is not in the loras/ folder of the "
            "models folder. Put gone.safetensors (from the LoRA library) in \\<models\\>/loras "
            "and apply the preset again.",
        ]
    )


def test_a_turbo_preset_switches_its_lora_on_once_the_file_is_there(page: StudioPage) -> None:
    files = [SKIN, TURBO]
    settings = dataclasses.replace(page.settings, lora_files=lambda: files)
    data = page.values(Recipe(), {page.tab.preset: "turbo_fast"})
    updates = settings.apply_preset(data)
    assert data[page.state].base.prompt.loras[0].enabled
    assert updates[page.controls.lora_row(0)["enabled"]] is True
    message = updates[page.tab.message]
    assert f"LoRA slot 1 {TURBO} (model 0.8, CLIP 0.8, on)" in message
    assert message.endswith(f"\n- LoRA slot 1 is on: {TURBO} is in \\<models\\>/loras.")
    assert "⚠" not in message


def test_the_description_lists_what_the_preset_sets(page: StudioPage) -> None:
    text = page.settings.describe_preset("speed_mode")[page.tab.preset_info]
    description = load_presets().get("speed_mode").description.replace("_", "\\_")
    assert text == (
        f"{description}\n\n**Sets:**\n"
        "- **Size / LoRA / Prompt:** Width 768, Height 768, Resolution multiplier 1\n"
        "- **Settings:** Sampler euler\\_ancestral, Scheduler sgm\\_uniform, Steps 18, "
        "Flux guidance (distilled) 3.5, True CFG scale 1, Max shift 1.15, Base shift 0.5, "
        "Detail Daemon off, Lying Sigma off, First-block cache off"
    )
    turbo = page.settings.describe_preset("turbo_quality")[page.tab.preset_info]
    assert "Negative prompt (its own text)" in turbo and "Steps 12" in turbo
    assert f"LoRA slot 1 {TURBO} (model 0.7, CLIP 0.7, on)" in turbo
    assert turbo.endswith(
        f"- ⚠ {TURBO} is not in the loras/ folder of the models folder, so applying leaves "
        f"LoRA slot 1 off. Put {TURBO} (from https://huggingface.co/alimama-creative/"
        "FLUX.1-Turbo-Alpha, where the file is called diffusion\\_pytorch\\_model.safetensors) "
        "in \\<models\\>/loras first."
    )
    assert "no preset" in page.settings.describe_preset("nope")[page.tab.preset_info]
    assert page.settings.describe_preset(None)[page.tab.preset_info] == ""


def test_saving_a_golden_seed_pops_a_toast(page: StudioPage, capsys: Any) -> None:
    # Outside a running page gr.Info prints and gr.Warning warns (gradio.helpers.log_message).
    saved = page.settings.save_golden("close crop", "", 4711.0)
    assert saved[page.tab.message] == "Saved golden seed **close crop** = 4711."
    assert capsys.readouterr().out.strip() == "Saved golden seed close crop = 4711."
    with pytest.warns(UserWarning, match=r"^Golden seed not saved\. .*needs a name"):
        refused = page.settings.save_golden("", "", 1)
    assert refused[page.tab.message].startswith("**Not saved.**")


# -- golden seeds -----------------------------------------------------------------------


def test_golden_seeds_save_list_delete_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "data" / "golden_seeds.json"
    store = GoldenSeeds(path)
    assert store.list_seeds() == []
    store.save("tight crop", 4711, "frames the chin well")
    store.save("Wide", MAX_SEED)
    store.save("tight crop", 42.0, "updated")  # same name: replaced, float from a number box
    names = [(g.name, g.seed, g.note) for g in store.list_seeds()]
    assert names == [("tight crop", 42, "updated"), ("Wide", MAX_SEED, "")]

    restarted = GoldenSeeds(path)
    assert restarted.list_seeds() == store.list_seeds()
    assert restarted.get("Wide").seed == MAX_SEED
    restarted.delete("Wide")
    assert [g.name for g in GoldenSeeds(path).list_seeds()] == ["tight crop"]
    with pytest.raises(GoldenSeedsError, match="no golden seed"):
        restarted.delete("Wide")
    assert sorted(p.name for p in path.parent.iterdir()) == ["golden_seeds.json"]  # no temp
    assert json.loads(path.read_text())["seeds"][0]["name"] == "tight crop"


@pytest.mark.parametrize(
    ("name", "seed", "message"),
    [("", 1, "needs a name"), ("x", -1, "whole number"), ("x", MAX_SEED + 1, "whole number"),
     ("x", 1.5, "whole number"), ("x", True, "whole number"), ("x" * 81, 1, "80")],
)  # fmt: skip
def test_golden_seed_requests_are_checked(
    tmp_path: Path, name: str, seed: object, message: str
) -> None:
    with pytest.raises(GoldenSeedsError, match=message):
        GoldenSeeds(tmp_path / "g.json").save(name, seed)


@pytest.mark.parametrize(
    "content",
    ["{not json", '["a list"]', '{"seeds": [{"name": "x", "seed": "many"}]}', "\udcff"],
)
def test_a_bad_golden_seeds_file_gives_a_clear_message_and_is_kept(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "golden_seeds.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    store = GoldenSeeds(path)
    with pytest.raises(GoldenSeedsError, match=r"golden_seeds\.json .*(Fix it|move it away)"):
        store.list_seeds()
    with pytest.raises(GoldenSeedsError):
        store.save("new", 1)
    assert path.read_bytes() == content.encode("utf-8", "surrogateescape")  # nothing lost


# -- seed control -----------------------------------------------------------------------


class Scripted(random.Random):
    """A generator that returns the given numbers in order."""

    def __init__(self, values: list[int]) -> None:
        super().__init__(0)
        self.values = list(values)

    def randint(self, a: int, b: int) -> int:
        return self.values.pop(0)


def test_randomize_draws_a_new_seed_in_the_browser_safe_range() -> None:
    rng = random.Random(1)
    seeds = [seed_for_run(RANDOMIZE, 5, None, rng) for _ in range(200)]
    assert all(0 <= s <= MAX_SEED == 2**53 - 1 for s in seeds)
    assert 5 not in seeds and len(set(seeds)) == len(seeds)
    assert seed_for_run(RANDOMIZE, 7, 3, Scripted([7, 7, 11])) == 11  # never the same one
    assert draw_seed(None, Scripted([0])) == 0


def test_fixed_keeps_the_seed_and_use_last_takes_the_previous_runs() -> None:
    assert seed_for_run(FIXED, 123, 456) == 123
    assert seed_for_run(LAST, 123, 456) == 456
    assert seed_for_run(LAST, 123, None) == 123  # no run yet: the box's seed
