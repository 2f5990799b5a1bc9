"""The Refine passes with regions: each detected segment is re-rendered as the character of
the region it sits in, with that region's prompt after the base prompt and that region's
LoRAs on top of the main stack, so a face detailer does not turn both faces into one.

A segment belongs to the region whose mask covers the larger mean share of its detected box
(at least half of it); a segment between regions, or in a part no region covers, is rendered
with the base prompt and the main stack only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.flux.prompt import PromptEmbeddings
from engine.flux.sampling import Conditioning
from engine.lora import LoraParams
from engine.recipe import Recipe
from engine.regions.sampling import region_lora_params

OWNED_SHARE = 0.5


def character_params(recipe: Recipe, env) -> tuple[LoraParams, ...] | None:
    """What a Refine stage keys on for regions: each region's model LoRA slots."""
    return region_lora_params(recipe, env) if recipe.regions.active() else None


def main_conditioning(upstream: dict) -> Conditioning:
    """The base prompt's conditioning (with Redux tokens when that stage ran), never the
    regional one."""
    return upstream["redux"] if "redux" in upstream else upstream["text"]


class Characters:
    """The regions of a render, as a Refine pass sees them."""

    def __init__(self, regional: Conditioning, loras: tuple[LoraParams, ...]) -> None:
        self.layout = regional.positive.regions
        self.tokens = regional.positive.tokens
        self.region_loras = loras
        self._resized: dict[tuple[int, int], torch.Tensor] = {}

    def _masks_at(self, width: int, height: int) -> torch.Tensor:
        """The pixel masks over a width x height image (resized once per size)."""
        masks = self.layout.masks
        if masks.shape[1:] == (height, width):
            return masks
        if (width, height) not in self._resized:
            resized = F.interpolate(masks[None], size=(height, width), mode="bilinear")[0]
            self._resized[width, height] = resized
        return self._resized[width, height]

    def owner(self, box: tuple[float, float, float, float], width: int, height: int) -> int | None:
        """The region (0-based) whose mask covers at least half of the box on average."""
        masks = self._masks_at(width, height)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        x1, y1 = max(0, min(x1, width - 1)), max(0, min(y1, height - 1))
        x2, y2 = max(x1 + 1, min(x2, width)), max(y1 + 1, min(y2, height))
        shares = masks[:, y1:y2, x1:x2].float().mean(dim=(1, 2))
        best = int(torch.argmax(shares))
        return best if float(shares[best]) >= OWNED_SHARE else None

    def conditioning(self, main: Conditioning, region: int) -> Conditioning:
        """The main prompt's tokens followed by the region's own, with its pooled vector."""
        positive = main.positive
        own = self.tokens[:, self.layout.segments.region_slices[region]]
        tokens = torch.cat([positive.tokens, own.to(positive.tokens.dtype)], dim=1)
        bias = positive.token_bias
        if bias is not None:
            bias = torch.cat([bias, bias.new_zeros(own.shape[1])])
        pooled = self.layout.pooled[region] if self.layout.pooled is not None else positive.pooled
        return Conditioning(PromptEmbeddings(tokens, pooled, bias), main.negative)

    def loras(self, main: LoraParams, region: int | None) -> LoraParams:
        """The main stack with the region's slots added (the main stack alone for None)."""
        if region is None:
            return main
        own = self.region_loras[region]
        return LoraParams(main.slots + own.slots, main.files + own.files)
