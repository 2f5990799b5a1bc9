"""Where each Refine region's detections come from: the detector file the recipe names, else
the region's usual file in <models>/ultralytics/, else what ships in pip packages (faces
from MTCNN; eyes and facial skin from dlib's 68 landmarks on those faces). Hands and hair
have no packaged detector: without their file the region is skipped with a note."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.faces.boxes import FaceBox
from engine.faces.find import find_detector_file, list_detector_files
from engine.faces.landmarks import region_mask
from engine.faces.yolo import yolo_identity
from engine.faces.yolo_segm import Detection
from engine.recipe_refine import REFINE_REGIONS

REGION_ORDER = REFINE_REGIONS

USUAL_FILES = {
    "face": ("bbox/face_yolov8m.pt", "bbox/face_yolov8n.pt", "face_yolov8n.pt"),
    "eyes": ("bbox/Eyeful_v2-Paired.pt",),
    "hands": ("bbox/hand_yolov8s.pt",),
    "hair": ("segm/hair_yolov8n-seg_60.pt",),
    "skin": (),
}
PACKAGED = {
    "face": "MTCNN faces (packaged)",
    "eyes": "eyes from dlib's 68 landmarks on each face (packaged)",
    "skin": "facial skin from dlib's 68 landmarks, eyes and lips left out (packaged)",
}
EYE_REGIONS = ("right_eye", "left_eye")  # the person's own right eye first (image left)
SKIN_CUTS = ("eyes", "lips")


@dataclass(frozen=True)
class RegionSource:
    """A region's detections: a YOLO file (path), or a packaged route ("mtcnn",
    "landmarks"), or nothing; `identity` goes into the stage's cache key."""

    region: str
    kind: str  # "yolo" | "mtcnn" | "landmarks" | "none"
    identity: str
    label: str
    path: Path | None = None


def region_source(models_dir: Path | None, region: str, named: str) -> RegionSource:
    """The source for `region`: the named file (which must be in the models folder), its
    usual file, or the packaged fallback."""
    if named:
        path = find_detector_file(models_dir, named)
        if path is None:
            raise InputError(
                f"The {region} detector {named!r} is not in the models folder's ultralytics/ "
                f"folder (found: {', '.join(list_detector_files(models_dir)) or 'none'}). "
                "Pick another one, or leave it empty for the usual detector."
            )
        return _yolo(region, path)
    for name in USUAL_FILES[region]:
        path = find_detector_file(models_dir, name)
        if path is not None:
            return _yolo(region, path)
    if region == "face":
        return RegionSource(region, "mtcnn", "mtcnn", PACKAGED[region])
    if region in PACKAGED:
        return RegionSource(region, "landmarks", "dlib-68", PACKAGED[region])
    wanted = USUAL_FILES[region][0]
    return RegionSource(
        region, "none", "none", f"no {region} detector: put {wanted} in ultralytics/"
    )


def _yolo(region: str, path: Path) -> RegionSource:
    return RegionSource(region, "yolo", yolo_identity(path), f"{path.name} (YOLO)", path)


def face_detections(boxes: list[FaceBox]) -> list[Detection]:
    return [Detection(box, "face", None) for box in boxes]


def landmark_detections(
    region: str, points_per_face: list[np.ndarray], scores: list[float], height: int, width: int
) -> list[Detection]:
    """Eyes (one detection per eye) or facial skin (one per face) as masked detections."""
    found = []
    for points, score in zip(points_per_face, scores, strict=True):
        if region == "eyes":
            masks = [(name, region_mask(points, name, height, width)) for name in EYE_REGIONS]
        else:
            skin = region_mask(points, "face", height, width)
            for cut in SKIN_CUTS:
                skin &= ~region_mask(points, cut, height, width, dilate=4)
            masks = [("skin", skin)]
        found += [_masked(label, mask, score) for label, mask in masks if mask.any()]
    return found


def _masked(label: str, mask: np.ndarray, score: float) -> Detection:
    rows, cols = np.nonzero(mask)
    box = FaceBox(
        float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1), score
    )
    return Detection(box, label, mask)
