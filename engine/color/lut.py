"""LayerStyle LUT Apply (specs/algorithms.md §9) on float tensors: domain, "log" gamma, strength."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.color.cube import CubeLut
from engine.recipe import LutParams

# LayerStyle's "log" colour space is really a 2.2 gamma around the LUT.
LOG_GAMMA = 2.2


def sample_lut(table: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Trilinear lookup: table (N, N, N, 3) indexed [b, g, r]; coords (B, 3, H, W) in [0, 1]."""
    volume = table.to(coords).permute(3, 0, 1, 2).unsqueeze(0)  # (1, 3, D=b, H=g, W=r)
    # grid_sample takes (x, y, z) = (W, H, D) = (r, g, b) in [-1, 1]; the batch becomes depth.
    grid = coords.mul(2.0).sub_(1.0).permute(0, 2, 3, 1).unsqueeze(0)
    out = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0].permute(1, 0, 2, 3)


def map_through_lut(images: torch.Tensor, lut: CubeLut, color_space: str) -> torch.Tensor:
    """The LUT's output for each pixel, before the strength blend (not clipped)."""
    low = torch.tensor(lut.domain_min, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    high = torch.tensor(lut.domain_max, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    span = high - low
    # The node maps [0, 1] into the domain, the LUT maps the domain onto its grid, and the
    # result is mapped back; with the default domain every step is exactly the identity.
    x = images * span + low
    if color_space == "log":
        x = x.clamp(min=0.0).pow_(1.0 / LOG_GAMMA)
    coords = ((x - low) / span).clamp_(0.0, 1.0)
    out = sample_lut(lut.table, coords)
    if color_space == "log":
        out = out.clamp(min=0.0).pow_(LOG_GAMMA)
    return (out - low) / span


def lut_is_identity(params: LutParams) -> bool:
    """True when the step changes nothing (disabled, or strength 0)."""
    return not params.enabled or params.strength == 0


def apply_lut(
    images: torch.Tensor, lut: CubeLut, strength: int, color_space: str = "linear"
) -> torch.Tensor:
    """out = s * LUT(x) + (1 - s) * x with s = strength / 100, clipped to [0, 1]."""
    s = strength / 100.0
    mapped = map_through_lut(images, lut, color_space)
    return (mapped * s).add_(images * (1.0 - s)).clamp_(0.0, 1.0)
