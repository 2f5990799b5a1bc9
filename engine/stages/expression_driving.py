"""Expression sub-stage 2: the driving image's keypoints (its face cropped at 1.7), keyed
by the image digest and the weights only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.expression.keypoints import KeypointInfo
from engine.expression.models import expression_models
from engine.expression.prepare import driving_info
from engine.graph import StageContext
from engine.images import pil_to_tensor
from engine.recipe import Recipe


@dataclass(frozen=True)
class DrivingParams:
    digest: str
    networks: str
    detector: str


class ExpressionDrivingStage:
    name = "expression_driving"
    version = 1
    uses_models = True

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return ()

    def enabled(self, recipe: Recipe) -> bool:
        return True  # planned only when the expression stage has a driving image

    def select(self, recipe: Recipe, env: Any) -> DrivingParams:
        models = expression_models(env)
        digest = env.images.require(recipe.expression.sample_image)
        return DrivingParams(digest, models.identity(), models.detector_identity())

    def run(self, ctx: StageContext, params: DrivingParams, upstream: dict) -> KeypointInfo:
        ctx.step(self.name, 0, 1, "reading the driving face")
        models = expression_models(ctx.services)
        image = pil_to_tensor([ctx.services.images.load(params.digest)], ctx.services.device)[0]
        with torch.inference_mode(), models.autocast():
            return driving_info(models.networks(), models.detector(), image)
