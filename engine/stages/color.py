"""Colour stage: Exposure -> Grain -> Brightness/Contrast/Saturation -> LUT on RGB."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.graph import StageContext
from engine.recipe import ColorParams, Recipe
from engine.refine.result import images_of


@dataclass(frozen=True)
class ColorStageParams:
    color: ColorParams
    lut_identity: str


class ColorStage:
    name = "color"
    version = 1
    uses_models = False

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return ("identity_score",)  # each post stage forwards its input while it is off

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.color.enabled

    def select(self, recipe: Recipe, env: Any) -> ColorStageParams:
        lut = recipe.color.lut
        identity = env.lut_identity(lut.file) if lut.enabled else ""
        return ColorStageParams(recipe.color, identity)

    def run(self, ctx: StageContext, params: ColorStageParams, upstream: dict) -> torch.Tensor:
        (images,) = upstream.values()
        ctx.step(self.name, 0, 1, "grading")
        return ctx.services.grader.grade(images_of(images), params.color)
