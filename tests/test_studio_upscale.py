"""The Upscale tab, its handlers called directly: every field of the section has a control, the
tier buttons, the caption copy, the tile grid drawn over the result and the 100 % crops."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pytest
from PIL import Image, ImageColor, ImageDraw

from conftest import fresh_tiny_engine
from engine.expression.presets import load_presets
from engine.recipe import LoraSlot, Recipe
from engine.recipe_json import field_paths, set_path
from engine.recipe_upscale import UPSCALE_TIERS, UsduParams
from engine.upscale.usdu_plan import UsduSettings, job_count
from studio.bindings import BINDINGS, LORA_FIELDS
from studio.bindings_upscale import FINAL_LORAS, SUITE_OPTIONS, UPSCALE_BINDINGS
from studio.callbacks import StudioCallbacks
from studio.controls import Controls, elem_id
from studio.panels import color, expression, refine, results, upscale
from studio.preset_changes import changed_fields
from studio.session import RunView, Session
from studio.upscale_callbacks import (
    ALL_OFF,
    COPIED,
    NO_CAPTION,
    UpscaleCallbacks,
    crops,
    tiles_view,
)

LORA = "skin_detail.safetensors"


@dataclass
class Page:
    controls: Controls
    state: gr.State
    studio: StudioCallbacks
    tab: UpscaleCallbacks
    demo: gr.Blocks

    def values(self, session: Session, **extra: Any) -> dict[Any, Any]:
        """What Gradio hands a handler: the session, every bound control and the final LoRA
        rows; `extra` sets upscale fields by their path under upscale ("first__denoise")."""
        rows = self.tab.panel.final_loras
        data = {self.state: session, **self.controls.updates(session.base)}
        data.update(rows.show(session.base))
        for path, value in extra.items():
            data[self.controls["upscale." + path.replace("__", ".")]] = value
        return data


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Page:
    engine = fresh_tiny_engine(tmp_path_factory.mktemp("studio-upscale"))
    recipe = engine.default_recipe()
    with gr.Blocks() as demo:
        controls, state = Controls(), gr.State()
        labels = [(p.label, p.note) for p in load_presets()]
        expression.build_expression_tab(controls, recipe, labels, "status")
        refine.build_refine_tab(controls, recipe, [], "status")
        tab = upscale.build_upscale_tab(controls, recipe, ["4xFaceUpsharpDAT.pth"], [LORA], "ok")
        upload = color.build_color_tab(controls, recipe, engine.list_luts())
        panel = results.build_results()
        studio = StudioCallbacks(engine, controls, panel, state, upload)
        callbacks = UpscaleCallbacks(studio, tab)
        callbacks.wire()
    return Page(controls, state, studio, callbacks, demo)


def with_final_lora(recipe: Recipe) -> Recipe:
    slot = LoraSlot(file=LORA, strength_model=0.9, strength_clip=0.7, trigger="ohwx skin")
    return set_path(recipe, FINAL_LORAS, [dataclasses.asdict(slot)])


# -- the controls ----------------------------------------------------------------------------


def test_every_field_of_the_section_has_a_control_on_the_tab(page: Page) -> None:
    section = {path for path, _ in field_paths() if path.startswith("upscale.")}
    bound = {row.path for row in UPSCALE_BINDINGS}
    assert section - bound == {FINAL_LORAS}  # the stack has slot rows of its own
    assert set(UPSCALE_BINDINGS) <= set(BINDINGS)
    assert bound <= set(page.controls.by_path)
    ids = {b.elem_id for b in page.demo.blocks.values() if getattr(b, "elem_id", None)}
    assert {elem_id(path) for path in bound} <= ids
    rows = page.tab.panel.final_loras.rows
    assert len(rows) == upscale.FINAL_LORA_ROWS
    assert all(set(row) == set(LORA_FIELDS) for row in rows)
    assert {f"ps-upscale-lora-{n}-strength-model" for n in (1, upscale.FINAL_LORA_ROWS)} <= ids
    model = page.controls["upscale.first.model"]
    assert model.choices[0] == upscale.NO_MODEL and ("4xFaceUpsharpDAT.pth",) * 2 in model.choices
    options = page.controls["upscale.caption.extra_options"]
    assert options.multiselect and [v for _, v in options.choices[:3]] == list(SUITE_OPTIONS)
    assert options.choices[0][0] == "Refer to the character by name"


def test_a_recipe_shown_on_the_tab_reads_back_the_same(page: Page) -> None:
    recipe = with_final_lora(Recipe())
    for path, value in (
        ("upscale.enabled", True),
        ("upscale.caption.extra_options", ["include_camera_angle", "specify_lighting_sources"]),
        ("upscale.first.seam_fix", "half_tile_intersections"),
        ("upscale.final.tile_width", 1280),
    ):
        recipe = set_path(recipe, path, value)
    data = page.values(Session(base=recipe))
    read = page.controls.recipe(Recipe(), data, prefix="upscale.")
    assert page.tab.panel.final_loras.read(read, data) == recipe
    assert data[page.controls["upscale.caption.extra_options"]] == [
        "include_camera_angle",
        "specify_lighting_sources",
    ]  # a list, as the multiselect wants
    restored = page.studio.restored(Session(base=Recipe()), recipe, "Restored.")
    assert restored[page.tab.panel.final_loras.rows[0]["strength_clip"]] == 0.7
    changes = changed_fields(Recipe(), recipe)  # as a preset's list names them
    assert "Upscale 1 seam fix None → Half tile + intersections" in changes
    assert any(c.startswith(f"Upscale final LoRA slot 1 {LORA}") for c in changes)


# -- tiers and the caption -------------------------------------------------------------------


@pytest.mark.parametrize("tier", list(UPSCALE_TIERS))
def test_a_tier_button_sets_the_final_pass_and_its_loras(page: Page, tier: str) -> None:
    session = Session(base=with_final_lora(Recipe()))
    updates = page.tab.tier(tier)(page.values(session, final__steps=40))
    chosen, controls = UPSCALE_TIERS[tier], page.controls
    assert updates[controls["upscale.enabled"]] is True
    assert updates[controls["upscale.final.enabled"]] is True
    assert updates[controls["upscale.final.denoise"]] == chosen.denoise
    assert updates[controls["upscale.final.steps"]] == chosen.steps
    row = page.tab.panel.final_loras.rows[0]
    assert updates[row["strength_model"]] == updates[row["strength_clip"]] == chosen.lora_strength
    assert updates[row["file"]] == LORA
    assert tier.title() in updates[page.studio.panel.status]  # nothing on screen to re-run
    slot = session.base.upscale.final_loras[0]  # kept for the next Generate
    assert slot.strength_model == slot.strength_clip == chosen.lora_strength


def test_the_caption_on_screen_shows_and_becomes_the_first_pass_prompt(page: Page) -> None:
    grey = Image.new("RGB", (64, 64), "grey")
    caption = "A woman with freckles in soft window light, three-quarter view."
    shown = page.tab.refresh(view_with({"decode": [grey], "color": [grey]}, caption=caption))
    assert shown[page.tab.panel.caption] == caption
    assert shown[page.tab.panel.ab] is None and shown[page.tab.panel.tiles]["value"] is None
    updates = page.tab.use_caption(caption)
    assert updates[page.controls["upscale.first.prompt"]] == caption
    assert updates[page.studio.panel.status] == COPIED
    empty = page.tab.use_caption("")
    assert page.controls["upscale.first.prompt"] not in empty
    assert empty[page.studio.panel.status] == NO_CAPTION


# -- the tile grid and the 100 % crop ----------------------------------------------------------


def view_with(stages: dict[str, list[Any]], recipe: Recipe | None = None, **report: Any) -> Session:
    """A session showing a result with these stage images (`report`: its detections and
    caption), as the engine's RunResult would carry them."""
    recipe = recipe or Recipe()
    result = SimpleNamespace(report=SimpleNamespace(**{"detections": {}, "caption": "", **report}))
    view = RunView(recipe, recipe, stages["color"], stages, "", [], result=result)
    session = Session(base=Recipe())
    session.remember(view)
    return session


