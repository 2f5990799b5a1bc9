"""The chin optimiser (seed 000 §8.1): the jaw of each face (masked by engine/refine/jaw.py)
cut out with InpaintCropImproved's rules at size² (context extend factor 1.26, 6 px mask
expansion, blend pixels), re-rendered by Flux through the crop's mask (denoise 1 inside the
pass), and stitched back with InpaintStitchImproved's blend."""

from __future__ import annotations

import dataclasses

import torch

from engine.faces.crop_stitch import CropParams, crop_for_inpaint, stitch
from engine.flux.fill import fill_conditioning
from engine.flux.inpaint import NoiseMask
from engine.flux.sampling import Conditioning, SamplingPass, run_pass
from engine.graph import StageContext
from engine.identity.pulid_passes import PulidPass, pulid_during
from engine.recipe import SettingsParams
from engine.recipe_refine import ChinParams, DetailerParams
from engine.refine.detailer import decode, detailer_settings, encode


def chin_crop_params(chin: ChinParams) -> CropParams:
    return CropParams(
        mask_expand_pixels=chin.mask_expand,
        mask_blend_pixels=chin.blend_pixels,
        context_from_mask_extend_factor=chin.context_factor,
        output_target_width=chin.size,
        output_target_height=chin.size,
    )


def chin_settings(base: SettingsParams, chin: ChinParams) -> SettingsParams:
    """The main sampler and scheduler with the chin pass's steps, denoise and guidance."""
    region = DetailerParams(steps=chin.steps, denoise=chin.denoise, guidance=chin.guidance)
    return detailer_settings(base, region)


def refine_chin(
    ctx: StageContext,
    stage: str,
    bundle,
    cond: Conditioning,
    image: torch.Tensor,
    mask: torch.Tensor,
    chin: ChinParams,
    settings: SettingsParams,
    seed: int,
    fill=None,
    pulid: PulidPass | None = None,
) -> torch.Tensor:
    """One (1, 3, H, W) image with the masked jaw re-rendered at chin.size² and stitched;
    with `fill` (the FLUX.1 Fill transformer) the crop is rendered by Fill; with `pulid`,
    PuLID acts on the transformer that samples."""
    crop = crop_for_inpaint(image.float().cpu(), mask, chin_crop_params(chin))
    height, width = crop.image.shape[2:]
    pixels = crop.image[0].permute(1, 2, 0).numpy()
    tokens = encode(bundle, pixels)
    sampling = SamplingPass(width, height, (seed,), dataclasses.replace(settings), True)
    mask = crop.mask.clamp(0, 1)
    concat = None
    if fill is not None:
        concat = fill_conditioning(bundle, crop.image, mask)
        bundle = dataclasses.replace(bundle, transformer=fill)
    with pulid_during(pulid, bundle.transformer, sampling):
        tokens = run_pass(ctx, stage, bundle, cond, sampling, tokens, NoiseMask(mask), concat)
    rendered = torch.from_numpy(decode(bundle, tokens, width, height)).permute(2, 0, 1)[None]
    return stitch(crop.plan, image.float().cpu(), rendered)
