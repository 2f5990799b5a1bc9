"""A pose picture from an OpenPose keypoint JSON: drawn at the render size with the JSON's
canvas fitted inside (proportions kept), BODY_25 read as COCO-18, stored through the Engine
like an uploaded pose picture, and every unusable file refused with a message saying why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.errors import InputError
from engine.identity.control_image import BODY_25, COLORS, KEYPOINT_NAMES, MAX_POSE_JSON_BYTES
from engine.identity.pose_json import pose_json_picture
from engine.recipe_json import recipe_from_json
from tests.conftest import fresh_tiny_engine

# A person in a 400 × 200 canvas: neck, right shoulder and right elbow seen.
POINTS = {"neck": (100.0, 20.0), "right_shoulder": (60.0, 20.0), "right_elbow": (60.0, 80.0)}


def keypoints(points: dict[str, tuple[float, float]]) -> list[float]:
    values: list[float] = []
    for name in KEYPOINT_NAMES:
        x, y = points.get(name, (0.0, 0.0))
        values += [x, y, 0.9 if name in points else 0.0]
    return values


def document(values: list[float], **canvas: Any) -> str:
    return json.dumps({"people": [{"pose_keypoints_2d": values}], **canvas})


def test_the_canvas_fits_inside_the_render_size_with_its_proportions() -> None:
    text = document(keypoints(POINTS), canvas_width=400, canvas_height=200)
    pixels = np.asarray(pose_json_picture(text, 200, 200))
    assert pixels.shape == (200, 200, 3)
    # scaled by 0.5 into 200 × 100, centred: 50 px of black above and below
    assert tuple(pixels[10 + 50, 50]) == COLORS[1]  # the neck keypoint at (50, 10) + offset
    assert tuple(pixels[10 + 50, 30]) == COLORS[2]  # the right shoulder
    assert tuple(pixels[40 + 50, 30]) == COLORS[3]  # the right elbow
    assert not pixels[:50].any() and not pixels[150:].any()
    # fractions without a canvas span the whole picture
    fractions = {name: (x / 400, y / 200) for name, (x, y) in POINTS.items()}
    stretched = np.asarray(pose_json_picture(document(keypoints(fractions)), 200, 200))
    assert tuple(stretched[20, 50]) == COLORS[1]


def test_body_25_is_drawn_as_coco_18() -> None:
    coco = keypoints(POINTS)
    body = [0.0] * 75
    for coco_index, body_index in enumerate(BODY_25):
        body[body_index * 3 : body_index * 3 + 3] = coco[coco_index * 3 : coco_index * 3 + 3]
    body[8 * 3 : 8 * 3 + 3] = [80.0, 100.0, 0.9]  # the mid-hip, which COCO-18 lacks
    canvas = {"canvas_width": 400, "canvas_height": 200}
    expected = pose_json_picture(document(coco, **canvas), 128, 64)
    drawn = pose_json_picture(json.dumps([json.loads(document(body, **canvas))]), 128, 64)
    assert drawn.tobytes() == expected.tobytes() and np.asarray(drawn).any()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "is not valid JSON"),
        ("", "is empty"),
        (json.dumps({"people": []}), 'needs a "people" list'),
        (json.dumps({"animals": [1]}), 'needs a "people" list'),
        (json.dumps({"people": [{"pose_keypoints_2d": [0.5] * 50}]}), "54 numbers"),
        (json.dumps({"people": [{"pose_keypoints_2d": ["a"] * 54}]}), "54 numbers"),
        (json.dumps({"people": [{"face_keypoints_2d": []}]}), "54 numbers"),
        (document([0.5, 0.5, 0.0] * 18), "no keypoint seen"),
        (document(keypoints(POINTS)), "without canvas_width and canvas_height"),
        (document(keypoints(POINTS), canvas_width=4, canvas_height=2), "far outside its canvas"),
        (" " * (MAX_POSE_JSON_BYTES + 1), "the limit is 1,000,000 bytes"),
    ],
)
def test_an_unusable_json_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(InputError, match=says):
        pose_json_picture(text.encode(), 64, 64)


def test_a_binary_file_is_refused() -> None:
    with pytest.raises(InputError, match="pose JSON"):
        pose_json_picture(b"\x89PNG\r\n\x1a\n\xff\xfe\x00", 64, 64)


def test_the_engine_stores_the_drawn_pose_at_the_render_size(tmp_path: Path) -> None:
    engine = fresh_tiny_engine(tmp_path)
    recipe = recipe_from_json(json.dumps({"prompt": {"width": 320, "height": 192}}))
    text = document(keypoints(POINTS), canvas_width=400, canvas_height=200)
    digest = engine.store_pose_json(text.encode(), recipe)
    picture = engine.load_image(digest)
    assert digest.startswith("sha256:") and picture.size == (320, 192)
    assert picture.tobytes() == pose_json_picture(text, 320, 192).tobytes()
    with pytest.raises(InputError, match="is not valid JSON"):
        engine.store_pose_json(b"[1, 2", recipe)
