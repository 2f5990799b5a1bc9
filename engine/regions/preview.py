"""The Regions panel's preview: each region's share of the render canvas in its colour."""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image

from engine.recipe import Recipe
from engine.regions.canvas import canvas_masks
from engine.regions.masks import mask_preview
from engine.sizes import render_size


def region_preview(
    recipe: Recipe, load: Callable[[str], Image.Image], picture: Image.Image | None = None
) -> Image.Image:
    """The masks the base pass will use, over `picture` (e.g. the last render) or grey."""
    width, height = render_size(recipe.prompt)
    masks = canvas_masks(recipe.regions, width, height, load)
    return mask_preview(masks, picture)
