"""Redux stage: the Redux MLP on the SigLIP features, blended, appended to the prompt.

The tokens go after the T5 tokens of the positive conditioning ([T5; redux], specs §5); the
pooled CLIP vector is unchanged. The negative prompt (true CFG) gets nothing appended: it
is a separate transformer call, so its length may differ, and leaving the references out
of it is what ComfyUI does (StyleModelApply sits on the positive branch), so CFG pushes
towards them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import ModelNotFoundError
from engine.flux.prompt import PromptEmbeddings
from engine.flux.sampling import Conditioning
from engine.graph import StageContext
from engine.recipe import Recipe
from engine.redux.blend import apply_balance, blend, blend_scales
from engine.redux.encoder import redux_tokens
from engine.redux.models import redux_models
from engine.stages.vision import VisionFeatures, reference_slots


@dataclass(frozen=True)
class ReduxStageParams:
    mode: str
    scales: tuple[float, ...]  # per reference in the vision stage's slot order
    balance: float
    redux: str  # identity of the Redux MLP weights
    dtype: str


class ReduxStage:
    name = "redux"
    version = 1
    uses_models = True

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return ("text", "vision")

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.redux.enabled

    def select(self, recipe: Recipe, env: Any) -> ReduxStageParams:
        redux = recipe.redux
        # Only the strengths of references that are set; in "average" only their ratio.
        strengths = tuple(getattr(redux, f"strength{i}") for i in reference_slots(redux))
        scales = blend_scales(redux.mode, strengths)
        models = redux_models(env)
        identity = models.identity("redux")
        return ReduxStageParams(
            redux.mode, scales, redux.prompt_balance, identity, str(models.dtype)
        )

    def run(self, ctx: StageContext, params: ReduxStageParams, upstream: dict) -> Conditioning:
        ctx.step(self.name, 0, 1, "Redux tokens")
        encoder = redux_models(ctx.services).redux_encoder()
        vision: VisionFeatures = upstream["vision"]
        cond: Conditioning = upstream["text"]
        check_widths(encoder, vision.features, cond.positive.tokens)
        tokens = blend(redux_tokens(encoder, vision.features), params.mode, params.scales)
        tokens = apply_balance(tokens, params.balance)
        return Conditioning(append_tokens(cond.positive, tokens), cond.negative)


def append_tokens(prompt: PromptEmbeddings, tokens: torch.Tensor) -> PromptEmbeddings:
    """[text tokens; extra tokens] along the sequence; the pooled vector unchanged."""
    text = prompt.tokens
    extra = tokens.to(text.device, text.dtype).expand(text.shape[0], -1, -1)
    return PromptEmbeddings(tokens=torch.cat([text, extra], dim=1), pooled=prompt.pooled)


def check_widths(encoder, features: torch.Tensor, text_tokens: torch.Tensor) -> None:
    """SigLIP -> Redux -> T5 widths must chain (e.g. no tiny Redux with real Flux)."""
    redux_in, redux_out = encoder.config.redux_dim, encoder.config.txt_in_features
    if features.shape[-1] != redux_in or text_tokens.shape[-1] != redux_out:
        raise ModelNotFoundError(
            f"These files do not belong together: the Redux encoder maps width {redux_in} to "
            f"{redux_out}, but SigLIP gives width {features.shape[-1]} and the T5 tokens "
            f"have width {text_tokens.shape[-1]}."
        )
