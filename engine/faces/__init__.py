"""Face detection: the suite's YOLO face model (loaded without running pickled code) and a
packaged MTCNN detector, so the studio works with no detector file."""

from engine.faces.boxes import FaceBox, FaceDetector
from engine.faces.find import (
    describe_detector,
    face_detector,
    face_detector_identity,
    find_face_model,
)

__all__ = [
    "FaceBox",
    "FaceDetector",
    "describe_detector",
    "face_detector",
    "face_detector_identity",
    "find_face_model",
]
