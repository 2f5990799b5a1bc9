"""The Refine stages on real photos with the tiny Flux: what each region re-renders, what
re-runs when one region changes, the identity guard, and the inputs it cannot use."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine.recipe import Recipe
from engine.recipe_json import recipe_from_json
from photos import astronaut
from photos import png_bytes as png
from tests.conftest import fresh_tiny_engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return fresh_tiny_engine(tmp_path_factory.mktemp("refine"))


@pytest.fixture(scope="module")
def photo(engine: Any) -> str:
    return engine.store_image(png(astronaut()))


def refine(digest: str, **regions: dict) -> Recipe:
    """Refine the uploaded photo `digest` with the given region settings (4 steps)."""
    sections = {name: {"enabled": True, "steps": 4, **values} for name, values in regions.items()}
    identity = sections.pop("identity", None)
    if identity is not None:
        identity.pop("steps")
        sections["identity"] = identity
    document = {
        "source": {"kind": "image", "image": digest},
        "refine": sections,
        "color": {"enabled": False},
    }
    return recipe_from_json(json.dumps(document))


def changed(result: Any) -> np.ndarray:
    after = np.asarray(result.images[0], np.int16)
    return np.abs(after - np.asarray(astronaut(), np.int16)).max(axis=2) > 0


def test_the_face_detailer_re_renders_only_around_the_face(engine: Any, photo: str) -> None:
    result = engine.run(refine(photo, face={}), save=False)
    assert result.report.ran_names == ["image", "text", "refine_face"]
    (found,) = result.report.detections["refine_face"]
    (face,) = found
    x1, y1, x2, y2 = face["box"]
    assert face["label"] == "face" and abs(x1 - 182) < 10 and abs(y2 - 174) < 10
    rows, cols = np.nonzero(changed(result))
    # inside the 3x crop region around the 87 x 111 face box, never outside it
    assert cols.min() >= 182 - 87 and cols.max() <= 269 + 87 and rows.max() <= 174 + 111
    assert any(note.startswith("Identity (") for note in result.report.notes)


def test_changing_one_region_re_runs_it_and_never_the_ones_before(engine: Any, photo: str) -> None:
    engine.run(refine(photo, face={}, hands={}), save=False)
    moved = engine.run(refine(photo, face={}, hands={"denoise": 0.3}), save=False)
    assert moved.report.ran_names == ["refine_hands"]
    assert "refine_face" in moved.report.cached
    assert any("No hands detector: put bbox/hand_yolov8s.pt" in n for n in moved.report.notes)
    assert moved.report.detections["refine_face"]  # boxes of a cached region still reported


def test_a_photo_without_the_region_passes_through_unrefined(engine: Any) -> None:
    wall = engine.store_image(png(Image.new("RGB", (256, 192), (120, 120, 120))))
    result = engine.run(refine(wall, face={}), save=False)
    assert any("Refine face: nothing found in image 1" in n for n in result.report.notes)
    assert (np.asarray(result.images[0]) == 120).all()


def test_the_guard_keeps_a_face_that_lost_its_likeness_when_asked(engine: Any, photo: str) -> None:
    guarded = refine(photo, face={}, identity={"threshold": 1.0, "keep_below": True})
    result = engine.run(guarded, save=False)
    note = next(n for n in result.report.notes if n.startswith("Identity ("))
    assert "BELOW the threshold" in note and "same person ≥ 1.000" in note
    assert not changed(result).any()  # kept as it was


def test_a_broken_detector_file_leaves_the_image_unrefined(tmp_path: Path) -> None:
    from engine.engine import Engine, EngineConfig
    from engine.models.manager import ModelConfig

    models = tmp_path / "models"
    (models / "ultralytics" / "bbox").mkdir(parents=True)
    (models / "ultralytics" / "bbox" / "face_yolov8m.pt").write_bytes(b"not a checkpoint")
    config = ModelConfig(models_dir=models, tiny=True, device="cpu")
    broken = Engine(
        EngineConfig(models=config, outputs_dir=tmp_path / "o", data_dir=tmp_path / "d")
    )
    assert broken.list_detectors() == ["bbox/face_yolov8m.pt"]
    assert "face_yolov8m.pt (YOLO)" in broken.refine_status()
    digest = broken.store_image(png(astronaut()))
    result = broken.run(refine(digest, face={}), save=False)
    assert any("face_yolov8m.pt" in n and "left unrefined" in n for n in result.report.notes)
    assert not changed(result).any()


def test_a_detector_name_outside_the_folder_is_refused(engine: Any, photo: str) -> None:
    from engine.errors import InputError

    with pytest.raises(InputError, match="is not in the models folder's ultralytics/"):
        engine.run(refine(photo, face={"detector": "bbox/missing.pt"}), save=False)


def test_the_chin_pass_re_renders_the_jaw_and_stitches_it_back(engine: Any, photo: str) -> None:
    document = {
        "source": {"kind": "image", "image": photo},
        "refine": {"chin": {"enabled": True, "steps": 3, "size": 256}},
        "color": {"enabled": False},
    }
    result = engine.run(recipe_from_json(json.dumps(document)), save=False)
    assert result.report.ran_names[-1] == "refine_chin"
    (found,) = result.report.detections["refine_chin"]
    assert [f["label"] for f in found] == ["chin"]
    rows, cols = np.nonzero(changed(result))
    # the jaw of the face at x 182-269, y 63-174, with the blend margin around the context
    assert rows.min() >= 63 and cols.min() >= 120 and cols.max() <= 330 and rows.max() <= 260
    assert any(note.startswith("Identity (") and "chin 1" in note for note in result.report.notes)


def test_sam_refines_the_mask_when_a_sam_file_is_there(tmp_path: Path) -> None:
    from engine.engine import Engine, EngineConfig
    from engine.faces.sam import save_tiny_sam
    from engine.models.manager import ModelConfig

    models = tmp_path / "models"
    (models / "sams").mkdir(parents=True)
    folders = {"outputs_dir": tmp_path / "o", "data_dir": tmp_path / "d"}
    without = Engine(
        EngineConfig(models=ModelConfig(models_dir=models, tiny=True, device="cpu"), **folders)
    )
    digest = without.store_image(png(astronaut()))
    recipe = refine(digest, face={"sam": True, "sam_threshold": 0.0})
    result = without.run(recipe, save=False)
    assert any(
        "SAM is on but the models folder's sams/ has no SAM file" in n for n in result.report.notes
    )
    save_tiny_sam(models / "sams" / "sam_vit_b_01ec64.pth")
    with_sam = without.run(recipe, save=False)
    assert "refine_face" in with_sam.report.ran_names  # the SAM file's identity is in the key
    assert not any("SAM is on" in n for n in with_sam.report.notes)
    assert "sam_vit_b_01ec64.pth" in without.refine_status()


def test_the_guard_compares_with_a_reference_photo(engine: Any, photo: str) -> None:
    recipe = refine(photo, face={}, identity={"reference": photo})
    note = next(n for n in engine.run(recipe, save=False).report.notes if n.startswith("Identity"))
    assert "vs before" in note and "vs reference" in note


def test_without_its_own_reference_the_guard_uses_the_first_identity_reference(
    engine: Any, photo: str
) -> None:
    recipe = refine(photo, face={})
    recipe = dataclasses.replace(
        recipe, identity=dataclasses.replace(recipe.identity, references=(photo,))
    )
    result = engine.run(recipe, save=False)
    guard = next(n for n in result.report.notes if n.startswith("Identity ("))
    assert "vs reference" in guard
    assert result.report.identity  # the render's own score against the same reference