@pytest.mark.parametrize(
    ("seam_fix", "seams"),
    [("none", 0), ("band_pass", 2), ("half_tile", 4), ("half_tile_intersections", 5)],
)
def test_the_grid_has_one_box_per_job(seam_fix: str, seams: int) -> None:
    params = UsduParams(tile_width=128, tile_height=128, seam_fix=seam_fix)
    boxes = upscale.tile_boxes(params, (256, 256))
    assert [box.order for box in boxes] == list(range(1, 5 + seams))
    assert [box.seam_fix for box in boxes] == [False] * 4 + [True] * seams
    assert [box.box for box in boxes[:4]] == [
        (0, 0, 128, 128), (128, 0, 256, 128), (0, 128, 128, 256), (128, 128, 256, 256),
    ]  # fmt: skip
    settings = UsduSettings(tile_width=128, tile_height=128, seam_fix_mode=seam_fix)
    assert len(boxes) == job_count(settings, 256, 256)
    assert len(upscale.tile_boxes(params, (300, 200))) == job_count(settings, 300, 200)


def test_tiles_and_seams_are_drawn_in_their_colours() -> None:
    grey = Image.new("RGB", (256, 256), (128, 128, 128))
    params = UsduParams(tile_width=128, tile_height=128, seam_fix="half_tile")
    drawn = upscale.draw_tiles(grey, upscale.tile_boxes(params, grey.size))
    redraw, seam = ImageColor.getrgb(upscale.REDRAW_COLOUR), ImageColor.getrgb(upscale.SEAM_COLOUR)
    assert drawn.getpixel((100, 0)) == redraw  # the first tile's top edge
    assert drawn.getpixel((255, 100)) == redraw  # the second tile's right edge
    assert drawn.getpixel((100, 64 + 2)) == seam  # the first horizontal seam's top, inset
    assert drawn.getpixel((40, 40)) == (128, 128, 128)  # inside: untouched
    assert grey.getpixel((100, 0)) == (128, 128, 128)  # the stage's own image is kept


