"""ArcFace identity embeddings from an insightface model pack in the models folder
(<models>/insightface/models/<pack>/, as ComfyUI's IPAdapter, InstantID and PuLID keep
them), loaded through insightface's own model_zoo from local files only.

The face is aligned the way the pack was trained: the pack's detector (SCRFD) finds the
face again in a square crop around the given FaceBox, and its five keypoints go to
insightface's norm_crop (112 x 112). Our detectors' boxes are not the detector's, and
ArcFace is only as good as its alignment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import InputError, ModelNotFoundError
from engine.faces.boxes import FaceBox, check_rgb

INSIGHTFACE_FOLDER = "insightface/models"  # under the models folder, as in ComfyUI
# What each known pack holds: (detector, recognition model). Other packs are routed by
# insightface (model_zoo tells the two apart by their inputs and outputs).
KNOWN_PACKS = {
    "buffalo_l": ("det_10g.onnx", "w600k_r50.onnx"),
    "antelopev2": ("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
}
PACK_URL = "https://github.com/deepinsight/insightface/tree/master/python-package"
# Cosine similarity at or above which insightface calls two faces one person: the default
# recognition threshold of insightface 2.1 (insightface/gui/core/constants.py,
# DEFAULT_THRESHOLD = 0.4, compared against the dot product of normed embeddings in
# gui/core/recognition.py search_gallery).
ARCFACE_SAME_PERSON = 0.4
CROP_SCALE = 2.0  # the square crop the detector searches is twice the box's longer side
DETECTOR_SIZE = (640, 640)  # insightface's usual det_size
DETECTOR_THRESHOLD = 0.5  # FaceAnalysis' default det_thresh
MIN_OVERLAP = 0.3  # IoU a re-detected face needs with the given box to count as that face


@dataclass(frozen=True)
class ArcFacePack:
    """A pack folder and the two files of it that are used."""

    folder: Path
    detector: Path
    recognizer: Path

    @property
    def identity(self) -> str:
        return pack_identity(self.folder)

    @property
    def label(self) -> str:
        return f"ArcFace (insightface {self.folder.name}: {self.recognizer.name})"


class ArcFaceIdentityEncoder:
    """L2-normalised ArcFace embeddings (512-d for buffalo_l and antelopev2)."""

    same_person = ARCFACE_SAME_PERSON

    def __init__(self, pack: ArcFacePack, device: str = "cpu") -> None:
        providers, ctx_id = onnx_providers(device)
        self.pack = pack
        self.identity = pack.identity
        self.label = pack.label
        self._detector = _load_model(pack.detector, providers, "detection")
        self._recognizer = _load_model(pack.recognizer, providers, "recognition")
        if not getattr(self._detector, "use_kps", False):
            raise ModelNotFoundError(
                f"{pack.detector} finds faces but gives no keypoints, so ArcFace cannot "
                f"align them: use a pack whose detector has keypoints (buffalo_l, "
                f"antelopev2) from {PACK_URL}."
            )
        self._detector.prepare(ctx_id, input_size=DETECTOR_SIZE, det_thresh=DETECTOR_THRESHOLD)
        self._recognizer.prepare(ctx_id)

    def embed(self, rgb: np.ndarray, face: FaceBox) -> np.ndarray:
        """The unit float32 embedding of the face in `face`; InputError when the pack's
        detector finds no face there to align."""
        from insightface.app.common import Face

        image = check_rgb(rgb)
        crop, origin = square_crop(image, face, CROP_SCALE)
        bgr = np.ascontiguousarray(crop[:, :, ::-1])  # insightface works in OpenCV's BGR
        boxes, keypoints = self._detector.detect(bgr)
        box = _shifted(face, origin)
        pick = best_overlap(boxes[:, :4], box)
        if pick is None:
            raise InputError(
                f"The identity model's detector ({self.pack.detector.name}) finds no face "
                f"in the box ({face.x1:.0f}, {face.y1:.0f})-({face.x2:.0f}, {face.y2:.0f}), "
                "so its identity cannot be measured: the face may be too small, turned "
                "away or covered. Try a larger or more frontal face."
            )
        found = Face(bbox=boxes[pick, :4], kps=keypoints[pick], det_score=boxes[pick, 4])
        vector = np.asarray(self._recognizer.get(bgr, found), dtype=np.float32)
        return unit_vector(vector)


def find_packs(models_dir: Path | None) -> list[Path]:
    """Pack folders under <models>/insightface/models/ holding .onnx files: buffalo_l,
    then antelopev2, then the others by name."""
    if models_dir is None:
        return []
    root = Path(models_dir) / INSIGHTFACE_FOLDER
    if not root.is_dir():
        return []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _files_folder(p) is not None)
    order = {name: rank for rank, name in enumerate(KNOWN_PACKS)}
    return sorted(folders, key=lambda p: (order.get(p.name, len(order)), p.name))


def read_pack(folder: Path) -> ArcFacePack:
    """The detector and recognition files of a pack folder; ModelNotFoundError naming the
    folder and the files expected when they are not there."""
    files = _files_folder(folder) or folder
    if folder.name in KNOWN_PACKS:
        wanted = [files / name for name in KNOWN_PACKS[folder.name]]
        missing = [path.name for path in wanted if not path.is_file()]
        if missing:
            raise ModelNotFoundError(
                f"The insightface pack {folder} is missing {', '.join(missing)}: it needs "
                f"{' and '.join(KNOWN_PACKS[folder.name])}. Unpack the whole "
                f"{folder.name}.zip ({PACK_URL}) into {folder}/."
            )
        return ArcFacePack(folder=folder, detector=wanted[0], recognizer=wanted[1])
    return _route_unknown_pack(folder, files)


def _route_unknown_pack(folder: Path, files: Path) -> ArcFacePack:
    """A pack we do not know by name: insightface's router tells its files apart."""
    from insightface.model_zoo import model_zoo

    found: dict[str, Path] = {}
    for path in sorted(files.glob("*.onnx")):
        try:  # a session per file on CPU, just to read its inputs and outputs
            model = model_zoo.get_model(str(path), providers=["CPUExecutionProvider"])
        except Exception:  # unreadable files are reported below as "no such model"
            continue
        task = getattr(model, "taskname", None)
        if task in ("detection", "recognition"):
            found.setdefault(task, path)
    if len(found) < 2:
        raise ModelNotFoundError(
            f"The insightface pack {folder} needs a face detector with keypoints (SCRFD, "
            "such as det_10g.onnx) and a recognition model (ArcFace, such as "
            f"w600k_r50.onnx); it has no {' and no '.join(_missing_tasks(found))}. Use "
            f"buffalo_l or antelopev2 from {PACK_URL}."
        )
    return ArcFacePack(folder=folder, detector=found["detection"], recognizer=found["recognition"])


