"""The Regions accordion's components and handlers, called directly: its settings and regions
map to `recipe.regions`, two regions with prompts and LoRAs make the expected recipe, the
mask preview draws region 1 on the left and region 2 on the right in their colours, a render
through Generate encodes each region's prompt (and caches region 1's when only region 2's
LoRA strength changes), a restored recipe or an applied preset fills the panel, a painted
mask is stored, and a painted layout without masks or a LoKr file in a region fails with the
usual message and toast while the studio keeps serving."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from PIL import Image
from test_lora_merged import lokr_only

from conftest import FRECKLES, SKIN, make_lora_folder
from engine.recipe import LoraSlot, Recipe
from engine.recipe_json import field_paths, recipe_to_json, set_path
from engine.recipe_regions import RegionParams
from engine.regions.masks import PALETTE, PREVIEW_GREY, PREVIEW_OPACITY
from studio.bindings_regions import REGIONS, REGIONS_BINDINGS
from studio.callbacks import StudioCallbacks
from studio.controls import Controls, elem_id
from studio.golden_seeds import GoldenSeeds
from studio.panels import color, prompt, regions, results, settings
from studio.presets import load_presets
from studio.region_rows import RegionRow
from studio.regions_callbacks import RegionsCallbacks
from studio.session import Session

SMALL = {"prompt.width": 64, "prompt.height": 64, "settings.steps": 2, "settings.seed": 3}


@dataclass
class Page:
    controls: Controls
    state: gr.State
    studio: StudioCallbacks
    tab: RegionsCallbacks
    presets: settings.SettingsCallbacks

    def region(self, number: int) -> RegionRow:
        return self.tab.panel.rows.regions[number - 1]

    def values(self, session: Session, changes: dict[Any, Any] | None = None) -> dict[Any, Any]:
        """What Gradio hands a handler: the session and the controls showing its base
        recipe, with `changes` (component -> value) typed over them."""
        return {self.state: session, **self.controls.updates(session.base), **(changes or {})}

    def two_regions(self, session: Session, b_model: float = 0.7) -> dict[Any, Any]:
        """Regions on; region 1 "red hair" with SKIN, region 2 "blue hair" with FRECKLES."""
        a, b = self.region(1), self.region(2)
        return self.values(session, {
            self.controls["regions.enabled"]: True,
            a.prompt: "red hair", a.loras[0]["file"]: SKIN,
            b.prompt: "blue hair", b.loras[0]["file"]: FRECKLES,
            b.loras[0]["strength_model"]: b_model,
        })  # fmt: skip


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Page:
    from engine.engine import Engine, EngineConfig
    from engine.models.manager import ModelConfig

    root = tmp_path_factory.mktemp("studio-regions")
    models = ModelConfig(models_dir=make_lora_folder(root / "models"), tiny=True, device="cpu")
    engine = Engine(EngineConfig(models=models, outputs_dir=root / "o", data_dir=root / "d"))
    recipe = engine.default_recipe()
    library = load_presets()
    with gr.Blocks():
        controls, state = Controls(), gr.State()
        source = prompt.build_prompt_tab(controls, recipe, engine)
        accordion = regions.build_regions_accordion(controls, recipe, engine.list_loras())
        tab = settings.build_settings_tab(controls, recipe, library)
        upload = color.build_color_tab(controls, recipe, engine.list_luts())
        panel = results.build_results()
        studio = StudioCallbacks(
            engine, controls, panel, state, upload, seed_mode=tab.seed_mode, source=source
        )
        callbacks = RegionsCallbacks(studio, accordion)
        callbacks.wire()
    golden = GoldenSeeds(root / "golden.json")
    presets = settings.SettingsCallbacks(controls, tab, state, library, golden, engine.list_loras)
    return Page(controls, state, studio, callbacks, presets)


def small_session(page: Page) -> Session:
    recipe = page.studio.engine.default_recipe()
    for path, value in SMALL.items():
        recipe = set_path(recipe, path, value)
    return Session(base=recipe)


def test_the_panel_binds_every_regions_field(page: Page) -> None:
    settings_paths = {path for path, _ in field_paths() if path.startswith("regions.")}
    bound = {row.path for row in REGIONS_BINDINGS}
    assert settings_paths - {REGIONS} == bound  # the regions themselves are the row group
    assert bound <= set(page.controls.by_path)
    assert elem_id("regions.blur") == "ps-regions-blur"
    assert "88 at 1216², 48 at 896², 32 at 768²" in page.controls["regions.blur"].info
    layout = page.controls["regions.layout"]
    assert isinstance(layout, gr.Radio)
    assert [label for label, _ in layout.choices] == [
        "Left | right",
        "Top | bottom",
        "Painted masks",
    ]
    rows = page.tab.panel.rows
    grouped = page.controls.components("regions.")
    assert rows.count in grouped and page.region(4).digest in grouped
    assert page.region(1).mask not in page.controls.components()  # Generate sends no picture
    assert [row.group.visible for row in rows.regions] == [True, True, False, False]
    first = page.region(1).loras[0]
    assert (first["strength_model"].value, first["strength_clip"].value) == (0.7, 0.9)
    assert (SKIN, SKIN) in first["file"].choices and (FRECKLES, FRECKLES) in first["file"].choices


def test_two_regions_with_prompts_and_loras_make_the_recipe(page: Page) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    recipe = page.controls.recipe(session.base, page.two_regions(session, b_model=0.5))
    assert recipe.regions.enabled and recipe.regions.layout == "left_right"
    assert recipe.regions.regions == (
        RegionParams(prompt="red hair", loras=(LoraSlot(file=SKIN, strength_model=0.7,
                                                        strength_clip=0.9),)),
        RegionParams(prompt="blue hair", loras=(LoraSlot(file=FRECKLES, strength_model=0.5,
                                                         strength_clip=0.9),)),
    )  # fmt: skip
    rows = page.tab.panel.rows
    three = page.controls.recipe(session.base, {**page.two_regions(session), rows.count: 3})
    assert len(three.regions.regions) == 3 and three.regions.regions[2] == RegionParams()
    one = page.controls.recipe(session.base, {**page.two_regions(session), rows.count: 1})
    assert [r.prompt for r in one.regions.regions] == ["red hair"]
    assert page.controls.recipe(session.base, page.values(session)) == session.base  # round trip
    assert page.tab.show_count(3)[page.region(3).group]["visible"] is True
    assert page.tab.show_count(3)[page.region(4).group]["visible"] is False
    assert page.tab.show_layout("painted")[page.region(2).mask]["visible"] is True


def test_a_bad_region_value_names_the_region(page: Page) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    strength = page.region(2).loras[0]["strength_model"]
    with pytest.warns(UserWarning, match="Region 2 · LoRA slot 1"):
        updates = next(page.studio.generate({**page.two_regions(session), strength: 9.0}))
    message = updates[page.studio.panel.error]["value"]
    assert "Region 2 · LoRA slot 1 · Model" in message


def expected_colour(region: int) -> tuple[int, ...]:
    a = PREVIEW_OPACITY
    return tuple(round(PREVIEW_GREY * (1 - a) + c * a) for c in PALETTE[region])


def test_the_mask_preview_shows_region_1_left_and_region_2_right(page: Page) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    panel, controls = page.tab.panel, page.controls
    off = page.tab.preview(page.values(session))
    assert off[panel.preview] is None and "Switch Regions on" in off[panel.note]
    data = {
        **page.two_regions(session),
        controls["prompt.width"]: 128,
        controls["prompt.height"]: 64,
        controls["regions.blur"]: 0,
    }
    image = page.tab.preview(data)[panel.preview]
    assert image.size == (128, 64)
    assert image.getpixel((8, 32)) == expected_colour(0)  # orange on the left
    assert image.getpixel((120, 32)) == expected_colour(1)  # blue on the right
    painted = page.tab.preview({**data, controls["regions.layout"]: "painted"})
    assert painted[panel.preview] is None
    assert "Regions 1, 2 have no painted mask" in painted[panel.note]


def test_a_painted_mask_is_stored_and_previewed(page: Page, tmp_path: Path) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    engine, a, b = page.studio.engine, page.region(1), page.region(2)
    left = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    left.paste((255, 255, 255, 255), (0, 0, 32, 64))  # the left half drawn in alpha
    left.save(tmp_path / "left.png")
    editor = {"background": None, "layers": [], "composite": str(tmp_path / "left.png")}
    digest = page.tab.store_mask(0)({a.mask: editor})[a.digest]
    stored = engine.load_image(digest)  # the store flattens transparency: kept as grey values
    assert (stored.getpixel((8, 32)), stored.getpixel((56, 32))) == ((255,) * 3, (0,) * 3)
    painted = Image.new("RGB", (64, 64), (0, 0, 0))
    painted.paste((255, 255, 255), (32, 0, 64, 64))  # white paint on the black canvas
    painted.save(tmp_path / "right.png")
    right = page.tab.store_mask(1)({b.mask: {"composite": str(tmp_path / "right.png")}})
    assert right[b.digest].startswith("sha256:")
    Image.new("RGB", (64, 64)).save(tmp_path / "black.png")
    assert page.tab.store_mask(1)({b.mask: {"composite": str(tmp_path / "black.png")}}) == {
        b.digest: ""
    }  # nothing painted: no mask
    assert page.tab.store_mask(1)({b.mask: {"composite": None}}) == {}  # still uploading
    data = {
        **page.two_regions(session),
        page.controls["regions.layout"]: "painted",
        page.controls["regions.blur"]: 0,
        page.controls["prompt.width"]: 64,
        page.controls["prompt.height"]: 64,
        a.digest: digest,
        b.digest: right[b.digest],
    }
    recipe = page.controls.recipe(session.base, data)
    assert [r.mask for r in recipe.regions.regions] == [digest, right[b.digest]]
    image = page.tab.preview(data)[page.tab.panel.preview]
    assert image.getpixel((8, 32)) == expected_colour(0)
    assert image.getpixel((56, 32)) == expected_colour(1)
    restored = page.tab.restored(recipe)
    assert restored[a.mask].size == (64, 64)  # the stored mask in the paint box
    assert restored[page.region(3).mask].getextrema() == ((0, 0),) * 3  # a black canvas
    assert page.tab.clear_mask(0)()[a.digest] == ""


def test_generate_encodes_each_region_and_caches_region_1_when_region_2_changes(
    page: Page,
) -> None:
    session = small_session(page)
    *_, done = page.studio.generate(page.two_regions(session))
    report = done[page.studio.panel.report]
    ran = report.split(" · cached")[0]
    assert "region_text_1" in ran and "region_text_2" in ran and "regions" in ran
    assert session.last.rendered.regions.regions[1].loras[0].file == FRECKLES
    *_, again = page.studio.generate(page.two_regions(session, b_model=0.4))
    report = again[page.studio.panel.report]
    ran, cached = report.split(" · cached: ")[0], report.split(" · cached: ")[1]
    assert "base" in ran and "region_text_1" not in ran
    assert {"region_text_1", "region_text_2", "regions"} <= set(cached.split(" · ")[0].split(", "))


def test_restoring_a_render_refills_the_panel(page: Page, tmp_path: Path) -> None:
    session = small_session(page)
    *_, done = page.studio.generate(page.two_regions(session, b_model=0.6))
    assert page.studio.panel.error not in done or not done[page.studio.panel.error]["visible"]
    restored = page.studio.restore(Session(base=Recipe()), session.last.files[0])
    a, b = page.region(1), page.region(2)
    assert restored[page.controls["regions.enabled"]] is True
    assert restored[page.tab.panel.rows.count] == 2
    assert (restored[a.prompt], restored[b.prompt]) == ("red hair", "blue hair")
    assert (restored[a.loras[0]["file"]], restored[b.loras[0]["file"]]) == (SKIN, FRECKLES)
    assert restored[b.loras[0]["strength_model"]] == 0.6
    assert restored[b.loras[1]["file"]] == "" and restored[b.loras[1]["strength_clip"]] == 0.9
    three = set_path(Recipe(), "regions.regions", [{"prompt": "x"}] * 3)
    three = set_path(three, "regions.layout", "top_bottom")
    (tmp_path / "three.json").write_text(recipe_to_json(three))
    shown = page.studio.restore(Session(base=Recipe()), str(tmp_path / "three.json"))
    assert shown[page.tab.panel.rows.count] == 3 and shown[page.region(3).prompt] == "x"
    assert shown[page.controls["regions.layout"]] == "top_bottom"


def test_the_two_characters_preset_switches_the_panel_on_and_keeps_the_regions(
    page: Page,
) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    data = {**page.two_regions(session), page.presets.panel.preset: "two_characters"}
    data[page.controls["regions.enabled"]] = False
    updates = page.presets.apply_preset(data)
    assert updates[page.controls["regions.enabled"]] is True
    assert updates[page.controls["regions.blur"]] == 48.0
    assert updates[page.region(1).prompt] == "red hair"  # the person's regions stay
    assert updates[page.region(2).loras[0]["file"]] == FRECKLES
    assert session.base.regions.regions[0].prompt == "red hair"


def test_region_errors_are_the_usual_message_and_toast_and_the_studio_keeps_serving(
    page: Page,
) -> None:
    session = small_session(page)
    painted = {**page.two_regions(session), page.controls["regions.layout"]: "painted"}
    with pytest.warns(UserWarning, match="Could not render. Regions 1, 2 have no painted mask"):
        *_, failed = page.studio.generate(painted)  # the toast (a warning outside a page)
    error = failed[page.studio.panel.error]
    assert error["visible"] and "Regions 1, 2 have no painted mask" in error["value"]
    assert session.last is None
    loras = page.studio.engine.config.models.models_dir / "loras"
    lokr_only().save(loras / "lokr.safetensors")
    lokr = {**page.two_regions(session), page.region(2).loras[0]["file"]: "lokr.safetensors"}
    with pytest.warns(UserWarning, match="a region takes LoRA files"):
        *_, failed = page.studio.generate(lokr)
    assert "a region takes LoRA files" in failed[page.studio.panel.error]["value"]
    *_, done = page.studio.generate(page.two_regions(session))
    assert "region_text_1" in done[page.studio.panel.report] and session.last is not None
