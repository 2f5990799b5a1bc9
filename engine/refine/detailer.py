"""One Impact-Pack detailer pass over one segment (specs §8, "Per segment"): crop, scale to
guide_size (capped by max_size), LANCZOS, VAE-encode, sample with the latent noise mask
(feathered; differential diffusion when the feather is > 0) for `cycles` passes, decode,
LANCZOS back and paste with the feathered segment mask.

Flux works on a 16 px grid (8 px VAE cells × 2 × 2 patches), so the scaled crop is rounded
to multiples of 16, where Impact rounds to 8 for SD models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from engine.faces.crop_stitch import resize_image
from engine.faces.segments import Segment, choose_crop_scale, feather_mask, paste_segment
from engine.flux.fill import fill_conditioning
from engine.flux.inpaint import NoiseMask
from engine.flux.sampling import Conditioning, SamplingPass, run_pass
from engine.graph import StageContext
from engine.identity.pulid_passes import PulidPass, pulid_during
from engine.recipe import (
    DetailDaemonParams,
    FirstBlockCacheParams,
    LyingSigmaParams,
    SettingsParams,
)
from engine.recipe_refine import DetailerParams
from engine.stages.base import encode_pixels
from engine.stages.decode import decode_tokens

GRID = 16


@dataclass(frozen=True)
class SegmentOutcome:
    """What happened to one segment: its refined image, or why it was left as it was."""

    image: np.ndarray  # the whole (H, W, 3) float32 image after this segment
    refined: bool
    size: tuple[int, int] = (0, 0)  # the size it was rendered at


def detailer_settings(base: SettingsParams, region: DetailerParams) -> SettingsParams:
    """The main sampler and scheduler with the region's steps, denoise and guidance; the
    FaceDetailer samples plainly (no Detail Daemon, Lying Sigma or first-block cache)."""
    return dataclasses.replace(
        base,
        steps=region.steps,
        denoise=region.denoise,
        guidance=region.guidance,
        detail_daemon=DetailDaemonParams(enabled=False),
        lying_sigma=LyingSigmaParams(enabled=False),
        first_block_cache=FirstBlockCacheParams(enabled=False),
    )


def render_size(segment: Segment, region: DetailerParams) -> tuple[int, int] | None:
    """The scaled crop's size on Flux's grid, or None when the FaceDetailer skips it."""
    x1, y1, x2, y2 = segment.crop_region
    scale = choose_crop_scale(
        segment.bbox,
        x2 - x1,
        y2 - y1,
        guide_size=region.guide_size,
        guide_size_for_bbox=region.guide_size_for == "bbox",
        max_size=region.max_size,
        force_inpaint=region.force_inpaint,
    )
    if scale is None:
        return None
    return _on_grid(scale.width), _on_grid(scale.height)


def _on_grid(size: int) -> int:
    return max(GRID, round(size / GRID) * GRID)


def lanczos(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Float (H, W, 3) in [0, 1] resized with LANCZOS, as Impact resizes crops (in float)."""
    tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)
    return resize_image(tensor[None], width, height, "lanczos")[0].permute(1, 2, 0).numpy()


def refine_segment(
    ctx: StageContext,
    stage: str,
    bundle,
    cond: Conditioning,
    image: np.ndarray,
    segment: Segment,
    region: DetailerParams,
    settings: SettingsParams,
    seed: int,
    fill=None,
    pulid: PulidPass | None = None,
) -> SegmentOutcome:
    """The image with one segment re-rendered and pasted back; with `fill` (the FLUX.1 Fill
    transformer) it samples the masked crop with Fill, as Impact's inpaint_model does; with
    `pulid`, PuLID acts on the transformer that samples (Fill too: the same blocks)."""
    size = render_size(segment, region)
    if size is None or segment.is_empty:
        return SegmentOutcome(image, False)
    x1, y1, x2, y2 = segment.crop_region
    width, height = size
    scaled = lanczos(image[y1:y2, x1:x2], width, height)
    tokens = encode(bundle, scaled)
    feathered = np.clip(feather_mask(segment.mask, region.noise_mask_feather), 0, 1)
    mask = None
    if region.noise_mask:
        mask = NoiseMask(torch.from_numpy(feathered), differential=region.noise_mask_feather > 0)
    concat = None
    if fill is not None:  # Fill is told what to keep by the same feathered mask
        concat = fill_conditioning(bundle, to_tensor(scaled), torch.from_numpy(feathered))
        bundle = dataclasses.replace(bundle, transformer=fill)
    sampling = SamplingPass(width, height, (seed,), settings, True)
    with pulid_during(pulid, bundle.transformer, sampling):
        for _ in range(region.cycles):
            tokens = run_pass(ctx, stage, bundle, cond, sampling, tokens, mask=mask, concat=concat)
    refined = lanczos(decode(bundle, tokens, width, height), x2 - x1, y2 - y1)
    pasted = paste_segment(
        image, refined, segment.crop_region, feather_mask(segment.mask, region.feather)
    )
    return SegmentOutcome(pasted, True, size)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float -> (1, 3, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]


def encode(bundle, pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float in [0, 1] -> packed latents (1, L, 64) in the transformer's space."""
    return encode_pixels(bundle, to_tensor(pixels))


def decode(bundle, tokens: torch.Tensor, width: int, height: int) -> np.ndarray:
    """Packed latents -> (H, W, 3) float32 in [0, 1]."""
    return decode_tokens(bundle.vae, tokens, height, width)[0].permute(1, 2, 0).cpu().numpy()