def pack_identity(folder: Path) -> str:
    """'arcface:<pack>:<file>:<size>:<mtime_ns>:...' over the pack's .onnx files, read
    without loading anything: it changes when any of them does."""
    files = _files_folder(folder) or folder
    parts = [f"arcface:{folder.name}"]
    for path in sorted(files.glob("*.onnx")):
        stat = path.stat()
        parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return ":".join(parts)


def _missing_tasks(found: dict[str, Path]) -> list[str]:
    names = {"detection": "detector", "recognition": "recognition model"}
    return [names[task] for task in names if task not in found]


def _files_folder(folder: Path) -> Path | None:
    """Where a pack's .onnx files are: the folder, or the same-named folder inside it (the
    antelopev2 zip unpacks as antelopev2/antelopev2/)."""
    for candidate in (folder, folder / folder.name):
        if candidate.is_dir() and any(candidate.glob("*.onnx")):
            return candidate
    return None


def _load_model(path: Path, providers: list[Any], task: str) -> Any:
    """insightface's model for a local .onnx (download=False: never fetched)."""
    from insightface.model_zoo import model_zoo

    try:
        model = model_zoo.get_model(str(path), providers=providers, download=False)
    except Exception as error:
        raise ModelNotFoundError(
            f"{path} could not be read as an ONNX model ({type(error).__name__}: {error}). "
            f"Download the pack again from {PACK_URL}."
        ) from error
    if getattr(model, "taskname", None) != task:
        raise ModelNotFoundError(
            f"{path} is not a face {task} model (insightface reads it as "
            f"{getattr(model, 'taskname', 'nothing it knows')}). Download the pack again "
            f"from {PACK_URL}."
        )
    return model


def onnx_providers(device: str) -> tuple[list[Any], int]:
    """onnxruntime providers and insightface's ctx_id for a torch-style device string:
    CUDA when asked for and available (onnxruntime-gpu), else CPU."""
    import onnxruntime

    if device.startswith("cuda") and "CUDAExecutionProvider" in (
        onnxruntime.get_available_providers()
    ):
        index = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], index
    return ["CPUExecutionProvider"], -1


def square_crop(image: np.ndarray, face: FaceBox, scale: float) -> tuple[np.ndarray, tuple]:
    """A square crop `scale` times the box's longer side, centred on it and padded with black
    beyond the image; with the crop's top-left corner in image pixels."""
    if face.width <= 0 or face.height <= 0:
        raise ValueError(f"a face box needs a positive size, got {face}")
    side = max(int(round(scale * max(face.width, face.height))), 1)
    left = int(round((face.x1 + face.x2) / 2 - side / 2))
    top = int(round((face.y1 + face.y2) / 2 - side / 2))
    crop = np.zeros((side, side, 3), dtype=image.dtype)
    height, width = image.shape[:2]
    x1, y1 = max(left, 0), max(top, 0)
    x2, y2 = min(left + side, width), min(top + side, height)
    if x2 > x1 and y2 > y1:
        crop[y1 - top : y2 - top, x1 - left : x2 - left] = image[y1:y2, x1:x2]
    return crop, (left, top)


def best_overlap(boxes: np.ndarray, box: np.ndarray) -> int | None:
    """The index of the xyxy row overlapping `box` most, if its IoU reaches MIN_OVERLAP."""
    if len(boxes) == 0:
        return None
    x1 = np.maximum(boxes[:, 0], box[0])
    y1 = np.maximum(boxes[:, 1], box[1])
    x2 = np.minimum(boxes[:, 2], box[2])
    y2 = np.minimum(boxes[:, 3], box[3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = areas + (box[2] - box[0]) * (box[3] - box[1]) - inter
    overlap = inter / np.maximum(union, 1e-9)
    best = int(np.argmax(overlap))
    return best if overlap[best] >= MIN_OVERLAP else None


def unit_vector(vector: np.ndarray) -> np.ndarray:
    """The flattened vector scaled to length 1 (float32)."""
    flat = np.asarray(vector, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(flat))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("an identity embedding must be a finite, non-zero vector")
    return flat / norm


def _shifted(face: FaceBox, origin: tuple) -> np.ndarray:
    left, top = origin
    return np.array([face.x1 - left, face.y1 - top, face.x2 - left, face.y2 - top])
