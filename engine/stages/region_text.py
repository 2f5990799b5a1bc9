"""One region's prompt through CLIP-L and T5, with the region's own CLIP LoRA strengths.

A stage per region slot, so each region's encoding is cached on its own: changing region B's
prompt or LoRA re-encodes B only (seed 001: `schedule_clip = false`, each branch encoded
once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.flux.prompt import encode_prompt, text_encoders_on_device
from engine.graph import StageContext
from engine.lora import LoraParams
from engine.recipe import Recipe
from engine.recipe_regions import MAX_REGIONS
from engine.stages.text import apply_loras


@dataclass(frozen=True)
class RegionTextParams:
    prompt: str  # as encoded: the region's LoRA trigger words first
    text_encoders: str
    weight_dtype: str
    loras: LoraParams  # the main stack's and the region's CLIP strengths
    t5_length: int  # 0: the model's own


def region_text_stage(index: int) -> str:
    return f"region_text_{index}"


REGION_TEXT_STAGES = tuple(region_text_stage(i) for i in range(1, MAX_REGIONS + 1))


class RegionTextStage:
    version = 1
    uses_models = True

    def __init__(self, index: int) -> None:
        self.index = index  # 1-based, as the studio names regions
        self.name = region_text_stage(index)

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return ()

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.regions.count() >= self.index

    def select(self, recipe: Recipe, env: Any) -> RegionTextParams:
        files = env.flux_files()
        region = recipe.regions.regions[self.index - 1]
        stack = env.loras()
        prompt = stack.prompt_with_triggers(region.prompt, region.loras)
        loras = stack.stage_params((*recipe.prompt.loras, *region.loras), "text")
        length = recipe.regions.text_tokens
        return RegionTextParams(prompt, files.text, files.weight_dtype, loras, length)

    def run(self, ctx: StageContext, params: RegionTextParams, upstream: dict) -> Any:
        bundle = ctx.services.flux_bundle()
        ctx.step(self.name, 0, 1, f"encoding region {self.index}'s prompt")
        apply_loras(ctx, bundle, params.loras, "text")
        with text_encoders_on_device(bundle):
            embeddings, notes = encode_prompt(bundle, params.prompt, params.t5_length or None)
        for note in notes:
            ctx.note(f"Region {self.index}: {note}")
        return embeddings
