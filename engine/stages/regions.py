"""The regional conditioning: the base prompt's tokens (global) and each region's, with the
regions' shares of the canvas as image-token weights (regions/layout.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from engine.flux.prompt import PromptEmbeddings
from engine.flux.sampling import Conditioning
from engine.graph import StageContext
from engine.recipe import Recipe
from engine.recipe_regions import RegionsParams
from engine.regions.attention import TextSegments
from engine.regions.canvas import canvas_masks
from engine.regions.layout import RegionalLayout
from engine.sizes import render_size
from engine.stages.region_text import region_text_stage


@dataclass(frozen=True)
class RegionsStageParams:
    width: int
    height: int
    regions: RegionsParams  # the layout and masks (prompts and LoRAs key their own stages)
    base_segment: bool  # the base prompt (or Redux) gives global tokens


class RegionsStage:
    name = "regions"
    version = 1
    uses_models = False

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        texts = (region_text_stage(i) for i in range(1, recipe.regions.count() + 1))
        return ("redux", *texts)

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.regions.active()

    def select(self, recipe: Recipe, env: Any) -> RegionsStageParams:
        width, height = render_size(recipe.prompt)
        layout = _layout_only(recipe.regions)
        base = bool(recipe.prompt.prompt.strip()) or recipe.redux.enabled
        return RegionsStageParams(width, height, layout, base)

    def run(self, ctx: StageContext, p: RegionsStageParams, upstream: dict) -> Conditioning:
        base = upstream["redux"] if "redux" in upstream else upstream["text"]
        count = len(p.regions.regions)
        texts = [upstream[region_text_stage(i)] for i in range(1, count + 1)]
        masks = canvas_masks(p.regions, p.width, p.height, ctx.services.images.load)
        segments = TextSegments(
            base.positive.tokens.shape[1] if p.base_segment else 0,
            tuple(t.tokens.shape[1] for t in texts),
        )
        own_pooled = torch.stack([t.pooled for t in texts])
        layout = RegionalLayout.from_masks(segments, masks, p.regions.isolate, own_pooled)
        weights = layout.weights
        positive = base.positive
        parts = [positive.tokens] if p.base_segment else []
        tokens = torch.cat([*parts, *(t.tokens for t in texts)], dim=1)
        pooled = _area_pooled(positive.pooled if p.base_segment else None, texts, weights)
        bias = positive.token_bias if p.base_segment else None
        if bias is not None:  # Redux's bias on the base tokens; none on the regions'
            bias = torch.cat([bias, bias.new_zeros(tokens.shape[1] - bias.shape[0])])
        embeddings = PromptEmbeddings(tokens, pooled, bias, regions=layout)
        return Conditioning(embeddings, base.negative)


def _layout_only(regions: RegionsParams) -> RegionsParams:
    """The section without the prompts and LoRAs, which the region_text stages key on."""
    shapes = tuple(replace(r, prompt="", loras=()) for r in regions.regions)
    return replace(regions, regions=shapes)


def _area_pooled(
    base: torch.Tensor | None, texts: list[PromptEmbeddings], weights: torch.Tensor
) -> torch.Tensor:
    """CLIP-L's pooled vector conditions the whole image at once (Flux's modulation), so with
    regions it is the mean of the regions' own vectors (with their CLIP LoRAs) weighted by
    their share of the canvas, the base prompt's taking the share no region covers; a single
    vector with the whole canvas is returned exactly."""
    shares = weights.mean(dim=1).tolist()
    vectors = [t.pooled for t in texts]
    if base is not None:
        shares.append(max(0.0, 1.0 - sum(shares)))
        vectors.append(base)
    used = [(share, v) for share, v in zip(shares, vectors, strict=True) if share > 0]
    if not used:
        return base if base is not None else vectors[0]
    if len(used) == 1:
        return used[0][1]
    total = sum(share for share, _ in used)
    return sum(v * (share / total) for share, v in used)
