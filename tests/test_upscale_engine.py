"""The Upscale stages on the tiny models: the tile loop's compositing, what re-runs when a
pass setting changes, the final pass's own LoRAs, the captioner feeding Upscale 1, and upscale
model files good and bad."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from engine.engine import Engine, EngineConfig, RunScope
from engine.errors import Cancelled, ModelNotFoundError, RecipeError, StudioError
from engine.models.demo_loras import FILM, SKIN, write_demo_loras
from engine.models.manager import ModelConfig
from engine.recipe import Recipe
from engine.recipe_json import recipe_from_json
from engine.recipe_upscale import SEAM_FIX_MODES, UsduParams
from engine.runtypes import CancelToken
from engine.stages.upscale_caption import CaptionStage
from engine.upscale.models import UpscaleModels, UpscaleModelsConfig
from engine.upscale.passes import usdu_settings
from engine.upscale.usdu_masks import job_alpha
from engine.upscale.usdu_plan import redraw_jobs, seam_fix_jobs
from engine.upscale.usdu_run import pad_to_grid, run_jobs

UPSCALER = "2x-TinyCompact.pth"
NOT_AN_UPSCALER = "not-an-upscaler.pth"
# A 64² upload upscaled ×2 in 64 px tiles: a 2 × 2 grid; padding 8 makes 72 px tiles, which
# Flux samples padded to 80.
PASS = {"steps": 2, "tile_width": 64, "tile_height": 64, "tile_padding": 8, "mask_blur": 4}


def write_upscalers(folder: Path) -> None:
    """A tiny Real-ESRGAN Compact ×2 in Real-ESRGAN's {"params": ...} layout, and a .pth
    that holds tensors of no upscaler."""
    from spandrel.architectures.Compact import Compact

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    network = Compact(num_feat=8, num_conv=2, upscale=2).eval()
    torch.save({"params": network.state_dict()}, folder / UPSCALER)
    torch.save({"encoder.weight": torch.zeros(4, 4)}, folder / NOT_AN_UPSCALER)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """A tiny engine whose models folder holds the demo LoRAs and two upscale model files."""
    root = tmp_path_factory.mktemp("upscale")
    write_demo_loras(root / "models" / "loras")
    write_upscalers(root / "models" / "upscale_models")
    models = ModelConfig(models_dir=root / "models", tiny=True, device="cpu")
    config = EngineConfig(models=models, outputs_dir=root / "out", data_dir=root / "data")
    return Engine(config)


def upload(engine: Engine, width: int = 64, height: int = 64) -> str:
    pixels = np.random.default_rng(width * height).integers(0, 256, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "PNG")
    return engine.store_image(buffer.getvalue())


@pytest.fixture(scope="module")
def photo(engine: Engine) -> str:
    return upload(engine)


def upscale(digest: str, color: dict | None = None, **sections: Any) -> Recipe:
    """The upload `digest` through the Upscale tab (`sections`: first, final, caption, ...)."""
    document = {
        "source": {"kind": "image", "image": digest},
        "upscale": {"enabled": True, **sections},
        "color": color or {"enabled": False},
    }
    return recipe_from_json(json.dumps(document))


def first(**values: Any) -> dict:
    return {**PASS, **values}


def ran(result: Any) -> list[str]:
    """The stages a run executed, less the upload (cached or not by earlier tests)."""
    return [name for name in result.report.ran_names if name != "image"]


# The tile loop, without Flux --------------------------------------------------------------


def identity(crop: np.ndarray, job: Any) -> np.ndarray:
    return crop


@pytest.mark.parametrize("mode", ["linear", "chess"])
@pytest.mark.parametrize("seam_fix", SEAM_FIX_MODES)
def test_an_identity_render_leaves_the_upscaled_image_bit_identical(
    mode: str, seam_fix: str
) -> None:
    usdu = UsduParams(**first(mode=mode, seam_fix=seam_fix, seam_fix_width=16))
    image = np.random.default_rng(1).random((256, 256, 3), dtype=np.float32)
    tiles = run_jobs(image, redraw_jobs(usdu_settings(usdu, "tiles", "test"), 256, 256), identity)
    seams_plan = seam_fix_jobs(usdu_settings(usdu, "seams", "test"), 256, 256)
    assert len(seams_plan) == {"none": 0, "band_pass": 6, "half_tile": 24}.get(seam_fix, 33)
    assert np.array_equal(run_jobs(tiles, seams_plan, identity), image)


def test_each_job_blends_its_render_with_its_blurred_mask_inside_its_crop() -> None:
    usdu = UsduParams(**first())
    jobs = redraw_jobs(usdu_settings(usdu, "tiles", "test"), 256, 256)
    image = np.random.default_rng(2).random((256, 256, 3), dtype=np.float32)
    seen = []
    out = run_jobs(
        image, jobs[:1], lambda crop, job: np.ones_like(crop), lambda i, n: seen.append(i)
    )
    crop, alpha = jobs[0].crop, job_alpha(jobs[0])[..., None]
    inside = image[crop.y1 : crop.y2, crop.x1 : crop.x2]
    expected = image.copy()
    expected[crop.y1 : crop.y2, crop.x1 : crop.x2] = inside + alpha * (1 - inside)
    assert np.array_equal(out, expected) and seen == [0]
    assert (out[200:, 200:] == image[200:, 200:]).all()  # outside the first crop: untouched


def test_sizes_off_the_flux_grid_are_padded_with_their_edge_pixels() -> None:
    pixels = np.arange(136 * 120 * 3, dtype=np.float32).reshape(136, 120, 3)
    padded = pad_to_grid(pixels)
    assert padded.shape == (144, 128, 3)
    assert np.array_equal(padded[:136, :120], pixels)
    assert np.array_equal(padded[140, 125], pixels[135, 119])


def test_tile_settings_the_node_refuses_name_the_pass() -> None:
    with pytest.raises(RecipeError, match=r"Upscale 1 .*tile_width .*multiple of 8, got 100"):
        usdu_settings(UsduParams(tile_width=100), "tiles", "Upscale 1 (upscale.first)")


# Upscale 1 end to end -----------------------------------------------------------------------


def test_upscale_1_re_runs_only_what_a_change_touches(engine: Engine, photo: str) -> None:
    result = engine.run(upscale(photo, first=first(seam_fix="half_tile")), save=False)
    assert ran(result) == ["first_upscale", "first_tiles", "first_seams"]
    assert result.images[0].size == (128, 128)
    assert {"final_upscale", "final_tiles", "final_seams"} <= set(result.report.off)
    stages = result.artifacts
    assert stages["first_tiles"][0].tobytes() != stages["first_upscale"][0].tobytes()

    seams = engine.run(upscale(photo, first=first(seam_fix="band_pass")), save=False)
    assert seams.report.ran_names == ["first_seams"]
    assert {"first_upscale", "first_tiles"} <= set(seams.report.cached)

    denoise = engine.run(upscale(photo, first=first(seam_fix="band_pass", denoise=0.4)), save=False)
    assert denoise.report.ran_names == ["first_tiles", "first_seams"]
    assert "first_upscale" in denoise.report.cached

    graded = upscale(photo, first=first(seam_fix="band_pass", denoise=0.4), color={"enabled": True})
    assert engine.run(graded, save=False).report.ran_names == ["color"]


def test_without_a_seam_fix_the_seams_stage_forwards_the_tiles(engine: Engine, photo: str) -> None:
    result = engine.run(upscale(photo, first=first()), save=False)
    assert "first_seams" in result.report.off and "first_seams" not in result.report.ran_names
    assert result.images[0].tobytes() == result.artifacts["first_tiles"][0].tobytes()


def test_tiles_report_progress_and_stop_when_asked(engine: Engine, photo: str) -> None:
    token, messages = CancelToken(), []

    def progress(event: Any) -> None:
        if event.stage == "first_tiles" and event.message.startswith("tile"):
            messages.append(event.message)
            if event.message == "tile 2/4":
                token.cancel()

    recipe = upscale(photo, first=first(denoise=0.3))
    with pytest.raises(Cancelled, match="first_tiles"):
        engine.run(recipe, progress=progress, cancel=token, save=False)
    assert messages == ["tile 1/4", "tile 2/4"]
    assert "first_tiles" in ran(engine.run(recipe, save=False))  # nothing half-kept


def keys(engine: Engine, recipe: Recipe) -> dict[str, str]:
    planned, _, _ = engine.graph.plan(recipe, RunScope(engine, recipe.model), "color")
    return {name: item.key for name, item in planned.items()}


def test_the_final_pass_loras_touch_only_the_final_pass(engine: Engine) -> None:
    document = {
        "prompt": {"width": 64, "height": 64, "loras": [{"file": SKIN}]},
        "upscale": {"enabled": True, "final": {"enabled": True, **PASS}},
    }
    plain = recipe_from_json(json.dumps(document))
    document["upscale"]["final_loras"] = [{"file": FILM, "strength_model": 0.8}]
    with_loras = keys(engine, recipe_from_json(json.dumps(document)))
    without = keys(engine, plain)
    same = ("text", "base", "decode", "first_upscale", "first_tiles", "final_upscale")
    assert all(with_loras[name] == without[name] for name in same)
    assert with_loras["final_tiles"] != without["final_tiles"]


def test_the_final_pass_samples_with_its_own_loras(engine: Engine, photo: str) -> None:
    final = {"enabled": True, "upscale_by": 2.0, **PASS}
    styled = [{"file": FILM, "strength_model": 2.0}]
    recipe = upscale(photo, first={"enabled": False}, final=final, final_loras=styled)
    result = engine.run(recipe, save=False)
    assert ran(result) == ["final_upscale", "final_tiles"] and result.images[0].size == (128, 128)
    assert any(note.startswith(f"LoRA {FILM}") for note in result.report.notes)
    plain = engine.run(upscale(photo, first={"enabled": False}, final=final), save=False)
    assert ran(plain) == ["final_tiles"]
    assert plain.images[0].tobytes() != result.images[0].tobytes()


# The captioner --------------------------------------------------------------------------------


CAPTION = {"enabled": True, "max_new_tokens": 8, "temperature": 0.0}


def test_the_caption_is_reported_and_is_the_first_pass_prompt(engine: Engine, photo: str) -> None:
    loras = [{"file": SKIN, "trigger": "ohwx person"}, {"file": FILM, "enabled": False}]

    def recipe(**pass_values: Any) -> Recipe:
        base = upscale(photo, caption=CAPTION, first=first(**pass_values))
        return recipe_from_json(json.dumps({"prompt": {"loras": loras}}), base)

    captioned = engine.run(recipe(), save=False)
    caption = captioned.report.caption
    assert {"caption", "first_tiles"} <= set(ran(captioned))
    assert caption.startswith("ohwx person") and "demo film look" not in caption
    assert engine.run(recipe(), save=False).report.caption == caption  # from the cache too

    typed = engine.run(recipe(prompt=caption), save=False)  # the same prompt, typed
    assert typed.report.ran_names == ["first_tiles"] and typed.report.caption == caption
    assert typed.images[0].tobytes() == captioned.images[0].tobytes()
    other = engine.run(recipe(prompt="a studio portrait"), save=False)
    assert other.images[0].tobytes() != captioned.images[0].tobytes()
    assert any("caption is shown but not used" in note for note in other.report.notes)


def test_a_missing_captioner_says_where_to_put_it(tmp_path: Path) -> None:
    holder = UpscaleModels(UpscaleModelsConfig(tmp_path, "cpu"))
    with pytest.raises(ModelNotFoundError, match="Put the JoyCaption Beta One folder"):
        holder.caption_files()
    env = SimpleNamespace(loras=lambda: None, engine=SimpleNamespace(upscale_models=holder))
    recipe = upscale("", caption={"enabled": True})
    with pytest.raises(ModelNotFoundError) as info:
        CaptionStage().select(recipe, env)
    message = str(info.value)
    assert "captioner is on" in message and "LLavacheckpoints" in message
    assert "No JoyCaption captioner found" in holder.describe()


# Upscale model files --------------------------------------------------------------------------


MODEL_ONLY = {"mode": "none", "seam_fix": "none"}  # the model upscale alone: no Flux


def test_the_upscale_model_is_used_and_resized_to_the_target(engine: Engine) -> None:
    digest = upload(engine, 96, 64)
    lanczos = engine.run(upscale(digest, first={"upscale_by": 1.5, **MODEL_ONLY}), save=False)
    model = {"model": UPSCALER, "upscale_by": 1.5, **MODEL_ONLY}
    result = engine.run(upscale(digest, first=model), save=False)
    assert ran(result) == ["first_upscale"]
    assert result.images[0].size == lanczos.images[0].size == (144, 96)
    assert result.images[0].tobytes() != lanczos.images[0].tobytes()
    assert engine.list_upscalers() == [UPSCALER, NOT_AN_UPSCALER]
    assert UPSCALER in engine.upscale_status() and "tiny random LLaVA" in engine.upscale_status()


def test_a_file_that_is_no_upscaler_is_refused_by_name(engine: Engine, photo: str) -> None:
    bad = upscale(photo, first={"model": NOT_AN_UPSCALER, **MODEL_ONLY})
    with pytest.raises(ModelNotFoundError, match=NOT_AN_UPSCALER):
        engine.run(bad, save=False)
    good = upscale(photo, first={"model": UPSCALER, **MODEL_ONLY})
    assert engine.run(good, save=False).images[0].size == (128, 128)


def test_a_target_over_8192_px_is_refused_with_what_to_lower(engine: Engine) -> None:
    wide = upload(engine, 2200, 16)
    with pytest.raises(StudioError, match=r"8800×64 px, over the 8192 px .* upscale_by to at most"):
        engine.run(upscale(wide, first={"upscale_by": 4.0, **MODEL_ONLY}), save=False)
    fits = engine.run(upscale(wide, first={"upscale_by": 3.5, **MODEL_ONLY}), save=False)
    assert fits.images[0].size == (7696, 56)  # round(2200·3.5 / 8)·8, the port's rule
