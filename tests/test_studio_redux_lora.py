"""The Redux tab and the LoRA stack without a browser: bindings and handlers called directly
over the shared tiny-model Engine, whose models folder holds two tiny LoRA files."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from bad_inputs import corrupt_png
from conftest import FRECKLES, SKIN, StudioPage, build_studio_page
from engine.errors import RecipeError
from engine.recipe import DOWNSAMPLING_FUNCTIONS, LoraSlot, Recipe
from engine.recipe_json import recipe_to_json, set_path
from studio import lora_rules
from studio.bindings import LORAS, MAX_LORAS, slot_path
from studio.panels import loras, redux, settings
from studio.session import LORA_ROWS_SHOWN, Session

# Every warning a handler raises off a request (gr.Warning) is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def engine(tiny_engine: Any) -> Any:
    """The shared tiny engine; its models folder holds SKIN and FRECKLES in loras/."""
    return tiny_engine


def needs_lora_api(engine: Any) -> None:
    if not all(hasattr(engine, m) for m in ("list_loras", "lora_triggers", "lora_library")):
        pytest.skip("this engine has no LoRA API (list_loras, lora_triggers, lora_library)")


@pytest.fixture
def page(engine: Any, tmp_path: Path) -> StudioPage:
    return build_studio_page(engine, tmp_path / "golden_seeds.json")


def picture(path: Path, size: tuple[int, int], colour=(180, 140, 120)) -> str:
    Image.new("RGB", size, colour).save(path)
    return str(path)


def png_bytes(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(buffer, format="PNG")
    return buffer.getvalue()


def recipe_with_loras(recipe: Recipe, slots: tuple[LoraSlot, ...]) -> Recipe:
    return set_path(recipe, LORAS, [dataclasses.asdict(slot) for slot in slots])


# -- Redux ------------------------------------------------------------------------------------


def test_redux_fields_round_trip_through_the_bindings(page: StudioPage, engine: Any) -> None:
    digest = engine.store_image(png_bytes((32, 32)))
    recipe = engine.default_recipe()
    for path, value in {
        "redux.enabled": True,
        "redux.image1": digest,
        "redux.strength1": 35,
        "redux.strength2": 15,
        "redux.mode": "concat",
        "redux.prompt_balance": 0.75,
    }.items():
        recipe = set_path(recipe, path, value)
    values = page.values(recipe)
    values[page.controls["redux.strength1"]] = 35.0  # sliders hand ints back as floats
    assert page.controls.recipe(recipe, values) == recipe
    mode = page.controls["redux.mode"]
    assert [c[1] for c in mode.choices] == ["average", "concat"]
    assert [c[0] for c in mode.choices] == ["Weighted average", "Concatenation"]
    strength = page.controls["redux.strength1"]
    assert (strength.minimum, strength.maximum) == (1, 100) and "70/30" in strength.info
    assert "0.5 is neutral" in page.controls["redux.prompt_balance"].info


def test_redux_advanced_controls_are_bound_in_closed_accordions(
    page: StudioPage, engine: Any
) -> None:
    base = engine.default_recipe()
    recipe = base
    for path, value in {
        "redux.advanced1.downsampling_factor": 3.0,
        "redux.advanced1.downsampling_function": "nearest_exact",
        "redux.advanced2.weight": 0.7,
        "redux.advanced2.image_mode": "keep_aspect",
        "redux.advanced2.attention_bias": -1.25,
    }.items():
        recipe = set_path(recipe, path, value)
    assert page.controls.recipe(base, page.values(recipe)) == recipe
    for n in redux.REFERENCES:
        accordion = page.redux.panel.advanced[n]
        assert accordion.label == "Advanced (ReduxAdvanced)" and accordion.open is False
    factor = page.controls["redux.advanced1.downsampling_factor"]
    assert (factor.minimum, factor.maximum, factor.step) == (1, 9, 0.1)
    assert "3 ≈ 81 tokens" in factor.label
    function = page.controls["redux.advanced2.downsampling_function"]
    assert [c[1] for c in function.choices] == list(DOWNSAMPLING_FUNCTIONS)
    assert ("nearest-exact", "nearest_exact") in function.choices and function.value == "area"
    mode = page.controls["redux.advanced1.image_mode"]
    assert mode.choices == [("Center crop", "center_crop"), ("Keep aspect ratio", "keep_aspect")]
    weight, bias = (page.controls[f"redux.advanced2.{f}"] for f in ("weight", "attention_bias"))
    assert (weight.minimum, weight.maximum) == (0, 1) and "weight²" in weight.label
    assert (bias.minimum, bias.maximum, bias.step, bias.value) == (-4, 2, 0.05, 0)


def test_generate_refuses_an_average_of_different_grids_and_says_what_to_do(
    page: StudioPage, tmp_path: Path
) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    page.redux.upload(1)(session, picture(tmp_path / "a.png", (64, 64)))
    page.redux.upload(2)(session, picture(tmp_path / "b.png", (64, 64), (20, 90, 200)))
    recipe = set_path(session.base, "redux.enabled", True)
    recipe = set_path(recipe, "redux.advanced1.downsampling_factor", 3.0)
    data = {**page.values(recipe, session=session), page.tab.seed_mode: settings.FIXED}
    error = list(page.studio.generate(data))[-1][page.panel.error]
    assert error["visible"] and "same downsampling factor" in error["value"]
    assert "Concatenation" in error["value"]


def test_an_upload_stores_the_reference_and_advises_on_a_small_one(
    page: StudioPage, tmp_path: Path
) -> None:
    session = Session(base=Recipe())
    box = page.redux.panel.references[1]
    updates = page.redux.upload(1)(session, picture(tmp_path / "small.png", (640, 480)))
    assert session.base.redux.image1.startswith("sha256:")
    assert updates[page.controls["redux.enabled"]] is True
    assert updates[box.preview].size == (640, 480)
    assert "640×480" in updates[box.hints] and "1024" in updates[box.hints]
    assert "square" in updates[box.hints]  # 4:3 is cropped to its centre
    big = page.redux.upload(2)(session, picture(tmp_path / "big.png", (1024, 1024)))
    assert big[page.redux.panel.references[2].hints] == ""  # meets the guidelines
    assert session.base.redux.image2.startswith("sha256:")


def test_a_corrupt_upload_keeps_the_earlier_reference(page: StudioPage, tmp_path: Path) -> None:
    session = Session(base=Recipe())
    page.redux.upload(1)(session, picture(tmp_path / "good.png", (64, 64)))
    kept = session.base.redux.image1
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(corrupt_png())
    updates = page.redux.upload(1)(session, str(corrupt))
    assert updates[page.panel.error]["visible"]
    assert "Reference 1" in updates[page.panel.error]["value"]
    assert session.base.redux.image1 == kept
    assert page.redux.panel.references[1].preview not in updates  # the preview stays


def test_clearing_the_references_switches_redux_off(page: StudioPage, tmp_path: Path) -> None:
    session = Session(base=Recipe())
    enabled = page.controls["redux.enabled"]
    page.redux.upload(1)(session, picture(tmp_path / "a.png", (64, 64)))
    page.redux.upload(2)(session, picture(tmp_path / "b.png", (64, 64), (10, 20, 30)))
    assert enabled not in page.redux.clear(1)(session)  # one is left: Redux stays on
    assert session.base.redux.image1 == "" and session.base.redux.image2
    assert page.redux.clear(2)(session)[enabled] is False


def test_start_from_reference_one_sets_the_img2img_start_image(
    page: StudioPage, tmp_path: Path
) -> None:
    session = Session(base=Recipe())
    info = page.redux.panel.start_info
    with pytest.warns(UserWarning, match="Upload reference 1 first"):
        nothing = page.redux.start_from_reference(session, 1.0)  # a toast, not a no-op
    assert "Upload reference 1 first" in nothing[info]
    assert "no reference 1 yet" in nothing[page.studio.panel.status]
    page.redux.upload(1)(session, picture(tmp_path / "ref.png", (64, 64)))
    updates = page.redux.start_from_reference(session, 1.0)
    assert session.base.source.image == session.base.redux.image1
    assert updates[page.controls["source.kind"]] is True
    assert updates[page.controls["settings.denoise"]] == redux.IDENTITY_DENOISE
    assert "Denoise" in updates[info] and updates[page.studio.source.source_preview] is not None
    kept = page.redux.start_from_reference(session, 0.6)
    assert page.controls["settings.denoise"] not in kept and "0.60" in kept[info]


def test_generate_renders_the_uploaded_references(page: StudioPage, tmp_path: Path) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    page.redux.upload(1)(session, picture(tmp_path / "a.png", (64, 64)))
    page.redux.upload(2)(session, picture(tmp_path / "b.png", (64, 64), (20, 90, 200)))
    recipe = set_path(session.base, "redux.enabled", True)
    data = {**page.values(recipe, session=session), page.tab.seed_mode: settings.FIXED}
    list(page.studio.generate(data))
    assert session.last is not None
    assert session.last.rendered.redux.image2 == session.base.redux.image2
    assert "redux" in session.last.report_line


def test_restore_shows_the_stored_references_and_the_slots(
    page: StudioPage, engine: Any, tmp_path: Path
) -> None:
    digest = engine.store_image(png_bytes((640, 640)))
    slots = [LoraSlot(file=f"x{i}.safetensors", strength_model=0.1) for i in range(6)]
    recipe = set_path(engine.default_recipe(), "redux.image2", digest)
    recipe = recipe_with_loras(recipe, tuple(slots))
    saved = tmp_path / "recipe.json"
    saved.write_text(recipe_to_json(recipe))
    session = Session(base=Recipe())
    updates = page.studio.restore(session, str(saved))
    box = page.redux.panel.references[2]
    assert updates[box.preview].size == (640, 640) and "640×640" in updates[box.hints]
    assert updates[page.redux.panel.references[1].preview] is None
    assert updates[page.controls[slot_path(5, "file")]] == "x5.safetensors"
    rows = page.loras.panel.rows
    assert updates[rows[5]]["visible"] and not updates[rows[6]]["visible"]
    assert session.lora_rows == 6 and session.base == recipe


# -- LoRA stack -------------------------------------------------------------------------------


def test_lora_slots_round_trip_through_the_bindings(page: StudioPage) -> None:
    slots = (
        LoraSlot(file=SKIN, strength_model=0.4, strength_clip=0.2, trigger="ohwx skin"),
        LoraSlot(file=FRECKLES, strength_model=0.3, enabled=False),
    )
    recipe = recipe_with_loras(Recipe(), slots)
    values = page.values(recipe)
    assert values[page.controls[slot_path(1, "file")]] == FRECKLES
    assert values[page.controls[slot_path(2, "file")]] == ""  # an empty row
    assert page.controls.recipe(Recipe(), values) == recipe
    # An emptied file box takes the slot out; the rows after it move up.
    values[page.controls[slot_path(0, "file")]] = None
    assert page.controls.recipe(Recipe(), values).prompt.loras == (slots[1],)
    values[page.controls[slot_path(1, "strength_model")]] = 9.0
    with pytest.raises(RecipeError, match=r"LoRA slot 2 · Model: .*outside"):
        page.controls.recipe(Recipe(), values)
    assert len(page.loras.panel.rows) == MAX_LORAS == page.controls.lora_rows()


def test_the_strength_sum_warns_above_one(page: StudioPage) -> None:
    low = (LoraSlot(file="a", strength_model=0.6), LoraSlot(file="b", strength_model=0.4))
    assert "1.00" in lora_rules.total_markdown(low) and "⚠" not in lora_rules.total_markdown(low)
    high = (*low, LoraSlot(file="c", strength_model=0.3))
    assert "⚠" in lora_rules.total_markdown(
        high
    ) and "keep the total ≤ 1.0" in lora_rules.total_markdown(high)
    off = (*low, LoraSlot(file="c", strength_model=0.3, enabled=False))
    assert "⚠" not in lora_rules.total_markdown(off)  # a slot that is off does not count
    recipe = recipe_with_loras(Recipe(), high)
    described = page.loras.describe(page.values(recipe))
    assert "1.30" in described[page.loras.panel.total]
    bad = {**page.values(recipe), page.controls[slot_path(0, "strength_model")]: 7.0}
    assert "LoRA slot 1" in page.loras.describe(bad)[page.loras.panel.total]


def test_the_prompt_as_encoded_puts_trigger_words_first() -> None:
    triggers = {"a.safetensors": ["from metadata"]}.get
    slots = [
        LoraSlot(file="a.safetensors"),  # no typed trigger: the file's own
        LoraSlot(file="b.safetensors", trigger="ohwx, portrait"),
        LoraSlot(file="c.safetensors", trigger="off word", enabled=False),
        LoraSlot(file="d.safetensors", trigger="ohwx"),  # already there once
    ]
    encoded = lora_rules.effective_prompt(
        "a portrait of a woman", slots, lambda n: triggers(n) or []
    )
    assert encoded == "from metadata, ohwx, a portrait of a woman"
    assert lora_rules.effective_prompt("p", [], lambda n: []) == "p"
    line = lora_rules.effective_markdown("a *b*", "ohwx, a *b*")
    assert "ohwx, a \\*b\\*" in line and lora_rules.effective_markdown("p", "p") == ""


def test_picking_a_file_fills_its_trigger_words(page: StudioPage, engine: Any) -> None:
    needs_lora_api(engine)
    assert {SKIN, FRECKLES} <= set(loras.list_loras(engine))
    trigger = page.controls[slot_path(0, "trigger")]
    assert page.loras.pick_file(0)(SKIN)[trigger] == "ohwx skin"
    assert page.loras.pick_file(0)(FRECKLES)[trigger] == "frckls"  # the most frequent tag
    assert page.loras.pick_file(0)("")[trigger] == ""
    choices = page.loras.refresh()[page.controls[slot_path(3, "file")]]["choices"]
    assert ("(none)", "") in choices and (SKIN, SKIN) in choices
    recipe = recipe_with_loras(engine.default_recipe(), (LoraSlot(file=SKIN),))
    effective = page.loras.describe(page.values(recipe))[page.loras.effective]
    assert "ohwx skin, close-up portrait" in effective  # the file's words, none typed


def test_the_library_fills_a_slot_with_its_trigger_and_strength(
    page: StudioPage, engine: Any
) -> None:
    needs_lora_api(engine)
    session = Session(base=Recipe())
    names = list(page.loras.entries)
    assert "Flux Skin Texture" in names
    described = page.loras.describe_library("Flux Skin Texture")[page.loras.panel.library_info]
    assert "flux skin texture" in described and "0.06–0.12" in described
    updates = page.loras.fill_from_library(session, "Flux Skin Texture", "6")
    assert updates[page.controls[slot_path(5, "trigger")]] == "flux skin texture"
    strength = updates[page.controls[slot_path(5, "strength_model")]]
    assert 0.06 <= strength["value"] <= 0.12 and "0.06–0.12" in strength["info"]
    assert session.lora_rows == 6 and updates[page.loras.panel.rows[5]]["visible"]
    assert (
        "Pick a LoRA"
        in page.loras.fill_from_library(session, None, "1")[page.loras.panel.library_info]
    )


def test_toggle_all_and_add_slot(page: StudioPage) -> None:
    off = page.loras.toggle_all(False)
    assert len(off) == MAX_LORAS and not any(off.values())
    session = Session(base=Recipe())
    shown = page.loras.add_row(session)
    assert session.lora_rows == LORA_ROWS_SHOWN + 1
    assert shown[page.loras.panel.rows[LORA_ROWS_SHOWN]]["visible"]
    assert not shown[page.loras.panel.rows[LORA_ROWS_SHOWN + 1]]["visible"]
    for _ in range(MAX_LORAS):
        last = page.loras.add_row(session)
    assert session.lora_rows == MAX_LORAS and not last[page.loras.panel.add]["visible"]


def test_a_turbo_preset_fills_a_slot(page: StudioPage, engine: Any) -> None:
    data = {**page.values(engine.default_recipe()), page.tab.preset: "turbo_production"}
    updates = page.settings.apply_preset(data)
    row = page.controls.lora_row(0)
    assert updates[row["file"]] == "FLUX.1-Turbo-Alpha.safetensors"
    assert updates[row["enabled"]] is False and updates[row["strength_model"]] == 0.75
    assert updates[page.controls[slot_path(1, "file")]] == ""
    # The slot survives the next build of the recipe from the page.
    rebuilt = page.controls.recipe(Recipe(), {**data, **updates})
    assert rebuilt.prompt.loras[0].file == "FLUX.1-Turbo-Alpha.safetensors"


def test_the_match_report_lists_the_lora_notes() -> None:
    notes = [
        "Size rounded to 256×256.",
        "LoRA skin_detail.safetensors (peft): 1 of 1 layers matched",
        "The LoRA strengths add up to 1.40: above 1.0 LoRAs start to fight.",
        "Prompt as encoded: ohwx skin, a portrait",
    ]
    text = lora_rules.report_markdown(notes)
    assert "Size" not in text and "1 of 1 layers matched" in text
    assert "add up to 1.40" in text and "ohwx skin, a portrait" in text
    assert text.startswith("**Last run:**") and lora_rules.report_markdown(notes[:1]) == ""


def test_generate_shows_the_match_report_under_the_stack(page: StudioPage, engine: Any) -> None:
    needs_lora_api(engine)
    slots = (
        LoraSlot(file=SKIN, strength_model=0.5, strength_clip=0.0),
        LoraSlot(file=FRECKLES, strength_model=0.3, strength_clip=0.0),
    )
    recipe = recipe_with_loras(set_path(engine.default_recipe(), "settings.steps", 2), slots)
    data = {**page.values(recipe), page.tab.seed_mode: settings.FIXED}
    last = list(page.studio.generate(data))[-1]
    report = last[page.loras.panel.report].replace("\\", "")  # Markdown escapes
    assert "Prompt as encoded: ohwx skin, frckls, close-up" in report
    assert f"{SKIN} (peft): 1 of 1 layers matched" in report
    assert f"{FRECKLES} (peft): 1 of 1 layers matched" in report


def test_a_lora_for_another_model_is_a_message_naming_it(page: StudioPage, engine: Any) -> None:
    needs_lora_api(engine)
    folder = engine.config.models.models_dir / "loras"
    name = "sdxl_style.safetensors"
    key = "lora_unet_down_blocks_0_attentions_0_proj_in"
    tensors = {
        f"{key}.lora_down.weight": torch.zeros(4, 320),
        f"{key}.lora_up.weight": torch.zeros(320, 4),
    }
    save_file(tensors, str(folder / name))
    recipe = recipe_with_loras(engine.default_recipe(), (LoraSlot(file=name),))
    data = {**page.values(recipe), page.tab.seed_mode: settings.FIXED}
    last = list(page.studio.generate(data))[-1]
    assert name in last[page.panel.error]["value"] and last[page.panel.error]["visible"]
    assert page.panel.gallery not in last  # the earlier results stay
