"""The identity score (seed 002): after the upscale passes and before the colour grade, the
largest face of each image compared with the mean embedding of the reference photos, on the
Refine tab's identity scale (ArcFace from an insightface pack, else dlib's descriptor). The
colour grade is left out of it, so a re-grade never re-scores. With no reference the stage is
off: nothing is computed and nothing is shown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine.errors import InputError
from engine.faces.identity import similarity, unit_vector
from engine.graph import StageContext
from engine.recipe import Recipe
from engine.refine.identity_guard import to_uint8
from engine.refine.models import refine_models
from engine.refine.result import images_of
from engine.upscale.passes import UPSCALE_STAGES

STAGE = "identity_score"


@dataclass(frozen=True, eq=False)
class ScoredImages:
    """The images, unchanged, with each one's similarity to the references (None: no face)."""

    images: torch.Tensor
    scores: list[float | None]
    backend: str  # the identity model's label
    same_person: float  # its same-person line on the similarity scale

    def note(self) -> str:
        """One report line, e.g. 'Identity vs reference (…, same person ≥ 0.400): image 1
        0.781'."""
        figures = "; ".join(
            f"image {i} " + (f"{s:.3f}" if s is not None else "no face")
            for i, s in enumerate(self.scores, 1)
        )
        line = f"same person ≥ {self.same_person:.3f}"
        return f"Identity vs reference ({self.backend}, {line}): {figures}"


@dataclass(frozen=True)
class IdentityScoreParams:
    references: tuple[str, ...]
    encoder: str  # the identity model's identity
    faces: str  # the face detector's identity


class IdentityScoreStage:
    name = STAGE
    version = 1
    uses_models = True

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return (UPSCALE_STAGES[-1],)  # final_seams: every image stage forwards while off

    def enabled(self, recipe: Recipe) -> bool:
        return bool(recipe.identity.references)

    def select(self, recipe: Recipe, env: Any) -> IdentityScoreParams:
        refs = tuple(env.images.require(digest) for digest in recipe.identity.references)
        models = refine_models(env)
        return IdentityScoreParams(refs, models.identity_identity(), models.source("face").identity)

    def run(self, ctx: StageContext, p: IdentityScoreParams, upstream: dict) -> ScoredImages:
        images = images_of(next(iter(upstream.values())))
        models = refine_models(ctx.services)
        encoder = models.identity_encoder()
        reference = self._reference(ctx, models, encoder, p.references)
        scores = []
        for image in images:
            rgb = to_uint8(image.permute(1, 2, 0).float().cpu().numpy())
            face = largest_face(models, rgb)
            scores.append(None if face is None else self._score(encoder, rgb, face, reference))
        return ScoredImages(images, scores, encoder.label, encoder.same_person)

    @staticmethod
    def _score(encoder, rgb: np.ndarray, face, reference: np.ndarray) -> float | None:
        try:
            return similarity(reference, encoder.embed(rgb, face))
        except InputError:  # the encoder found no face inside the detector's box
            return None

    @staticmethod
    def _reference(ctx: StageContext, models, encoder, digests: tuple[str, ...]) -> np.ndarray:
        """The mean of the references' unit embeddings, as a unit vector."""
        vectors = []
        for number, digest in enumerate(digests, 1):
            photo = np.asarray(ctx.services.images.load(digest).convert("RGB"))
            faces = sorted_faces(models, photo)
            if not faces:
                raise InputError(
                    f"Identity reference {number} has no face the detector can find. Use a "
                    "photo where the person's face is clearly visible, roughly facing the camera."
                )
            if len(faces) > 1:
                ctx.note(
                    f"Identity reference {number} has {len(faces)} faces; the largest is used."
                )
            vectors.append(unit_vector(encoder.embed(photo, faces[0])))
        return unit_vector(np.mean(vectors, axis=0))


def sorted_faces(models, rgb: np.ndarray) -> list:
    """The faces (FaceBox) found with the usual face detector at score ≥ 0.5, largest first."""
    found = [d.box for d in models.detect(models.source("face"), rgb) if d.box.score >= 0.5]
    return sorted(found, key=lambda box: box.width * box.height, reverse=True)


def largest_face(models, rgb: np.ndarray):
    faces = sorted_faces(models, rgb)
    return faces[0] if faces else None
