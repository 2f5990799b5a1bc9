"""The studio as programs see it: gradio_client against the in-process server, and the
bindings table that the page is built from."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from bad_inputs import corrupt_png, png_claiming
from conftest import StudioPage, build_studio_page
from engine.fields import bounds_of, choices_of
from engine.recipe import SAMPLERS, SCHEDULERS, Recipe
from engine.recipe_json import field_paths, recipe_from_json, recipe_to_json, set_path
from studio.bindings import BINDINGS, LORA_FIELDS, MAX_LORAS, slot_path
from studio.controls import Controls, elem_id
from studio.panels import settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def client(studio_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Client:
    downloads = tmp_path_factory.mktemp("downloads")
    return Client(studio_server.url, verbose=False, download_files=str(downloads))


def ran_stages(report: dict) -> list[str]:
    """Stage names from report["ran"] (entries are [name, ms] pairs or {"stage": ...})."""
    names = []
    for entry in report["ran"]:
        if isinstance(entry, dict):
            names.append(entry.get("stage") or entry.get("name"))
        elif isinstance(entry, (list, tuple)):
            names.append(entry[0])
        else:
            names.append(entry)
    return names


def render(client: Client, recipe: Recipe | str) -> tuple[list[str], dict]:
    text = recipe if isinstance(recipe, str) else recipe_to_json(recipe)
    files, report = client.predict(text, api_name="/render")
    paths = [f if isinstance(f, str) else f["path"] for f in files]
    return paths, report


def png_bytes(size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


# -- API --------------------------------------------------------------------------------


def test_view_api_lists_only_the_public_endpoints(client: Client) -> None:
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {"/render", "/upload_image"}
    assert not api["unnamed_endpoints"]


def test_render_returns_pngs_carrying_their_recipe(client: Client, tiny_engine: Any) -> None:
    recipe = set_path(tiny_engine.default_recipe(), "settings.seed", 1234)
    paths, report = render(client, recipe)
    assert paths and all(p.endswith(".png") for p in paths)
    assert len(paths) == recipe.prompt.batch_size
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG"
        restored = tiny_engine.read_recipe_file(Path(path))
        assert restored.settings.seed == 1234
        assert restored.prompt.prompt == recipe.prompt.prompt
    assert "base" in ran_stages(report) or "base" in report.get("cached", [])
    assert report["line"].startswith("ran:")
    json.dumps(report)  # plain JSON all the way down


def test_colour_only_change_runs_only_the_colour_stage(client: Client, tiny_engine: Any) -> None:
    recipe = set_path(tiny_engine.default_recipe(), "settings.seed", 77)
    render(client, recipe)
    _, report = render(client, set_path(recipe, "color.tone.contrast", 1.42))
    assert ran_stages(report) == ["color"]
    assert "base" in report["cached"]


def test_partial_recipe_is_laid_over_the_default(client: Client, tiny_engine: Any) -> None:
    paths, _ = render(client, json.dumps({"settings": {"seed": 5}}))
    restored = tiny_engine.read_recipe_file(Path(paths[0]))
    assert restored.settings.seed == 5
    assert restored.prompt.width == tiny_engine.default_recipe().prompt.width


def test_bad_recipe_gives_a_clear_error_and_the_server_keeps_serving(
    client: Client, tiny_engine: Any
) -> None:
    with pytest.raises(Exception, match=r"settings\.steps.*integer"):
        render(client, json.dumps({"settings": {"steps": "many"}}))
    with pytest.raises(Exception, match="not valid JSON"):
        render(client, "{not json")
    paths, _ = render(client, tiny_engine.default_recipe())
    assert paths


def test_corrupt_upload_gives_a_clear_message(client: Client, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(corrupt_png())
    with pytest.raises(Exception, match=r"(?i)image"):
        client.predict(handle_file(str(corrupt)), api_name="/upload_image")


def test_huge_header_upload_is_refused_with_a_message(client: Client, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(50000, 50000))
    with pytest.raises(Exception, match=r"50000|pixels|large"):
        client.predict(handle_file(str(bomb)), api_name="/upload_image")


def test_uploaded_image_grades_without_diffusion(client: Client, tmp_path: Path) -> None:
    picture = tmp_path / "picture.png"
    picture.write_bytes(png_bytes((64, 48)))
    digest = client.predict(handle_file(str(picture)), api_name="/upload_image")
    recipe = {"source": {"kind": "image", "image": digest}, "color": {"tone": {"contrast": 1.3}}}
    paths, report = render(client, json.dumps(recipe))
    assert "base" not in ran_stages(report) and "color" in ran_stages(report)
    with Image.open(paths[0]) as image:
        assert image.size == (64, 48)


# -- bindings ---------------------------------------------------------------------------


def test_bindings_name_real_fields_and_take_ranges_from_the_recipe() -> None:
    fields = dict(field_paths())
    assert len({b.path for b in BINDINGS}) == len(BINDINGS)
    with gr.Blocks():
        controls = Controls()
        for row in BINDINGS:
            component = controls.add(row.path, Recipe())
            bounds = bounds_of(fields[row.path])
            if isinstance(component, gr.Slider):
                assert (component.minimum, component.maximum, component.step) == (
                    bounds.lo,
                    bounds.hi,
                    bounds.step,
                )
    scheduler = controls["settings.scheduler"]
    assert [c[1] for c in scheduler.choices] == list(SCHEDULERS)
    assert choices_of(fields["settings.scheduler"]) == SCHEDULERS
    assert "not CFG" in controls["settings.guidance"].info


def test_bindings_round_trip_a_recipe_through_component_values() -> None:
    changed = Recipe()
    for path, value in {
        "prompt.prompt": "a test",
        "prompt.width": 512,
        "settings.scheduler": "karras",
        "settings.seed": 2**53 - 1,
        "color.tone.contrast": 1.37,
        "color.grain.enabled": True,
        "color.lut.color_space": "log",
        "source.kind": "img2img",
        "prompt.negative_prompt": "blurry",
        "settings.cfg": 2.0,
        "settings.detail_daemon.smooth": False,
        "settings.first_block_cache.max_consecutive_hits": 3,
        "latent.upscale": 1.5,
        "latent.noise_seed": 2**53 - 1,
        "redux.enabled": True,
        "redux.strength2": 45,
        "redux.mode": "concat",
        "redux.prompt_balance": 0.8,
    }.items():
        changed = set_path(changed, path, value)
    with gr.Blocks():
        controls = Controls()
        for row in BINDINGS:
            controls.add(row.path, Recipe())
    values: dict[Any, Any] = controls.updates(changed)
    # Sliders hand ints back as floats; the bindings coerce them to the field type.
    values[controls["prompt.width"]] = 512.0
    assert values[controls["source.kind"]] is True  # a switch shows img2img as ticked
    digest = "sha256:" + "0" * 64
    stored = set_path(Recipe(), "redux.image1", digest)  # a field no control shows is kept
    rebuilt = controls.recipe(stored, values)
    assert rebuilt == set_path(changed, "redux.image1", digest)
    colour_only = controls.recipe(Recipe(), values, prefix="color.")
    assert colour_only.color == changed.color and colour_only.prompt == Recipe().prompt


def test_bad_component_value_names_the_control() -> None:
    with gr.Blocks():
        controls = Controls()
        steps = controls.add("settings.steps", Recipe())
    with pytest.raises(Exception, match=r"Steps: .*outside"):
        controls.recipe(Recipe(), {steps: 500})


def test_studio_never_imports_torch() -> None:
    code = "import sys, studio, studio.layout; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_app_parses_its_flags() -> None:
    import app

    args = app.parse_args(["--tiny", "--auth", "a:b:c", "--auth", "d:e", "--port", "9000"])
    assert args.tiny and args.port == 9000 and args.listen == "127.0.0.1"
    assert app.parse_auth(args.auth) == [("a", "b:c"), ("d", "e")]
    assert recipe_from_json(recipe_to_json(Recipe())) == Recipe()


def test_without_weights_generate_is_off_and_colour_still_works(tmp_path: Path) -> None:
    import studio
    from engine.engine import Engine, EngineConfig
    from engine.models.manager import ModelConfig

    models = ModelConfig(models_dir=None, diffusers_dir=None, repo_id=None, tiny=False)
    engine = Engine(
        EngineConfig(models=models, outputs_dir=tmp_path / "o", data_dir=tmp_path / "d")
    )
    demo = studio.build_ui(engine)
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    assert by_id["ps-generate"].interactive is False
    assert engine.models_status() in by_id["ps-banner"].value
    assert by_id["ps-banner"].visible
    digest = engine.store_image(png_bytes((32, 32)))
    recipe = set_path(set_path(Recipe(), "source.kind", "image"), "source.image", digest)
    assert engine.run(recipe, save=False).images[0].size == (32, 32)


def test_every_bound_field_is_on_the_page_in_the_suite_s_tab_order(tiny_engine: Any) -> None:
    import studio

    with gr.Blocks():
        controls = Controls()
        sampler = controls.add("settings.sampler", Recipe())
    assert [c[1] for c in sampler.choices] == list(SAMPLERS)
    demo = studio.build_ui(tiny_engine)
    ids = {b.elem_id for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    assert {elem_id(b.path) for b in BINDINGS} <= ids
    assert {"ps-tab-latent", "ps-preset", "ps-seed-mode", "ps-golden-pick"} <= ids
    slots = {elem_id(slot_path(row, name)) for row in range(MAX_LORAS) for name in LORA_FIELDS}
    assert slots <= ids and "ps-lora-16-strength-model" in slots
    assert {"ps-redux-upload-1", "ps-redux-upload-2", "ps-redux-start", "ps-lora-all"} <= ids
    assert {"ps-lora-total", "ps-lora-report", "ps-effective-prompt", "ps-lora-add"} <= ids
    tabs = [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert tabs == [
        "Redux blend", "Size / LoRA / Prompt", "Settings", "Latent", "Expression", "Refine",
        "Upscale", "Color",
    ]  # fmt: skip
    assert {"ps-expr-preset", "ps-expr-apply", "ps-expression-ab", "ps-expr-upload"} <= ids
    groups = ("face", "eyes", "hands", "hair", "skin", "chin", "identity", "models")
    assert {"ps-tab-refine", *(f"ps-refine-{group}" for group in groups)} <= ids
    assert {"ps-refine-reference-upload", "ps-refine-reference-img", "ps-refine-boxes"} <= ids
    assert {"ps-refine-ab", "ps-refine-upload", "ps-refine-face-detector"} <= ids


def test_two_references_render_through_the_api(
    client: Client, tiny_engine: Any, tmp_path: Path
) -> None:
    digests = []
    for n, colour in ((1, (200, 150, 120)), (2, (60, 90, 160))):
        path = tmp_path / f"reference-{n}.png"
        Image.new("RGB", (48, 48), colour).save(path)
        digests.append(client.predict(handle_file(str(path)), api_name="/upload_image"))
    recipe = {
        "prompt": {"width": 64, "height": 64},
        "settings": {"steps": 2},
        "redux": {"enabled": True, "image1": digests[0], "image2": digests[1], "strength1": 80},
    }
    paths, report = render(client, json.dumps(recipe))
    assert {"vision", "redux", "base"} <= set(ran_stages(report))
    restored = tiny_engine.read_recipe_file(Path(paths[0])).redux
    assert (restored.image1, restored.image2, restored.strength1) == (*digests, 80)


# -- Settings tab handlers ----------------------------------------------------------------


@pytest.fixture
def page(tiny_engine: Any, tmp_path: Path) -> StudioPage:
    return build_studio_page(tiny_engine, tmp_path / "golden_seeds.json")


def test_apply_preset_updates_every_field_and_keeps_the_rest(page: StudioPage) -> None:
    mine = set_path(set_path(Recipe(), "prompt.prompt", "my words"), "settings.seed", 31)
    data = page.values(mine, {page.tab.preset: "turbo_production"})
    updates = page.settings.apply_preset(data)
    c = page.controls
    assert updates[c["settings.steps"]] == 10 and updates[c["settings.cfg"]] == 2.0
    assert updates[c["settings.scheduler"]] == "simple"
    assert updates[c["prompt.prompt"]] == "my words" and updates[c["settings.seed"]] == 31
    assert "blurry" in updates[c["prompt.negative_prompt"]]
    assert "Steps 25 → 10" in updates[page.tab.message]
    session = data[page.state]
    assert session.base.prompt.loras[0].file == "FLUX.1-Turbo-Alpha.safetensors"
    assert "Pick a preset" in page.settings.apply_preset(page.values(mine))[page.tab.message]
    bad = page.values(mine, {page.tab.preset: "turbo_fast", c["settings.steps"]: 999})
    assert "not applied" in page.settings.apply_preset(bad)[page.tab.message]


def test_golden_seed_handlers_save_pick_and_delete(page: StudioPage) -> None:
    cb, tab, seed = page.settings, page.tab, page.controls["settings.seed"]
    saved = cb.save_golden("close crop", "frames the chin", 4711.0)
    assert saved[tab.golden]["choices"] == [("close crop · 4711", "close crop")]
    picked = cb.pick_golden("close crop")
    assert picked[seed] == 4711 and picked[tab.seed_mode] == settings.FIXED
    assert picked[tab.golden_note] == "frames the chin"
    assert "Not saved" in cb.save_golden("", "", 1)[tab.message]
    assert cb.delete_golden("close crop")[tab.golden]["choices"] == []
    assert "no golden seed" in cb.pick_golden("close crop")[tab.message]
    cb.golden.path.write_text("{broken")
    assert "not valid JSON" in cb.refresh_golden()[tab.message]
    fresh = cb.new_fixed_seed(5)
    assert fresh[seed] != 5 and fresh[tab.seed_mode] == settings.FIXED


def test_generate_draws_shows_and_reuses_seeds(page: StudioPage, tiny_engine: Any) -> None:
    recipe = tiny_engine.default_recipe()
    seed_box = page.controls["settings.seed"]
    data = page.values(set_path(recipe, "settings.seed", 5), {page.tab.seed_mode: "randomize"})
    session = data[page.state]
    first = list(page.studio.generate(data))
    drawn = first[0][seed_box]
    assert drawn != 5 and session.last.rendered.settings.seed == drawn == session.last_seed
    again = {**data, seed_box: 1, page.tab.seed_mode: "last"}
    assert list(page.studio.generate(again))[0][seed_box] == drawn
    assert session.last.rendered.settings.seed == drawn
    fixed = {**data, seed_box: 1, page.tab.seed_mode: "fixed"}
    list(page.studio.generate(fixed))
    assert session.last.rendered.settings.seed == 1


@pytest.mark.filterwarnings("ignore:.*start image:UserWarning")  # gr.Warning off a request
def test_img2img_needs_a_start_image_and_an_upload_switches_it_on(
    page: StudioPage, tiny_engine: Any, tmp_path: Path
) -> None:
    switch = page.controls["source.kind"]
    data = page.values(tiny_engine.default_recipe(), {switch: True})
    updates = list(page.studio.generate(data))[-1]
    assert "no start image" in updates[page.studio.panel.error]["value"]
    picture = tmp_path / "start.png"
    picture.write_bytes(png_bytes((64, 64)))
    session = data[page.state]
    stored = page.studio.upload_source(session, str(picture), 1.0)
    assert stored[switch] is True and "Denoise" in stored[page.studio.panel.status]
    assert session.base.source.image.startswith("sha256:")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(corrupt_png())
    failed = page.studio.upload_source(session, str(corrupt), 0.5)
    assert failed[page.studio.panel.error]["visible"]
    assert session.base.source.image.startswith("sha256:")  # the good one is kept
    cleared = page.studio.clear_source(session)
    assert cleared[switch] is False and session.base.source.image == ""
