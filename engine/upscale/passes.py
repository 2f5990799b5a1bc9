"""The two Upscale passes as the stages, the studio and the run budget name them, and the
node's settings of each part of a pass (pure Python: no torch)."""

from __future__ import annotations

from typing import Any

from engine.errors import RecipeError
from engine.recipe_upscale import UsduParams
from engine.upscale.usdu_plan import UsduSettings

PASS_NAMES = ("first", "final")
PASS_LABELS = {"first": "Upscale 1", "final": "Upscale final"}
STAGE_KINDS = ("upscale", "tiles", "seams")
UPSCALE_STAGES = tuple(f"{name}_{kind}" for name in PASS_NAMES for kind in STAGE_KINDS)


def usdu_settings(usdu: UsduParams, part: str, label: str) -> UsduSettings:
    """The node's settings for a pass's tiles (the seam fix left at its defaults, out of
    their key) or its seams (redraw's own settings left at theirs: the tiles' key carries
    them). Seams sample at seam_fix_denoise when it is above 0, else at the pass's denoise."""
    shared: dict[str, Any] = {
        "upscale_by": usdu.upscale_by,
        "tile_width": usdu.tile_width,
        "tile_height": usdu.tile_height,
        "force_uniform_tiles": usdu.force_uniform_tiles,
    }
    if part == "tiles":
        extra = {"mask_blur": usdu.mask_blur, "tile_padding": usdu.tile_padding}
        extra.update(mode=usdu.mode, denoise=usdu.denoise)
    else:
        extra = {
            "denoise": usdu.seam_fix_denoise or usdu.denoise,
            "mode": "none",
            "seam_fix_mode": usdu.seam_fix,
            "seam_fix_denoise": usdu.seam_fix_denoise,
            "seam_fix_width": usdu.seam_fix_width,
            "seam_fix_mask_blur": usdu.seam_fix_mask_blur,
            "seam_fix_padding": usdu.seam_fix_padding,
        }
    try:
        return UsduSettings(**shared, **extra)
    except ValueError as exc:
        raise RecipeError(f"{label}: {exc}.") from None
