"""Redux stage: the Redux MLP on the SigLIP features, blended, appended to the prompt.

The tokens go after the T5 tokens of the positive conditioning ([T5; redux], specs §5); the
pooled CLIP vector is unchanged. The negative prompt (true CFG) gets nothing appended: it
is a separate transformer call, so its length may differ, and leaving the references out
of it is what ComfyUI does (StyleModelApply sits on the positive branch), so CFG pushes
towards them.

Each reference first goes through ReduxAdvanced (engine/redux/advanced.py): its token grid
downsampled, its tokens times weight². The prompt balance does not touch the tokens: away
from 0.5, or with a reference's own attention bias, it sets the positive embeddings'
token_bias (0 for the text tokens, the reference's bias for its Redux ones), which the
denoiser turns into an additive attention mask (engine/redux/blend.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import ModelNotFoundError
from engine.flux.prompt import PromptEmbeddings
from engine.flux.sampling import Conditioning
from engine.graph import StageContext
from engine.recipe import Recipe, ReduxAdvancedParams
from engine.redux.advanced import REDUX_GRID, TokenShaping, check_average, shape_tokens
from engine.redux.blend import blend, blend_scales, column_bias, reference_biases
from engine.redux.encoder import redux_tokens
from engine.redux.models import redux_models
from engine.stages.vision import VisionFeatures, reference_slots


@dataclass(frozen=True)
class ReduxStageParams:
    mode: str
    scales: tuple[float, ...]  # per reference in the vision stage's slot order
    balance: float
    shapings: tuple[TokenShaping, ...]  # ReduxAdvanced, per reference
    biases: tuple[float, ...]  # each reference's own attention bias
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
        # Only the settings of references that are set; in "average" only the ratio of the
        # strengths.
        slots = reference_slots(redux)
        strengths = tuple(getattr(redux, f"strength{i}") for i in slots)
        advanced = [getattr(redux, f"advanced{i}") for i in slots]
        shapings = tuple(token_shaping(a) for a in advanced)
        biases = tuple(a.attention_bias for a in advanced)
        # Refused before anything runs; `run` checks again on the models' own grid.
        check_average(redux.mode, shapings, biases, REDUX_GRID)
        scales = blend_scales(redux.mode, strengths)
        models = redux_models(env)
        return ReduxStageParams(
            mode=redux.mode,
            scales=scales,
            balance=redux.prompt_balance,
            shapings=shapings,
            biases=biases,
            redux=models.identity("redux"),
            dtype=str(models.dtype),
        )

    def run(self, ctx: StageContext, params: ReduxStageParams, upstream: dict) -> Conditioning:
        ctx.step(self.name, 0, 1, "Redux tokens")
        encoder = redux_models(ctx.services).redux_encoder()
        vision: VisionFeatures = upstream["vision"]
        cond: Conditioning = upstream["text"]
        check_widths(encoder, vision.features, cond.positive.tokens)
        per_reference = redux_tokens(encoder, vision.features)
        side = math.isqrt(per_reference.shape[1])
        check_average(params.mode, params.shapings, params.biases, side)
        blocks = [shape_tokens(t, s) for t, s in zip(per_reference, params.shapings, strict=True)]
        tokens = blend(blocks, params.mode, params.scales)
        positive = append_tokens(cond.positive, tokens, redux_bias(params, blocks))
        return Conditioning(positive, cond.negative)


def token_shaping(advanced: ReduxAdvancedParams) -> TokenShaping:
    """A reference's ReduxAdvanced settings; the function only counts when downsampling, so
    it is left out of the stage key otherwise."""
    factor = advanced.downsampling_factor
    if factor > 1:
        return TokenShaping(factor, advanced.downsampling_function, advanced.weight)
    return TokenShaping(weight=advanced.weight)


def redux_bias(params: ReduxStageParams, blocks: list[torch.Tensor]) -> torch.Tensor | None:
    """The Redux columns' attention bias (None: none); "average" makes one block, whose
    references `check_average` made share one bias."""
    biases = reference_biases(params.balance, params.biases)
    if biases is None:
        return None
    if params.mode == "average":
        return column_bias((blocks[0].shape[0],), biases[:1])
    return column_bias(tuple(block.shape[0] for block in blocks), biases)


def append_tokens(
    prompt: PromptEmbeddings, tokens: torch.Tensor, bias: float | torch.Tensor | None = None
) -> PromptEmbeddings:
    """[text tokens; extra tokens] along the sequence; the pooled vector unchanged.

    `bias` is the extra tokens' attention bias: one value for all, one per extra token, or
    None (none). The result's token_bias is the prompt's (zeros if it has none) followed by
    the extra tokens' (0 without `bias`); None when neither has one, so the denoiser passes
    no mask.
    """
    text = prompt.tokens
    extra = tokens.to(text.device, text.dtype).expand(text.shape[0], -1, -1)
    token_bias = prompt.token_bias
    if bias is not None or token_bias is not None:
        if token_bias is None:
            token_bias = torch.zeros(text.shape[1], dtype=torch.float32, device=text.device)
        value = 0.0 if bias is None else bias
        added = torch.as_tensor(value, dtype=token_bias.dtype, device=token_bias.device)
        token_bias = torch.cat([token_bias, added.expand(extra.shape[1])])
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