def test_the_tile_view_follows_the_last_pass_that_ran() -> None:
    small, big = Image.new("RGB", (128, 128), "grey"), Image.new("RGB", (256, 256), "grey")
    recipe = set_path(Recipe(), "upscale.first.tile_width", 128)
    recipe = set_path(recipe, "upscale.first.tile_height", 128)
    recipe = set_path(recipe, "upscale.first.seam_fix", "half_tile")
    stages = {"decode": [small], "first_upscale": [big], "first_tiles": [big], "color": [big]}
    shown = tiles_view(view_with({**stages, "first_seams": [big]}, recipe))
    assert shown is not None and shown["value"].size == (256, 256)
    assert shown["label"].startswith("Tiles of Upscale 1: 4 redraw (blue), 4 seam fix")
    final = {**stages, "final_upscale": [big], "final_tiles": [big]}
    shown = tiles_view(view_with(final, recipe))  # the final pass: 1024² tiles, no seam fix
    assert shown is not None and shown["label"].startswith("Tiles of Upscale final: 1 redraw")
    assert tiles_view(view_with({"decode": [small], "color": [small]})) is None


@pytest.mark.parametrize(
    ("size", "centre"),
    [((1024, 768), None), ((1024, 768), (10, 700)), ((1024, 768), (1000, 5)), ((300, 200), None)],
)
def test_a_crop_window_is_512_px_at_most_and_inside_the_image(
    size: tuple[int, int], centre: tuple[float, float] | None
) -> None:
    x1, y1, x2, y2 = upscale.crop_window(size, centre)
    assert (x2 - x1, y2 - y1) == (min(512, size[0]), min(512, size[1]))
    assert x1 >= 0 and y1 >= 0 and x2 <= size[0] and y2 <= size[1]
    if centre is None and size[0] > 512:
        assert (x1 + x2, y1 + y2) == size  # centred


def test_both_crops_show_the_same_window_around_the_largest_face() -> None:
    before = Image.new("RGB", (200, 150), (30, 60, 90))
    ImageDraw.Draw(before).rectangle((150, 100, 189, 139), fill="white")  # the face
    after = Image.new("RGB", (800, 600), (90, 60, 30))
    ImageDraw.Draw(after).rectangle((600, 400, 759, 559), fill="white")  # 4× larger
    faces = [
        {"label": "face", "box": [10, 10, 30, 30], "score": 0.95},  # small
        {"label": "face", "box": [150, 100, 190, 140], "score": 0.9},  # the largest
    ]
    stages = {"refine_face": [before], "final_tiles": [after], "color": [after]}
    pair = crops(view_with(stages, detections={"refine_face": [faces]}))
    assert pair is not None
    left, right = pair
    assert left.size == right.size == (512, 512)
    # The face sits near the corner, so the window stops at the image's edge: (288, 88).
    assert left.getpixel((0, 0)) == (30, 60, 90) and right.getpixel((0, 0)) == (90, 60, 30)
    assert right.getpixel((392, 392)) == (255, 255, 255)  # the face's middle in both
    assert min(left.getpixel((392, 392))) > 240
    assert crops(view_with({"decode": [before], "color": [before]})) is None


