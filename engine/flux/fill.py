"""FLUX.1 Fill's extra inputs: the masked image's latents and the mask, concatenated to the
noisy latents of every call (ComfyUI's InpaintModelConditioning and Flux concat_cond).

InpaintModelConditioning greys out the pixels the mask rounds to 1 (x = (x − 0.5)·(1 −
round(m)) + 0.5) and VAE-encodes them into the model's latent space. The Flux model takes
the soft mask at pixel resolution, folds each 8×8 block into 64 channels of its latent pixel
(view (h, 8, w, 8) → permute → 64 × h × w) and concatenates [noisy 16, image 16, mask 64]
channels before patchifying 2×2. Packing works channel by channel, so the packed input is
[noisy 64 | image 64 | mask 256] per token: this module builds the last 320.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.flux import latents
from engine.stages.base import encode_pixels

MASK_CELL = 8  # the VAE's downscale: one latent pixel per 8×8 pixel block


def fill_conditioning(bundle, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Packed (1, L, 320) Fill inputs for an RGB (1, 3, H, W) image in [0, 1] and a mask
    (H', W') in [0, 1] (1 = re-render), resized bilinearly to H × W when its size differs."""
    _, _, height, width = image.shape
    if height % 16 or width % 16:
        raise ValueError(f"image size {width}x{height} is not a multiple of 16")
    soft = pixel_mask(mask, height, width)
    keep = 1.0 - soft.round()
    greyed = (image.float().cpu() - 0.5) * keep + 0.5
    masked_latents = encode_pixels(bundle, greyed)
    return torch.cat([masked_latents, packed_mask(soft).to(masked_latents)], dim=-1)


def pixel_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The mask as float (1, 1, height, width), bilinear when its size differs."""
    flat = mask.detach().float().cpu().reshape(1, 1, *mask.shape[-2:])
    if tuple(flat.shape[-2:]) != (height, width):
        flat = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
    return flat


def packed_mask(mask: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W) → each 8×8 block as 64 channels of its latent pixel → packed (1, L, 256)."""
    _, _, height, width = mask.shape
    h, w = height // MASK_CELL, width // MASK_CELL
    cells = mask.view(1, h, MASK_CELL, w, MASK_CELL).permute(0, 2, 4, 1, 3)
    return latents.pack(cells.reshape(1, MASK_CELL * MASK_CELL, h, w))
