"""Redux stage: the Redux MLP on the SigLIP features, blended, appended to the prompt.

The tokens go after the T5 tokens of the positive conditioning ([T5; redux], specs §5); the
pooled CLIP vector is unchanged. The negative prompt (true CFG) gets nothing appended: it
is a separate transformer call, so its length may differ, and leaving the references out
of it is what ComfyUI does (StyleModelApply sits on the positive branch), so CFG pushes
towards them.

The prompt balance does not touch the tokens: away from 0.5 it sets the positive
embeddings' token_bias (0 for the text tokens, log(scale) for the Redux ones), which the
denoiser turns into an additive attention mask (engine/redux/blend.py).
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
from engine.redux.blend import balance_bias, blend, blend_scales
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
    version = 2  # 2: the prompt balance is an attention bias, no longer a token scale
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
        positive = append_tokens(cond.positive, tokens, balance_bias(params.balance))
        return Conditioning(positive, cond.negative)


def append_tokens(
    prompt: PromptEmbeddings, tokens: torch.Tensor, bias: float | None = None
) -> PromptEmbeddings:
    """[text tokens; extra tokens] along the sequence; the pooled vector unchanged.

    `bias` is the extra tokens' attention bias (None: none). The result's token_bias is the
    prompt's (zeros if it has none) followed by `bias` (or 0) per extra token; None when
    neither has one, so the denoiser passes no mask.
    """
    text = prompt.tokens
    extra = tokens.to(text.device, text.dtype).expand(text.shape[0], -1, -1)
    token_bias = prompt.token_bias
    if bias is not None or token_bias is not None:
        if token_bias is None:
            token_bias = torch.zeros(text.shape[1], dtype=torch.float32, device=text.device)
        value = 0.0 if bias is None else bias
        added = token_bias.new_full((extra.shape[1],), value)
        token_bias = torch.cat([token_bias, added])
    return PromptEmbeddings(
        tokens=torch.cat([text, extra], dim=1), pooled=prompt.pooled, token_bias=token_bias
    )


def check_widths(encoder, features: torch.Tensor, text_tokens: torch.Tensor) -> None:
    """SigLIP -> Redux -> T5 widths must chain (e.g. no tiny Redux with real Flux)."""
    redux_in, redux_out = encoder.config.redux_dim, encoder.config.txt_in_features
    if features.shape[-1] != redux_in or text_tokens.shape[-1] != redux_out:
        raise ModelNotFoundError(
            f"These files do not belong together: the Redux encoder maps width {redux_in} to "
            f"{redux_out}, but SigLIP gives width {features.shape[-1]} and the T5 tokens "
            f"have width {text_tokens.shape[-1]}."
        )
