"""Facial landmarks on a real photo (dlib's packaged 68-point predictor placed by the MTCNN
box) and the region masks drawn from them: where each region lies, and which regions may
and may not overlap."""

from __future__ import annotations

import numpy as np
import pytest

from engine.faces.boxes import FaceBox
from engine.faces.landmarks import (
    LEFT_EYE,
    OUTER_LIP,
    REGIONS,
    RIGHT_EYE,
    LandmarkPredictor,
    region_mask,
)
from engine.faces.mtcnn import MtcnnFaceDetector

SLACK = 5  # pixels a landmark may lie outside the detector's box (chin, jaw corners)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def face(astronaut: np.ndarray) -> FaceBox:
    return MtcnnFaceDetector().detect(astronaut)[0]


@pytest.fixture(scope="module")
def points(astronaut: np.ndarray, face: FaceBox) -> np.ndarray:
    return LandmarkPredictor().predict(astronaut, face)


@pytest.fixture(scope="module")
def masks(points: np.ndarray, astronaut: np.ndarray) -> dict[str, np.ndarray]:
    height, width = astronaut.shape[:2]
    return {region: region_mask(points, region, height, width) for region in REGIONS}


def inside(mask: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> bool:
    ys, xs = np.nonzero(mask)
    return bool(xs.min() >= x1 and xs.max() <= x2 and ys.min() >= y1 and ys.max() <= y2)


def test_the_68_points_lie_in_the_face_box(points: np.ndarray, face: FaceBox) -> None:
    assert points.shape == (68, 2) and points.dtype == np.float32
    assert np.all(points[:, 0] >= face.x1 - SLACK) and np.all(points[:, 0] <= face.x2 + SLACK)
    assert np.all(points[:, 1] >= face.y1 - SLACK) and np.all(points[:, 1] <= face.y2 + SLACK)


def test_eyes_lie_above_the_lips_and_each_on_its_side(points: np.ndarray) -> None:
    eyes = points[list(RIGHT_EYE) + list(LEFT_EYE)]
    lips = points[list(OUTER_LIP)]
    assert eyes[:, 1].max() < lips[:, 1].min()
    # The person's right eye is on the image's left.
    assert points[list(RIGHT_EYE), 0].max() < points[list(LEFT_EYE), 0].min()
    assert points[8, 1] > lips[:, 1].max()  # the chin is below the mouth


def test_every_region_is_inside_the_face_box(
    masks: dict[str, np.ndarray], face: FaceBox, points: np.ndarray
) -> None:
    for region, mask in masks.items():
        assert mask.dtype == bool and mask.any(), region
        # "face" reaches up to the hairline, which the detector's box may not.
        top = face.y1 - (0.5 * face.height if region == "face" else SLACK)
        assert inside(mask, face.x1 - SLACK, top, face.x2 + SLACK, face.y2 + SLACK), region
    brows = points[17:27, 1].min()
    assert np.nonzero(masks["face"])[0].min() < brows - 0.3 * (points[8, 1] - brows)


def test_regions_overlap_only_where_they_should(masks: dict[str, np.ndarray]) -> None:
    eyes, lips, jaw, face = masks["eyes"], masks["lips"], masks["jaw"], masks["face"]
    assert not (eyes & lips).any()
    assert not (eyes & jaw).any()
    assert not (masks["left_eye"] & masks["right_eye"]).any()
    assert np.array_equal(eyes, masks["left_eye"] | masks["right_eye"])
    assert not (lips & ~jaw).any(), "the lower face holds the mouth"
    for region, mask in masks.items():
        assert not (mask & ~face).any(), region


def test_dilation_grows_a_region_around_itself(points: np.ndarray) -> None:
    plain = region_mask(points, "lips", 512, 512)
    grown = region_mask(points, "lips", 512, 512, dilate=6)
    assert not (plain & ~grown).any() and grown.sum() > plain.sum()
    ys, xs = np.nonzero(grown)
    ys0, xs0 = np.nonzero(plain)
    assert xs.min() == xs0.min() - 6 and ys.max() == ys0.max() + 6


def test_the_forehead_follows_the_heads_tilt(points: np.ndarray) -> None:
    """Upside down, the forehead is added below the brows, not above."""
    flipped = points.copy()
    flipped[:, 1] = 511 - flipped[:, 1]
    mask = region_mask(flipped, "face", 512, 512)
    brows = flipped[17:27, 1].max()
    assert np.nonzero(mask)[0].max() > brows + 0.3 * (brows - flipped[8, 1])
    assert np.nonzero(mask)[0].min() >= flipped[:, 1].min() - 1


def test_bad_arguments_are_caller_errors(points: np.ndarray) -> None:
    with pytest.raises(ValueError, match="unknown face region 'nose'"):
        region_mask(points, "nose", 64, 64)
    with pytest.raises(ValueError, match="68 finite"):
        region_mask(points[:5], "jaw", 64, 64)
    with pytest.raises(ValueError, match="dilate"):
        region_mask(points, "jaw", 64, 64, dilate=-1)
