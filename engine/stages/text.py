"""Conditioning stage: the prompt through CLIP-L and T5 (cached by prompt and encoders)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.flux.prompt import PromptEmbeddings, encode_prompt
from engine.graph import StageContext
from engine.recipe import Recipe


@dataclass(frozen=True)
class TextParams:
    prompt: str
    text_encoders: str
    weight_dtype: str


class TextStage:
    name = "text"
    version = 1
    uses_models = True

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return ()

    def enabled(self, recipe: Recipe) -> bool:
        return True

    def select(self, recipe: Recipe, env: Any) -> TextParams:
        files = env.flux_files()
        return TextParams(recipe.prompt.prompt, files.text, files.weight_dtype)

    def run(self, ctx: StageContext, params: TextParams, upstream: dict) -> PromptEmbeddings:
        bundle = ctx.services.flux_bundle()
        ctx.step(self.name, 0, 1, "encoding the prompt")
        embeddings, notes = encode_prompt(bundle, params.prompt)
        for note in notes:
            ctx.note(note)
        return embeddings
