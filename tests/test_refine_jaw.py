"""The chin's jaw mask from a text prompt (GroundingDINO, then SAM or the box) with the
landmarks as the fallback, on the tiny Flux and a tiny random GroundingDINO."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.faces.boxes import FaceBox
from engine.faces.grounding import build_tiny_grounding_dino
from engine.recipe_json import recipe_from_json
from engine.refine.jaw import box_mask, box_near_face
from photos import astronaut
from photos import png_bytes as png

FACE = FaceBox(100, 100, 200, 220, 0.99)


def test_the_best_box_near_the_face_is_taken_and_far_ones_never():
    below = FaceBox(130, 200, 170, 240, 0.4)  # centre (150, 220): on the face's lower edge
    better = FaceBox(120, 190, 180, 250, 0.6)
    far = FaceBox(400, 400, 440, 440, 0.9)
    assert box_near_face(FACE, [below, far, better]) == better
    assert box_near_face(FACE, [far]) is None
    reach = FaceBox(0, 240, 40, 300, 0.5)  # centre (20, 270): 75 and 50 px out, reach 25/30
    assert box_near_face(FACE, [reach]) is None
    assert box_mask(FaceBox(2.4, 1.6, 5.5, 4.0, 1.0), 6, 8).sum() == 2 * 4  # rows 2-3, cols 2-5


def engine_with(models: Path, tmp_path: Path) -> Any:
    from engine.engine import Engine, EngineConfig
    from engine.models.manager import ModelConfig

    config = ModelConfig(models_dir=models, tiny=True, device="cpu")
    return Engine(EngineConfig(models=config, outputs_dir=tmp_path / "o", data_dir=tmp_path / "d"))


def chin(digest: str, **values: Any):
    settings = {"enabled": True, "steps": 2, "size": 256, **values}
    document = {"source": {"kind": "image", "image": digest}, "refine": {"chin": settings}}
    return recipe_from_json(json.dumps({**document, "color": {"enabled": False}}))


@pytest.fixture(scope="module")
def with_dino(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("jaw")
    build_tiny_grounding_dino(folder / "models" / "grounding-dino" / "tiny-dino")
    return engine_with(folder / "models", folder)


def test_a_text_prompt_masks_the_jaw_with_groundingdino(with_dino: Any) -> None:
    assert "GroundingDINO for text-prompted jaw masks: tiny-dino" in with_dino.refine_status()
    digest = with_dino.store_image(png(astronaut()))
    landmarks = with_dino.run(chin(digest), save=False)
    text = with_dino.run(chin(digest, mask_source="text", text_threshold=0.0), save=False)
    assert text.report.ran_names == ["refine_chin"]  # the mask source is part of its key
    assert not any("GroundingDINO" in note for note in text.report.notes)
    assert text.images[0].tobytes() != landmarks.images[0].tobytes()
    nothing = with_dino.run(chin(digest, mask_source="text", text_threshold=1.0), save=False)
    assert any("found no 'chin' near face 1" in note for note in nothing.report.notes)
    assert nothing.images[0].tobytes() == landmarks.images[0].tobytes()


def test_without_groundingdino_the_landmarks_mask_the_jaw_and_a_note_says_so(tmp_path: Path):
    (tmp_path / "models").mkdir()
    engine = engine_with(tmp_path / "models", tmp_path)
    assert "No GroundingDINO" in engine.refine_status()
    digest = engine.store_image(png(astronaut()))
    landmarks = engine.run(chin(digest), save=False)
    asked = engine.run(chin(digest, mask_source="text"), save=False)
    assert any("no GroundingDINO in the models folder" in n for n in asked.report.notes)
    assert asked.images[0].tobytes() == landmarks.images[0].tobytes()
