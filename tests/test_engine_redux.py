"""Redux through the whole engine on tiny models: which stages re-run, and the image changes."""

import io

import numpy as np
import pytest
from PIL import Image

from engine.engine import Engine, EngineConfig
from engine.models.manager import ModelConfig
from engine.recipe import Recipe
from engine.recipe_json import set_path


def png(seed: int) -> bytes:
    """A deterministic reference picture (effect_noise is not seeded)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("redux")
    config = ModelConfig(tiny=True, device="cpu")
    return Engine(EngineConfig(models=config, outputs_dir=root / "o", data_dir=root / "d"))


def recipe_with(engine, **paths) -> Recipe:
    recipe = Recipe()
    defaults = {
        "prompt.width": 64,
        "prompt.height": 64,
        "settings.steps": 2,
        "redux.enabled": True,
        "redux.image1": engine.store_image(png(1)),
        "redux.image2": engine.store_image(png(2)),
    }
    for path, value in {**defaults, **paths}.items():
        recipe = set_path(recipe, path, value)
    return recipe


def test_strength_change_reruns_conditioning_but_not_siglip(engine):
    first = engine.run(recipe_with(engine), save=False)
    assert first.report.ran_names[:3] == ["text", "vision", "redux"]
    moved = engine.run(recipe_with(engine, **{"redux.strength1": 20}), save=False)
    assert moved.report.ran_names == ["redux", "base", "decode", "color"]
    assert moved.images[0].tobytes() != first.images[0].tobytes()
    concat = engine.run(recipe_with(engine, **{"redux.mode": "concat"}), save=False)
    assert "vision" not in concat.report.ran_names


def test_redux_off_is_the_plain_render(engine):
    on = recipe_with(engine)
    off = engine.run(set_path(on, "redux.enabled", False), save=False)
    assert "redux" in off.report.off and "vision" not in off.report.ran_names


def test_downsampling_reruns_redux_but_not_siglip_and_the_image_mode_does(engine):
    first = engine.run(recipe_with(engine), save=False)
    down = {f"redux.advanced{n}.downsampling_factor": 2.0 for n in (1, 2)}
    moved = engine.run(recipe_with(engine, **down), save=False)
    assert moved.report.ran_names == ["redux", "base", "decode", "color"]
    assert moved.images[0].tobytes() != first.images[0].tobytes()
    letterbox = {**down, "redux.advanced1.image_mode": "keep_aspect"}
    encoded = engine.run(recipe_with(engine, **letterbox), save=False)
    assert encoded.report.ran_names[:2] == ["vision", "redux"]
