"""Conditioning stage: the prompt (and, for true CFG, the negative prompt) through CLIP + T5."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.flux.guidance import needs_uncond
from engine.flux.prompt import encode_prompt, text_encoders_on_device
from engine.flux.sampling import Conditioning
from engine.graph import StageContext
from engine.lora import LoraParams
from engine.recipe import Recipe


@dataclass(frozen=True)
class TextParams:
    prompt: str  # as encoded: the enabled LoRAs' trigger words first
    negative_prompt: str | None  # None: no true CFG, nothing to encode
    text_encoders: str
    weight_dtype: str
    loras: LoraParams  # text-encoder (CLIP-L) strengths


def true_cfg_scales(recipe: Recipe) -> list[float]:
    """The CFG scales of every pass that needs the negative prompt encoded."""
    return [recipe.settings.cfg]


class TextStage:
    name = "text"
    version = 3
    uses_models = True

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return ()

    def enabled(self, recipe: Recipe) -> bool:
        return True

    def select(self, recipe: Recipe, env: Any) -> TextParams:
        files = env.flux_files()
        uses_cfg = any(needs_uncond(scale) for scale in true_cfg_scales(recipe))
        negative = recipe.prompt.negative_prompt if uses_cfg else None
        stack, slots = env.loras(), recipe.prompt.loras
        prompt = stack.prompt_with_triggers(recipe.prompt.prompt, slots)
        loras = stack.stage_params(slots, "text")
        return TextParams(prompt, negative, files.text, files.weight_dtype, loras)

    def run(self, ctx: StageContext, params: TextParams, upstream: dict) -> Conditioning:
        bundle = ctx.services.flux_bundle()
        ctx.step(self.name, 0, 1, "encoding the prompt")
        apply_loras(ctx, bundle, params.loras, "text")
        with text_encoders_on_device(bundle):
            positive, notes = encode_prompt(bundle, params.prompt)
            negative = None
            if params.negative_prompt is not None:
                negative, _ = encode_prompt(bundle, params.negative_prompt)
        for note in notes:
            ctx.note(note)
        return Conditioning(positive, negative)


def apply_loras(ctx: StageContext, bundle, loras: LoraParams, part: str) -> None:
    """Set the warm model's adapters to this stage's slots (always: another recipe may have
    left LoRAs on) and report each file's match."""
    for match in ctx.services.loras().apply(bundle, loras.slots, part=part):
        ctx.note(f"LoRA {match.line()}")
