"""The paste-back mask (mask_template.png, generated) and the blend of the edited face into
the full frame: out = M * face + (1 - M) * source, M and face warped to the frame.

The node warps with cv2.warpAffine (bilinear, zero border) and blends in uint8; we warp with
torch's grid_sample on the image's device and blend in float, so a slider move never leaves
the GPU and the result is not quantised before the PNG is written.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from engine.expression.crop import OUTPUT_SIZE, CropPlan

MASK_INNER = (16, 496)  # pixels with both coordinates in this range are 255
MASK_FEATHER = 16.0  # px of linear fall-off with Euclidean distance from the inner square


def mask_template(size: int = OUTPUT_SIZE) -> torch.Tensor:
    """LivePortrait's mask_template.png as (size, size) uint8, made in code: 255 inside
    [16, 496]², then floor(255 * (1 - d / 16)) for distance d, 0 beyond (row/col 0 are 0,
    the last row and column 15)."""
    index = torch.arange(size, dtype=torch.float64)
    low, high = MASK_INNER
    outside = torch.clamp(torch.maximum(low - index, index - high), min=0)
    distance = torch.sqrt(outside[:, None] ** 2 + outside[None, :] ** 2)
    value = torch.floor(255 * torch.clamp(1 - distance / MASK_FEATHER, min=0))
    return value.to(torch.uint8)


def warp_to_frame(
    patch: torch.Tensor,
    origin: tuple[int, int],
    scale: tuple[float, float],
    window: tuple[int, int, int, int],
) -> torch.Tensor:
    """warpAffine of a (C, 512, 512) patch by [[sx, 0, x0], [0, sy, y0]], bilinear with a zero
    border, evaluated only on the frame window (left, top, right, bottom) -> (C, h, w)."""
    left, top, right, bottom = window
    size = patch.shape[-1]
    xs = torch.arange(left, right, device=patch.device, dtype=torch.float32)
    ys = torch.arange(top, bottom, device=patch.device, dtype=torch.float32)
    # frame pixel -> patch pixel, then to grid_sample's [-1, 1] with pixel centres on the ends
    u = (xs - origin[0]) / scale[0] * (2 / (size - 1)) - 1
    v = (ys - origin[1]) / scale[1] * (2 / (size - 1)) - 1
    grid = torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1)[None]
    warped = F.grid_sample(
        patch[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return warped[0]


def paste_window(plan: CropPlan, width: int, height: int) -> tuple[int, int, int, int]:
    """The frame pixels the warped mask can reach (it is zero everywhere else)."""
    square = plan.square
    right = square.x1 + math.ceil((OUTPUT_SIZE - 1) * plan.mask_scale[0]) + 1
    bottom = square.y1 + math.ceil((OUTPUT_SIZE - 1) * plan.mask_scale[1]) + 1
    return max(square.x1, 0), max(square.y1, 0), min(right, width), min(bottom, height)


def paste_face(
    source: torch.Tensor, face: torch.Tensor, plan: CropPlan, mask: torch.Tensor
) -> torch.Tensor:
    """Blend the generator's (3, 512, 512) face into the (3, H, W) source; returns a new image."""
    height, width = source.shape[-2:]
    window = paste_window(plan, width, height)
    left, top, right, bottom = window
    origin = (plan.square.x1, plan.square.y1)
    face_part = warp_to_frame(face, origin, plan.face_scale, window)
    weight = warp_to_frame(mask[None].to(face.device) / 255.0, origin, plan.mask_scale, window)
    result = source.clone()
    region = source[:, top:bottom, left:right].float()
    blended = weight * face_part + (1 - weight) * region
    result[:, top:bottom, left:right] = blended.clamp(0, 1).to(source.dtype)
    return result
