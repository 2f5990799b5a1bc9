"""Expression sub-stage 1: detect and crop each face, then the appearance features and the
source keypoints. Keyed by the image, the crop factor and the weights, so a slider move or
a new driving image never re-runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import InputError
from engine.expression.models import expression_models
from engine.expression.prepare import FacePrep, prepare_face
from engine.graph import StageContext
from engine.recipe import Recipe


@dataclass(frozen=True)
class FaceStageParams:
    crop_factor: float
    networks: str  # identity of the LivePortrait weights
    detector: str  # identity of the face detector
    rendered: bool  # a render (True) passes a faceless image through; an upload is refused


def expression_source(recipe: Recipe) -> str:
    """The stage whose images the Expression editor works on."""
    return "image" if recipe.source.kind == "image" else "decode"


class ExpressionFaceStage:
    name = "expression_face"
    version = 1
    uses_models = True

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return (expression_source(recipe),)

    def enabled(self, recipe: Recipe) -> bool:
        return True  # planned only through the expression stage

    def select(self, recipe: Recipe, env: Any) -> FaceStageParams:
        models = expression_models(env)
        crop_factor = recipe.expression.crop_factor
        rendered = expression_source(recipe) != "image"
        identities = (models.identity(), models.detector_identity())
        return FaceStageParams(crop_factor, *identities, rendered)

    def run(
        self, ctx: StageContext, params: FaceStageParams, upstream: dict
    ) -> tuple[FacePrep | None, ...]:
        """One FacePrep per image; None for a rendered image without a usable face (it is
        passed through as rendered, and the report says why)."""
        (images,) = upstream.values()
        models = expression_models(ctx.services)
        nets, detector = models.networks(), models.detector()
        preps: list[FacePrep | None] = []
        for index, image in enumerate(images):
            ctx.step(self.name, index, len(images), "finding and encoding the face")
            what = "the image" if len(images) == 1 else f"image {index + 1} of the batch"
            try:
                with torch.inference_mode(), models.autocast():
                    preps.append(prepare_face(nets, detector, image, params.crop_factor, what))
            except InputError as exc:
                if not params.rendered:
                    raise
                ctx.note(f"Expression not applied: {exc} It is shown as rendered.")
                preps.append(None)
        ctx.note(f"Expression: faces found by {detector.label}.")
        return tuple(preps)
