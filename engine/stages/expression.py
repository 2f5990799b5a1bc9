"""Expression stage: sliders (and the driving face) -> keypoints -> stitching -> warp ->
generator -> paste-back, per image. Only this runs when a slider moves; the face crop and
features come cached from expression_face. Neutral settings switch the stage off."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.expression.editor import EditParams, is_neutral
from engine.expression.models import expression_models
from engine.expression.prepare import edit_image
from engine.graph import StageContext
from engine.recipe import Recipe
from engine.stages.expression_face import expression_source


@dataclass(frozen=True)
class ExpressionStageParams:
    edit: EditParams
    networks: str


class ExpressionStage:
    name = "expression"
    version = 1
    uses_models = True

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        parts = (expression_source(recipe), "expression_face")
        return (*parts, "expression_driving") if recipe.expression.sample_image else parts

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.expression.enabled and not is_neutral(recipe.expression)

    def select(self, recipe: Recipe, env: Any) -> ExpressionStageParams:
        edit = EditParams.from_recipe(recipe.expression)
        return ExpressionStageParams(edit, expression_models(env).identity())

    def run(self, ctx: StageContext, params: ExpressionStageParams, upstream: dict) -> torch.Tensor:
        images, preps, *driving = upstream.values()
        models = expression_models(ctx.services)
        nets, mask = models.networks(), models.mask()
        edited = []
        for index, (image, prep) in enumerate(zip(images, preps, strict=True)):
            ctx.step(self.name, index, len(images), "editing the expression")
            if prep is None:  # a rendered image without a usable face: as rendered
                edited.append(image)
                continue
            with torch.inference_mode(), models.autocast():
                face = driving[0] if driving else None
                edited.append(edit_image(nets, prep, image, params.edit, face, mask))
        return torch.stack(edited)
