"""The regions' masks over the render canvas, from the recipe's layout (a split or painted
masks): what the regions stage samples with and what the studio previews."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image

from engine.errors import InputError
from engine.recipe_regions import RegionsParams
from engine.regions.masks import painted_masks, split_masks


def canvas_masks(
    regions: RegionsParams, width: int, height: int, load: Callable[[str], Image.Image]
) -> torch.Tensor:
    """(N, H, W) in [0, 1]: the split's bands, or each region's painted mask (`load` reads a
    stored image by digest)."""
    count = len(regions.regions)
    if regions.layout != "painted":
        return split_masks(width, height, count, regions.layout, regions.gradient, regions.blur)
    missing = [i for i, region in enumerate(regions.regions, 1) if not region.mask]
    if missing:
        which = (
            f"Region {missing[0]} has"
            if len(missing) == 1
            else ("Regions " + ", ".join(str(i) for i in missing) + " have")
        )
        raise InputError(
            f"{which} no painted mask: paint or upload one, or choose a left/right or "
            "top/bottom split."
        )
    pictures = [load(region.mask) for region in regions.regions]
    return painted_masks(pictures, width, height, regions.blur)
