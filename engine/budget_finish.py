"""The finishing stages' share of a render's estimate: each Refine region's detailer passes
and the chin pass (engine/budget.py has the model). The expression edit is left out: at
LivePortrait's real sizes it is 1.3e12 FLOPs (warping + SPADE generator to 512², counted
with torch.utils.flop_counter on our networks), under 0.1 % of one 20-step detailer pass at
1024² (about 1.3e15), so it never decides a budget.

What a detailer costs depends on what its detector finds, which is not known before the
run, so the estimate assumes the usual portrait: one face, two eyes, two hands, one head of
hair, one face of skin, one chin. Each segment is rendered at the size Impact's scaling
gives a square crop around a bbox of the guide size: guide_size × crop_factor (bbox mode)
or guide_size (crop-region mode), capped by max_size, on Flux's 16 px grid; it costs its
steps × cycles transformer evaluations plus a VAE encode and decode of that size.
"""

from __future__ import annotations

import dataclasses

from engine.budget import (
    DeviceProfile,
    FluxShape,
    PassCost,
    decode_cost,
    evaluations,
    flux_pass,
)
from engine.recipe import Recipe
from engine.recipe_refine import DetailerParams

EXPECTED_SEGMENTS = {"face": 1, "eyes": 2, "hands": 2, "hair": 1, "skin": 1}
GRID = 16


def finishing_passes(
    recipe: Recipe, pending: frozenset[str] | None, shape: FluxShape, dev: DeviceProfile
) -> list[PassCost]:
    """The passes of the pending refine_<region> and refine_chin stages (None: every enabled
    one)."""

    def runs(stage: str) -> bool:
        return pending is None or stage in pending

    parts: list[PassCost] = []
    refine = recipe.refine
    for region in refine.active_regions():
        params = refine.region(region)
        steps = params.steps if params.denoise > 0 else 0
        for index in range(EXPECTED_SEGMENTS[region] if runs(f"refine_{region}") else 0):
            label = f"{region} {index + 1} detailer"
            side = detailer_side(params)
            parts += _segment(
                recipe, f"refine_{region}", label, side, steps * params.cycles, shape, dev
            )
    chin = refine.chin
    if runs("refine_chin") and refine.enabled and chin.enabled:
        parts += _segment(recipe, "refine_chin", "chin pass", chin.size, chin.steps, shape, dev)
    return parts


def detailer_side(region: DetailerParams) -> int:
    """The side of the square a segment is expected to render at."""
    wanted = region.guide_size * (region.crop_factor if region.guide_size_for == "bbox" else 1)
    return max(GRID, round(min(wanted, region.max_size) / GRID) * GRID)


def _segment(
    recipe: Recipe, stage: str, label: str, side: int, steps: int, shape: FluxShape,
    dev: DeviceProfile,
) -> list[PassCost]:  # fmt: skip
    """One segment's sampling and its encode + decode. Their FLOPs are left at 0: the
    stage's measured time includes detection, so it does not calibrate the device."""
    evals = evaluations(recipe.settings.sampler, steps, recipe.settings.cfg)
    sampled = flux_pass(stage, side, side, 1, evals, shape, dev)
    coded = decode_cost(side, side, 1, shape, dev, tiled=False)
    return [
        PassCost(stage, f"{label} {side}×{side}", sampled.seconds, sampled.gb),
        PassCost(stage, f"{label} encode + decode", 2 * coded.seconds, coded.gb),
    ]


def finishing_variants(recipe: Recipe) -> list[tuple[str, Recipe]]:
    """Recipes with one finishing pass switched off, each with a phrase saying which."""
    refine = recipe.refine
    out = []
    for region in refine.active_regions():
        off = dataclasses.replace(refine.region(region), enabled=False)
        changed = dataclasses.replace(refine, **{region: off})
        out.append((f"{region} detailer off", dataclasses.replace(recipe, refine=changed)))
    if refine.enabled and refine.chin.enabled:
        changed = dataclasses.replace(refine, chin=dataclasses.replace(refine.chin, enabled=False))
        out.append(("chin pass off", dataclasses.replace(recipe, refine=changed)))
    return out
