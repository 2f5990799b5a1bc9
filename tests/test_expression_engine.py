"""The Expression stages in the engine: what re-runs on a slider move, neutral is off, the
driving face, the faces that cannot be edited, a bad LivePortrait folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine.errors import InputError, ModelNotFoundError
from engine.recipe import ColorParams, ExpressionParams, Recipe, SourceParams
from photos import astronaut, png_bytes
from tests.conftest import fresh_tiny_engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return fresh_tiny_engine(tmp_path_factory.mktemp("expression"))


@pytest.fixture(scope="module")
def photo(engine: Any) -> str:
    return engine.store_image(png_bytes(astronaut()))


def edit(digest: str, color: bool = False, **sliders: Any) -> Recipe:
    """A recipe that edits the uploaded photo `digest` (no diffusion)."""
    return Recipe(
        source=SourceParams(kind="image", image=digest),
        expression=ExpressionParams(**sliders),
        color=ColorParams(enabled=color),
    )


def ran(result: Any) -> list[str]:
    return result.report.ran_names


def test_a_slider_move_reruns_only_the_render_sub_stage(engine: Any, photo: str) -> None:
    first = engine.run(edit(photo, smile=0.8), save=False)
    assert ran(first) == ["image", "expression_face", "expression"]
    moved = engine.run(edit(photo, smile=0.4, aaa=30), save=False)
    assert ran(moved) == ["expression"]
    assert {"image", "expression_face"} <= set(moved.report.cached)
    graded = engine.run(edit(photo, color=True, smile=0.4, aaa=30), save=False)
    assert ran(graded) == ["color"]  # the grade after the edit does not re-edit
    refaced = engine.run(edit(photo, smile=0.4, aaa=30, crop_factor=2.0), save=False)
    assert ran(refaced) == ["expression_face", "expression"]


def test_the_edit_changes_only_the_face_region(engine: Any, photo: str) -> None:
    source = np.asarray(astronaut(), dtype=np.int16)
    result = np.asarray(engine.run(edit(photo, smile=1.0), save=False).images[0], np.int16)
    changed = np.abs(result - source).max(axis=2) > 0
    rows, cols = np.nonzero(changed)
    assert changed.any()
    # the 1.7x crop square around the astronaut's face (about x 182-269, y 63-174)
    assert cols.min() >= 100 and cols.max() <= 360 and rows.min() >= 0 and rows.max() <= 280


def test_neutral_settings_forward_the_input_untouched(engine: Any, photo: str) -> None:
    result = engine.run(edit(photo), save=False)
    assert "expression" in result.report.off and "expression" not in ran(result)
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(astronaut()))
    disabled = engine.run(edit(photo, enabled=False, smile=1.0), save=False)
    assert np.array_equal(np.asarray(disabled.images[0]), np.asarray(astronaut()))


def test_a_driving_face_is_read_once_and_its_ratio_only_re_edits(engine: Any, photo: str) -> None:
    mirrored = engine.store_image(png_bytes(astronaut().transpose(Image.FLIP_LEFT_RIGHT)))
    first = engine.run(edit(photo, sample_image=mirrored, sample_parts="All"), save=False)
    assert "expression_driving" in ran(first) and "expression" in ran(first)
    again = engine.run(
        edit(photo, sample_image=mirrored, sample_parts="All", sample_ratio=0.5), save=False
    )
    assert ran(again) == ["expression"]
    assert "expression_driving" in again.report.cached


def test_a_large_frame_is_searched_downscaled_and_edited_in_place(engine: Any) -> None:
    large = astronaut().resize((3072, 3072), Image.BILINEAR)
    digest = engine.store_image(png_bytes(large))
    result = np.asarray(engine.run(edit(digest, smile=0.9), save=False).images[0], np.int16)
    changed = np.abs(result - np.asarray(large, np.int16)).max(axis=2) > 0
    rows, cols = np.nonzero(changed)
    # the face (about x 1092-1614, y 378-1044 at this size) found on the 2048 px copy
    assert cols.min() >= 600 and cols.max() <= 2160 and rows.max() <= 1680


def test_a_photo_without_a_face_says_so_and_the_engine_keeps_working(
    engine: Any, photo: str
) -> None:
    grey = engine.store_image(png_bytes(Image.new("RGB", (320, 240), (128, 128, 128))))
    with pytest.raises(InputError, match=r"No face was found in the image \(320×240\)"):
        engine.run(edit(grey, smile=0.5), save=False)
    assert engine.run(edit(photo, smile=0.3), save=False).images


def test_a_tiny_face_is_refused_with_its_size(engine: Any) -> None:
    canvas = Image.new("RGB", (640, 640), (90, 90, 90))
    canvas.paste(astronaut().resize((160, 160)), (240, 240))  # face about 27 px wide
    small = engine.store_image(png_bytes(canvas))
    with pytest.raises(InputError, match=r"too small to edit \(\d+ px wide"):
        engine.run(edit(small, smile=0.5), save=False)


def test_a_bad_liveportrait_folder_names_what_is_missing(tmp_path: Path, photo: str) -> None:
    from engine.engine import Engine, EngineConfig
    from engine.models.manager import ModelConfig

    models = tmp_path / "models"
    (models / "liveportrait" / "base_models").mkdir(parents=True)
    (models / "liveportrait" / "base_models" / "warping_module.pth").write_bytes(b"not a file")
    config = ModelConfig(models_dir=models, tiny=False, device="cpu")
    bad = Engine(EngineConfig(models=config, outputs_dir=tmp_path / "o", data_dir=tmp_path / "d"))
    digest = bad.store_image(png_bytes(astronaut()))
    with pytest.raises(ModelNotFoundError) as caught:
        bad.run(edit(digest, smile=0.5), save=False)
    message = str(caught.value)
    assert "appearance_feature_extractor" in message and "liveportrait" in message
    assert "Expression unavailable" in bad.expression_status()
    # the studio keeps serving: the colour stage alone still works on the same engine
    assert bad.run(edit(digest, color=True), save=False).images


def test_expression_recipe_round_trips_and_is_in_the_png(engine: Any, photo: str) -> None:
    recipe = edit(photo, smile=0.7, blink=-10)
    result = engine.run(recipe, save=True)
    restored = engine.read_recipe_file(result.saved[0])
    assert restored.expression == dataclasses.replace(recipe.expression)


def test_a_render_without_a_face_is_shown_as_rendered_with_a_note(engine: Any) -> None:
    recipe = dataclasses.replace(
        engine.default_recipe(),
        expression=ExpressionParams(smile=0.5),
        color=ColorParams(enabled=False),
    )
    result = engine.run(recipe, save=False)  # the tiny Flux renders patterns, not faces
    assert "expression" in ran(result) and "expression_face" in ran(result)
    assert any(
        n.startswith("Expression not applied: No face was found") for n in result.report.notes
    )
    decoded = np.asarray(result.artifacts["decode"][0])
    assert np.array_equal(np.asarray(result.images[0]), decoded)
