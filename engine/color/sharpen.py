"""ImageSharpen (ComfyUI core, specs §10): a Gaussian unsharp kernel on RGB in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sharpen_kernel(radius: int, sigma: float, alpha: float) -> torch.Tensor:
    """K = -10·alpha·G with the centre raised so the kernel sums to 1.

    G is a Gaussian on a linspace(-1, 1, 2r+1)² grid (sigma in units of the radius).
    """
    axis = torch.linspace(-1, 1, 2 * radius + 1, dtype=torch.float64)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    g = torch.exp(-(x * x + y * y) / (2 * sigma * sigma))
    kernel = -(alpha * 10) * g / g.sum()
    kernel[radius, radius] += 1.0 - kernel.sum()
    return kernel.float()


def sharpen(images: torch.Tensor, alpha: float, radius: int = 1, sigma: float = 1.0):
    """(B, 3, H, W) -> sharpened copy, reflect-padded, clamped to [0, 1]; alpha 0 is identity."""
    if alpha == 0:
        return images
    kernel = sharpen_kernel(radius, sigma, alpha).to(images.device)
    weight = kernel.expand(images.shape[1], 1, -1, -1)
    padded = F.pad(images, (radius,) * 4, mode="reflect")
    return F.conv2d(padded, weight, groups=images.shape[1]).clamp(0, 1)
