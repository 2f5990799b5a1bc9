"""Regional prompting as an additive joint-attention mask for Flux (issue 14).

The text tokens are [base segment (absent when the base prompt is empty); region 1 segment;
…; region N segment] and the image tokens follow them, as diffusers' Flux attention
concatenates [text; image] in both block types. Region r's image weights w_r (N, L) come from
engine.regions.masks.token_weights, its owners from token_owners.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.flux.denoiser import MASK_ROW_ALIGN


@dataclass(frozen=True)
class TextSegments:
    """Token counts of the text segments, in sequence order: base first, then each region."""

    base: int
    regions: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.base < 0 or any(count < 0 for count in self.regions):
            raise ValueError(f"negative token count in {self}")

    @property
    def total(self) -> int:
        """All text tokens: base + Σ regions."""
        return self.base + sum(self.regions)

    @property
    def base_slice(self) -> slice:
        """The base segment's positions in the text (empty when base == 0)."""
        return slice(0, self.base)

    @property
    def region_slices(self) -> tuple[slice, ...]:
        """Each region's segment positions in the text, in region order."""
        slices = []
        start = self.base
        for count in self.regions:
            slices.append(slice(start, start + count))
            start += count
        return tuple(slices)


def _check(segments: TextSegments, weights: torch.Tensor) -> None:
    regions = len(segments.regions)
    if weights.dim() != 2 or weights.shape[0] != regions:
        raise ValueError(
            f"region weights of shape {tuple(weights.shape)} for {regions} regions: "
            "expected (regions, image tokens)"
        )
    if bool((weights < 0).any()) or bool(weights.isnan().any()):
        raise ValueError("region weights must be non-negative numbers")


def regional_attention_mask(
    segments: TextSegments,
    weights: torch.Tensor,
    owners: torch.Tensor,
    dtype: torch.dtype,
    device: torch.device | str,
    isolate: bool = True,
) -> torch.Tensor | None:
    """The additive joint-attention mask (1, 1, T, T), T = segments.total + L, or None.

    weights (N, L) are the regions' image-token weights, owners (L,) the owning region of each
    image token (−1 = background). Entries are 0 (allowed), −inf (blocked) or log w (soft;
    log 0 = −inf), by query row:
      * base text: base-text keys 0, every other key −inf (nothing from one region reaches
        another through the base);
      * region r text: its own text keys 0, image key j log w_r[j], other text −inf;
      * image token i: base-text keys 0, region r's text keys log w_r[i]; image key j 0 when
        not isolate, or owners[i] == owners[j], or either is −1; else −inf.
    So with hard weights (0/1) and isolate, a region's image tokens never depend on another
    region's image tokens (background tokens see and are seen by every image token, and
    bridge regions; a region's text reads the image tokens its weights touch).

    None when every entry would be 0 (e.g. one region with weight 1 everywhere and no base),
    so attention keeps its mask-free kernel. Rows are allocated padded to a multiple of
    MASK_ROW_ALIGN and sliced (as attention_bias_mask), so SDPA's memory-efficient kernel uses
    the mask without copying it. ValueError when weights is not (len(segments.regions), L) or
    owners not (L,).
    """
    _check(segments, weights)
    image = weights.shape[1]
    if tuple(owners.shape) != (image,):
        raise ValueError(f"token owners of shape {tuple(owners.shape)} for {image} image tokens")
    if _all_allowed(segments, weights, owners, isolate):
        return None
    text = segments.total
    size = text + image
    log_weights = weights.to(device=device, dtype=torch.float32).log().to(dtype)  # (N, L)
    padded = -(-size // MASK_ROW_ALIGN) * MASK_ROW_ALIGN
    mask = torch.empty(size, padded, dtype=dtype, device=device)[:, :size]
    mask[:text].fill_(-math.inf)
    base = segments.base_slice
    mask[base, base] = 0
    mask[text:, base] = 0
    for region, rows in enumerate(segments.region_slices):
        mask[rows, rows] = 0
        mask[rows, text:] = log_weights[region]
        mask[text:, rows] = log_weights[region][:, None]
    pixels = mask[text:, text:]
    pixels.fill_(0)
    if isolate:
        own = owners.to(device=device, dtype=torch.int16)
        pixels.masked_fill_(own[:, None] != own[None, :], -math.inf)
        background = (own < 0).nonzero().squeeze(1)
        pixels[background] = 0
        pixels[:, background] = 0
    # Every query sees at least itself: text its own segment, image tokens their own owner.
    assert bool((mask.diagonal() == 0).all()), "a query row of the regional mask sees nothing"
    return mask[None, None]


def _all_allowed(
    segments: TextSegments, weights: torch.Tensor, owners: torch.Tensor, isolate: bool
) -> bool:
    """Whether regional_attention_mask's rules give 0 everywhere, read off the rules without
    building the mask: at most one non-empty text segment, no base text beside image tokens,
    weight 1 on every image token for each region with text, and no two image tokens owned by
    different regions when isolating."""
    filled = [count for count in (segments.base, *segments.regions) if count > 0]
    if len(filled) > 1 or (segments.base > 0 and weights.shape[1] > 0):
        return False
    for region, count in enumerate(segments.regions):
        if count > 0 and not bool((weights[region] == 1).all()):
            return False
    return not isolate or owners[owners >= 0].unique().numel() <= 1


def token_segment_weights(
    segments: TextSegments, weights: torch.Tensor, image_tokens: int
) -> torch.Tensor:
    """(N, T) float32, T = segments.total + image_tokens: per region r, the weight of every
    token of the joint [text; image] sequence for r's LoRA: 1 on r's own text segment, 0 on the
    base and other regions' text, w_r[j] on image token j. ValueError when weights is not
    (len(segments.regions), image_tokens)."""
    _check(segments, weights)
    if weights.shape[1] != image_tokens:
        raise ValueError(
            f"region weights for {weights.shape[1]} image tokens, expected {image_tokens}"
        )
    text = segments.total
    out = torch.zeros(
        len(segments.regions), text + image_tokens, dtype=torch.float32, device=weights.device
    )
    for region, rows in enumerate(segments.region_slices):
        out[region, rows] = 1
    out[:, text:] = weights.to(torch.float32)
    return out
