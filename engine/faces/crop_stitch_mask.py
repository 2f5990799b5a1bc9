"""The mask pipeline of lquesada's InpaintCropImproved node (`prepare_mask`) and its steps,
on (H, W) float masks in [0, 1]. They follow the node's CPU ("compatible") processor: scipy's
morphology and Gaussian filter. The node's default GPU mode differs slightly: its blur pads
with zeros at the image border and its dilation rounds an even footprint up to odd."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.ndimage import binary_closing, binary_fill_holes, gaussian_filter, grey_dilation

if TYPE_CHECKING:
    from engine.faces.crop_stitch import CropParams

# The node's fill-holes ladder: each level closes and fills the mask thresholded at it.
FILL_THRESHOLDS = (1.0, 0.99, 0.97, 0.95, 0.93, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


def prepare_mask(mask: torch.Tensor, params: CropParams) -> torch.Tensor:
    """The node's mask pipeline: fill holes, expand, invert, blend (expand by B, blur σ = B/8),
    hi-pass. Its pre-resize and outpaint extension are not offered (see `CropParams`)."""
    if params.mask_fill_holes:
        mask = fill_mask_holes(mask)
    if params.mask_expand_pixels > 0:
        mask = expand_mask(mask, params.mask_expand_pixels)
    if params.mask_invert:
        mask = invert_mask(mask)
    if params.mask_blend_pixels > 0:
        mask = blur_mask(expand_mask(mask, params.mask_blend_pixels), params.mask_blend_pixels)
    if params.mask_hipass_filter >= 0.01:
        mask = hipass_mask(mask, params.mask_hipass_filter)
    return mask


def fill_mask_holes(mask: torch.Tensor) -> torch.Tensor:
    """Raise every area enclosed at a threshold level to that level (the node's ladder)."""
    values = _as_numpy(mask).astype(np.float64)
    rows = np.flatnonzero((values >= FILL_THRESHOLDS[-1]).any(axis=1))
    cols = np.flatnonzero((values >= FILL_THRESHOLDS[-1]).any(axis=0))
    if rows.size:
        # Only the mask's box changes. With a 4 px background margin on its inner sides the
        # 3x3 closing cannot see the window's edge, so the window gives the full image's
        # result exactly, and a face on a 2048² portrait costs a fraction of the whole.
        window = np.s_[
            max(rows[0] - 4, 0) : rows[-1] + 5,
            max(cols[0] - 4, 0) : cols[-1] + 5,
        ]
        values[window] = fill_holes_ladder(values[window])
    return _as_tensor(values, like=mask)


def fill_holes_ladder(values: np.ndarray) -> np.ndarray:
    """The node's loop on a whole array: close (3x3, border 1) and fill at each threshold."""
    for threshold in FILL_THRESHOLDS:
        closed = binary_closing(values >= threshold, structure=np.ones((3, 3)), border_value=1)
        filled = binary_fill_holes(closed)
        values = np.maximum(values, np.where(filled, threshold, 0.0))
    return values


def expand_kernel_size(pixels: float) -> int:
    """The node's square dilation footprint for "expand by `pixels`": ceil(pixels/4 * 1.5 + 1)."""
    return math.ceil(pixels / 4 * 1.5 + 1)


def expand_mask(mask: torch.Tensor, pixels: float) -> torch.Tensor:
    """Grey dilation with a square footprint of `expand_kernel_size(pixels)`."""
    size = expand_kernel_size(pixels)
    dilated = grey_dilation(_as_numpy(mask), footprint=np.ones((size, size), dtype=np.uint8))
    return _as_tensor(np.clip(dilated, 0.0, 1.0), like=mask)


def blur_mask(mask: torch.Tensor, blend_pixels: float) -> torch.Tensor:
    """Gaussian blur with σ = blend_pixels / 8 (scipy: radius int(4σ + 0.5), reflected borders).

    The node calls its blur with `blend_pixels * 0.5` and divides by 4 inside.
    """
    blurred = gaussian_filter(_as_numpy(mask), sigma=blend_pixels / 8)
    return _as_tensor(np.clip(blurred, 0.0, 1.0), like=mask)


def invert_mask(mask: torch.Tensor) -> torch.Tensor:
    """1 − mask."""
    return 1.0 - mask


def hipass_mask(mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """Zero the values below `threshold`."""
    return torch.where(mask < threshold, torch.zeros_like(mask), mask)


def _as_numpy(mask: torch.Tensor) -> np.ndarray:
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {tuple(mask.shape)}")
    return mask.detach().to("cpu", torch.float32).numpy()


def _as_tensor(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(values.astype(np.float32)).to(like.device)
