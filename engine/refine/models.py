"""The Refine tab's helpers kept warm: detectors per file, the packaged MTCNN and dlib
landmarks, SAM and the identity encoder (Flux itself is the engine's ModelManager's).
Each is built on first use and rebuilt when its file changes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.faces.grounding import GroundingDino, find_grounding_dino
from engine.faces.identity import (
    IdentityEncoder,
    describe_identity,
    identity_encoder,
    identity_encoder_identity,
)
from engine.faces.landmarks import LandmarkPredictor
from engine.faces.mtcnn import MtcnnFaceDetector
from engine.faces.sam import SamSegmenter, describe_sam, find_sam_file, sam_identity
from engine.faces.yolo import YoloDetector
from engine.faces.yolo_segm import Detection
from engine.refine.sources import (
    REGION_ORDER,
    RegionSource,
    face_detections,
    landmark_detections,
    region_source,
)

# Detector boxes are kept down to this score and filtered by each region's bbox_threshold,
# so one warm detector serves every threshold.
LOWEST_SCORE = 0.05


def refine_models(env: Any) -> RefineModels:
    """The engine's Refine models, from a stage's env / services (a RunScope)."""
    return env.engine.refine_models


class RefineModels:
    def __init__(self, models_dir: Path | None, device: str) -> None:
        self.models_dir = models_dir
        self.device = device
        self._warm: dict[str, tuple[str, Any]] = {}
        self._lock = threading.RLock()

    def _get(self, slot: str, identity: str, build: Callable[[], Any]) -> Any:
        with self._lock:
            held = self._warm.get(slot)
            if held is not None and held[0] == identity:
                return held[1]
            value = build()
            self._warm[slot] = (identity, value)
            return value

    def source(self, region: str, named: str = "") -> RegionSource:
        return region_source(self.models_dir, region, named)

    def detect(self, source: RegionSource, rgb: np.ndarray) -> list[Detection]:
        """Every detection of the region in an RGB uint8 frame (filtered later)."""
        if source.kind == "yolo":
            assert source.path is not None
            model = self._get(f"yolo:{source.path}", source.identity, lambda: self._yolo(source))
            return model.detect(rgb)
        if source.kind == "mtcnn":
            return face_detections(self._mtcnn().detect(rgb))
        if source.kind == "landmarks":
            faces = self.detect(self.source("face"), rgb)
            faces = [f for f in faces if f.box.score >= 0.5]
            points = [self.landmarks().predict(rgb, f.box) for f in faces]
            scores = [f.box.score for f in faces]
            return landmark_detections(source.region, points, scores, *rgb.shape[:2])
        return []

    def _yolo(self, source: RegionSource) -> YoloDetector:
        assert source.path is not None
        return YoloDetector.from_file(source.path, device=self.device, confidence=LOWEST_SCORE)

    def _mtcnn(self) -> MtcnnFaceDetector:
        return self._get("mtcnn", "mtcnn", lambda: MtcnnFaceDetector(confidence=LOWEST_SCORE))

    def landmarks(self) -> LandmarkPredictor:
        return self._get("landmarks", "dlib-68", LandmarkPredictor)

    def sam_identity(self) -> str:
        path = find_sam_file(self.models_dir)
        return sam_identity(path) if path is not None else ""

    def sam(self) -> SamSegmenter | None:
        path = find_sam_file(self.models_dir)
        if path is None:
            return None
        return self._get(
            "sam", sam_identity(path), lambda: SamSegmenter.from_file(path, self.device)
        )

    def grounding_identity(self) -> str:
        found = find_grounding_dino(self.models_dir)
        return found.identity if found is not None else ""

    def grounding(self) -> GroundingDino | None:
        """The warm GroundingDINO for text-prompted masks, or None without one."""
        found = find_grounding_dino(self.models_dir)
        if found is None:
            return None
        return self._get(
            "grounding", found.identity, lambda: GroundingDino.load(found, self.device)
        )

    def identity_identity(self) -> str:
        return identity_encoder_identity(self.models_dir)

    def identity_encoder(self) -> IdentityEncoder:
        return self._get(
            "identity",
            self.identity_identity(),
            lambda: identity_encoder(self.models_dir, self.device),
        )

    def describe(self) -> str:
        """Which detector each region uses, SAM and the identity backend, for the UI."""
        lines = []
        for region in REGION_ORDER:
            try:
                lines.append(f"{region}: {self.source(region).label}")
            except Exception as exc:  # a named file that is gone: say so, keep describing
                lines.append(f"{region}: {exc}")
        return (
            "Refine detectors — " + "; ".join(lines) + ". "
            + describe_sam(self.models_dir) + " " + describe_identity(self.models_dir)
            + " " + self._describe_grounding()
        )  # fmt: skip

    def _describe_grounding(self) -> str:
        found = find_grounding_dino(self.models_dir)
        if found is None:
            return "No GroundingDINO (grounding-dino/): the chin's jaw comes from landmarks."
        return f"GroundingDINO for text-prompted jaw masks: {found.label}."
