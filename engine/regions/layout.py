"""The regional layout a pass samples with: the text segments, each region's weight on every
image token, and the attention mask and LoRA token weights built from them (once per
device and dtype)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from engine.regions.attention import TextSegments, regional_attention_mask, token_segment_weights
from engine.regions.masks import token_owners, token_weights


@dataclass(eq=False)
class RegionalLayout:
    """`weights` (N, L) is region r's share of image token i; `owners` (L,) the region each
    image token belongs to for the image-to-image isolation (-1: background); `masks`
    (N, H, W) the pixel masks they come from, to lay the regions over another size."""

    segments: TextSegments
    weights: torch.Tensor
    owners: torch.Tensor
    isolate: bool
    masks: torch.Tensor | None = None
    pooled: torch.Tensor | None = None  # (N, 1, P): each region's own CLIP pooled vector
    _masks: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_masks(
        cls,
        segments: TextSegments,
        masks: torch.Tensor,
        isolate: bool,
        pooled: torch.Tensor | None = None,
    ) -> RegionalLayout:
        weights = token_weights(masks)
        return cls(segments, weights, token_owners(weights), isolate, masks, pooled)

    def at(self, width: int, height: int) -> RegionalLayout:
        """The same regions over a width x height canvas (the latent pass's upscale): the
        pixel masks resized bilinearly."""
        if self.masks is None:
            raise ValueError("a layout without its pixel masks cannot be resized")
        if self.masks.shape[1:] == (height, width):
            return self
        resized = F.interpolate(self.masks[None], size=(height, width), mode="bilinear")
        masks = resized[0].clamp(0, 1)
        return RegionalLayout.from_masks(self.segments, masks, self.isolate, self.pooled)

    @property
    def text_tokens(self) -> int:
        return self.segments.total

    @property
    def image_tokens(self) -> int:
        return int(self.weights.shape[1])

    def attention_mask(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        """The additive joint-attention mask (None when it would block nothing)."""
        key = (dtype, device)
        if key not in self._masks:
            self._masks[key] = regional_attention_mask(
                self.segments, self.weights, self.owners, dtype, device, isolate=self.isolate
            )
        return self._masks[key]

    def lora_tokens(self) -> torch.Tensor:
        """(N, T + L): each region's LoRA weight on every token of the joint sequence."""
        return token_segment_weights(self.segments, self.weights, self.image_tokens)