# -- the wiring --------------------------------------------------------------------------------


def test_sliders_re_run_when_let_go_and_the_buttons_on_click(page: Page) -> None:
    events: dict[str, set[str]] = {}
    for function in page.demo.fns.values():
        for block, event in function.targets:
            elem = page.demo.blocks[block].elem_id
            if elem and elem.startswith("ps-upscale-"):
                events.setdefault(elem, set()).add(event)
    assert events["ps-upscale-first-denoise"] == {"release"}
    assert events["ps-upscale-enabled"] == {"input"}
    assert events["ps-upscale-first-seam-fix"] == {"input"}
    assert events["ps-upscale-first-prompt"] == {"submit", "blur"}
    assert events["ps-upscale-caption-extra-options"] == {"input"}
    assert events["ps-upscale-lora-1-file"] == {"input"}
    assert events["ps-upscale-lora-2-strength-model"] == {"submit", "blur"}
    assert events["ps-upscale-tier-balanced"] == {"click"}
    assert events["ps-upscale-use-caption"] == {"click"}
    assert events["ps-upscale-upload"] == {"upload"}


def test_with_upscale_off_an_upload_is_shown_at_its_size(page: Page, tmp_path: Path) -> None:
    photo = tmp_path / "small.png"
    Image.new("RGB", (128, 128), (180, 140, 120)).save(photo)
    session = Session(base=page.studio.engine.default_recipe())
    updates = page.tab.edit_upload({**page.values(session), page.tab.panel.upload: str(photo)})
    assert session.last is not None and session.last.finals[0].size == (128, 128)
    assert updates[page.tab.panel.ab] is None
    updates = page.tab.upscale(page.values(session, first__denoise=0.3))
    assert updates[page.studio.panel.status] == ALL_OFF.format(n=1)
    assert updates[page.tab.panel.tiles]["value"] is None


def quick_passes(recipe: Recipe) -> Recipe:
    """Both passes on with 128 px tiles and 2 steps (CPU test time)."""
    recipe = set_path(recipe, "upscale.enabled", True)
    recipe = set_path(recipe, "upscale.final.enabled", True)
    for name in ("first", "final"):
        for field_name, value in (("tile_width", 128), ("tile_height", 128), ("steps", 2)):
            recipe = set_path(recipe, f"upscale.{name}.{field_name}", value)
    return recipe


def test_an_upload_is_upscaled_then_only_the_seam_fix_re_runs(page: Page, tmp_path: Path) -> None:
    photo = tmp_path / "small.png"
    Image.new("RGB", (128, 128), (180, 140, 120)).save(photo)
    session = Session(base=quick_passes(page.studio.engine.default_recipe()))
    captioned = page.values(session, caption__enabled=True, caption__max_new_tokens=16)
    updates = page.tab.edit_upload({**captioned, page.tab.panel.upload: str(photo)})
    assert session.last is not None and session.last.finals[0].size == (256, 256)
    tiles = updates[page.tab.panel.tiles]
    assert tiles["label"].startswith("Tiles of Upscale final: 4 redraw (blue), 0 seam fix")
    before, after = updates[page.tab.panel.ab]
    assert before.size == after.size == (256, 256)  # smaller than the 512 px window
    assert updates[page.tab.panel.caption] == session.last.result.report.caption != ""
    updates = page.tab.upscale({**captioned, page.controls["upscale.first.seam_fix"]: "half_tile"})
    report = session.last.result.report
    assert report.ran_names[0] == "first_seams" and "first_tiles" in report.cached
    assert updates[page.studio.panel.status] == "Upscaled · change 1"
    assert session.runs == 1  # re-run in place: one result, one history entry
