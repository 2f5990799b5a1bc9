"""Source-image stage: an uploaded picture (by content digest) instead of a generated one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.graph import StageContext
from engine.images import pil_to_tensor
from engine.recipe import Recipe


@dataclass(frozen=True)
class ImageParams:
    digest: str


class ImageStage:
    name = "image"
    version = 1
    uses_models = False

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return ()

    def enabled(self, recipe: Recipe) -> bool:
        return True

    def select(self, recipe: Recipe, env: Any) -> ImageParams:
        return ImageParams(env.images.require(recipe.source.image))

    def run(self, ctx: StageContext, params: ImageParams, upstream: dict) -> torch.Tensor:
        image = ctx.services.images.load(params.digest)
        return pil_to_tensor([image], ctx.services.device)
