"""What every face detector returns, and the shape every detector has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class FaceBox:
    """One detected face: corners in image pixels (xyxy) and the detector's confidence."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1


@runtime_checkable
class FaceDetector(Protocol):
    """A loaded face detector. `identity` changes exactly when its weights change (thresholds
    are the caller's parameters); `label` names it in the UI."""

    identity: str
    label: str

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        """Faces in an RGB uint8 (H, W, 3) image, in image pixel coordinates."""
        ...


def check_rgb(rgb: np.ndarray) -> np.ndarray:
    """The image as a C-contiguous uint8 (H, W, 3) array; anything else is a caller's bug."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3:
        raise ValueError(f"face detection needs an RGB uint8 (H, W, 3) array, got {_describe(rgb)}")
    if rgb.shape[2] != 3:
        raise ValueError(f"face detection needs 3 channels (RGB), got shape {rgb.shape}")
    return np.ascontiguousarray(rgb)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__
