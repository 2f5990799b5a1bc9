"""CPU fast path: the per-pixel colour maps after the grain, baked into one 3D LUT.

After the grain, brightness, contrast (once the image's mean luma is known), saturation, the
LUT with its domain, "log" gamma and strength blend depend on a pixel's colour alone. Running the
exact chain on a grid and applying that grid once replaces about fifteen full-image passes with
one. On the CPU the grid is applied by Pillow's C Color3DLUT to an 8-bit copy: torch's trilinear
grid_sample takes 200-370 ms at 2048^2 on two cores, Pillow ~70 ms on two threads, and a gather
formulation in torch was slower still. The 8-bit rounding and the grid keep the result within
2/255 of the float chain (tests bound it); a probe of the image's own colours sends maps too
steep for the grid (strong contrast into a "log" LUT) to the float path instead.
Work is cut into strips of rows that fit in cache: torch prepares them on the calling thread
(its own pool splits each op), Pillow and numpy grade them on a thread pool (both release the
GIL), and no full-size float temporaries are allocated.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageFilter

BAKE_SIZE = 65  # Pillow's largest grid: the grid error on kinks (clips) shrinks with the cell
STRIP_PIXELS = 256 * 1024  # ~3 MB of float RGB per strip: cache-sized, and enough strips to share
PROBE_PIXELS = 64 * 1024  # pixels of the image on which the baked grid is checked
MAX_GRID_ERROR_LEVELS = 1.0  # beyond this on the probe, the image is graded in float instead


def strip_ranges(height: int, width: int) -> list[slice]:
    """Row ranges that cover the image in strips of about STRIP_PIXELS pixels."""
    rows = max(1, STRIP_PIXELS // max(1, width))
    return [slice(start, min(start + rows, height)) for start in range(0, height, rows)]


def grid_colours(size: int = BAKE_SIZE) -> torch.Tensor:
    """Every grid colour as a (1, 3, size^3, 1) image, red varying fastest (Pillow's order)."""
    steps = torch.linspace(0.0, 1.0, size)
    grid = torch.empty(3, size, size, size)  # [channel, b, g, r]
    grid[0].copy_(steps.view(1, 1, size))
    grid[1].copy_(steps.view(1, size, 1))
    grid[2].copy_(steps.view(size, 1, 1))
    return grid.view(1, 3, -1, 1)


def bake(
    chain: Callable[[torch.Tensor], torch.Tensor], size: int | None = None
) -> ImageFilter.Color3DLUT:
    """Pillow's 3D LUT of `chain` evaluated on every grid colour (BAKE_SIZE^3 by default)."""
    size = size or BAKE_SIZE
    table = chain(grid_colours(size)).reshape(3, -1).T
    table = np.ascontiguousarray(table.numpy(), dtype=np.float32)
    return ImageFilter.Color3DLUT(size, table, _copy_table=False)


def quantize_into(image: torch.Tensor, pixels: np.ndarray) -> None:
    """(3, h, W) float in [0, 1] -> `pixels` (h, W, 3) uint8, rounded half up (8-bit node I/O)."""
    scaled = image.permute(1, 2, 0).mul(255.0).add_(0.5).clamp_(0.0, 255.0)
    torch.from_numpy(pixels).copy_(scaled)  # the float -> uint8 cast truncates: floor(x + 0.5)


def apply_lut_into(lut: ImageFilter.Color3DLUT, pixels: np.ndarray, out: torch.Tensor) -> None:
    """Write lut(pixels) / 255 into `out` (3, h, W) float32; pixels (h, W, 3) uint8."""
    graded = np.asarray(Image.fromarray(pixels).filter(lut))
    # numpy here: Pillow's array is read-only, which torch.from_numpy warns about.
    np.multiply(
        graded.transpose(2, 0, 1), np.float32(1.0 / 255.0), out=out.numpy(), casting="unsafe"
    )


def grid_error_levels(
    lut: ImageFilter.Color3DLUT,
    chain: Callable[[torch.Tensor], torch.Tensor],
    pixels: np.ndarray,
) -> float:
    """Largest difference, in 8-bit levels, between the baked grid and the exact chain on a
    subsample of `pixels` (H, W, 3) uint8, both given the same 8-bit input.

    Steep maps (a "log" LUT after strong contrast, say) bend faster than a 65^3 grid can follow;
    this catches them on the image's own colours so the caller can grade in float instead.
    """
    step = max(1, int((pixels.shape[0] * pixels.shape[1] / PROBE_PIXELS) ** 0.5))
    probe = np.ascontiguousarray(pixels[::step, ::step])
    fast = torch.from_numpy(np.array(Image.fromarray(probe).filter(lut))).permute(2, 0, 1)
    exact = chain(torch.from_numpy(probe).permute(2, 0, 1).unsqueeze(0).float() / 255.0)[0]
    exact = exact.mul(255.0).add_(0.5).clamp_(0.0, 255.0).floor_()
    return float((fast.float() - exact).abs().max())


def grid_follows_chain(
    lut: ImageFilter.Color3DLUT,
    chain: Callable[[torch.Tensor], torch.Tensor],
    pixels: np.ndarray,
) -> bool:
    """Whether the baked grid stays within MAX_GRID_ERROR_LEVELS of the chain on `pixels`."""
    return grid_error_levels(lut, chain, pixels) <= MAX_GRID_ERROR_LEVELS
