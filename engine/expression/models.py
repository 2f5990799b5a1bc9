"""Keeping the LivePortrait networks and the face detector warm for the Expression stages.

The networks come from `<models>/liveportrait/` (engine/expression/weights.py says which
layouts); in the tiny demo and in tests, tiny random networks of the same classes stand in.
The face detector is the suite's face_yolov8n.pt when the models folder has it, else the
MTCNN detector that ships inside a pip package (engine/faces/find.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.errors import ModelNotFoundError
from engine.expression.networks import LivePortraitNetworks, build_networks
from engine.expression.networks.config import TINY_CONFIG
from engine.expression.paste import mask_template
from engine.expression.weights import find_liveportrait_files, load_networks
from engine.faces.boxes import FaceDetector
from engine.faces.find import describe_detector, face_detector, face_detector_identity
from engine.models.precision import pick_device

TINY_SEED = 1021
TINY_IDENTITY = "tiny:liveportrait:v1"


@dataclass(frozen=True)
class ExpressionConfig:
    models_dir: Path | None = None
    tiny: bool = False
    device: str = "auto"


def expression_models(env: Any) -> ExpressionModels:
    """The engine's expression models, from a stage's env / services (a RunScope)."""
    return env.engine.expression_models


class ExpressionModels:
    """One warm copy of the five networks and of the face detector, reloaded on change."""

    def __init__(self, config: ExpressionConfig) -> None:
        self.config = config
        self.device = pick_device(config.device)
        self._networks: tuple[str, LivePortraitNetworks] | None = None
        self._detector: tuple[str, FaceDetector] | None = None
        self._mask: torch.Tensor | None = None
        self._lock = threading.RLock()

    @property
    def folders(self) -> list[Path]:
        root = self.config.models_dir
        return [root / "liveportrait"] if root is not None else []

    def identity(self) -> str:
        """Changes when the network files change (for the stages' cache keys)."""
        if self.config.tiny:
            return TINY_IDENTITY
        return find_liveportrait_files(self.folders).identity

    def networks(self) -> LivePortraitNetworks:
        with self._lock:
            identity = self.identity()
            if self._networks is not None and self._networks[0] == identity:
                return self._networks[1]
            self._networks = None  # free the old copy before loading the new one
            nets = self._build()
            nets.to(self.device, torch.float32)
            nets.eval()
            self._networks = (identity, nets)
            return nets

    def _build(self) -> LivePortraitNetworks:
        if self.config.tiny:
            return build_networks(TINY_CONFIG, seed=TINY_SEED)
        return load_networks(find_liveportrait_files(self.folders))

    def detector(self) -> FaceDetector:
        with self._lock:
            identity = self.detector_identity()
            if self._detector is not None and self._detector[0] == identity:
                return self._detector[1]
            found = face_detector(self.config.models_dir, str(self.device))
            self._detector = (identity, found)
            return found

    def detector_identity(self) -> str:
        """Changes when the detector's weights change (a file stat, nothing loaded)."""
        return face_detector_identity(self.config.models_dir)

    def mask(self) -> torch.Tensor:
        """The paste-back mask template (512², uint8) on the device, made once."""
        with self._lock:
            if self._mask is None:
                self._mask = mask_template().to(self.device)
            return self._mask

    def describe(self) -> str:
        """One line for the UI: which LivePortrait files and face detector are used."""
        detector = describe_detector(self.config.models_dir)
        if self.config.tiny:
            return f"Expression: tiny random LivePortrait networks (demo). {detector}"
        try:
            files = find_liveportrait_files(self.folders)
        except ModelNotFoundError as exc:  # say where we looked
            return f"Expression unavailable. {exc}"
        return f"Expression: LivePortrait networks from {files.label}. {detector}"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """fp16 autocast on CUDA, as LivePortrait runs by default; plain fp32 elsewhere."""
        enabled = self.device.type == "cuda"
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=enabled):
            yield
