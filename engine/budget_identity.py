"""PuLID's and the pose ControlNet's share of the base pass in a render's estimate
(engine/budget.py has the model).

- The ControlNet runs once per transformer call inside its window, over the same tokens:
  one call costs a transformer call scaled by its blocks over the transformer's (a union
  model's 5 double + 10 single blocks against FLUX.1's 19 + 38), times the share of the steps
  in its window.
- PuLID's cross-attention modules (one after every second double and fourth single block:
  20 for FLUX.1) each cost 2 · 20,981,760 FLOPs per image token per call (their Linears; the
  32 ID tokens make the attention itself negligible), inside PuLID's window.
Their FLOPs are left at 0 in the estimate's parts: the base pass's measured time calibrates
the device against the base pass alone.

With `identity.pulid.finishing` PuLID also acts on the latent, Refine and Upscale passes:
each pending one gets a "PuLID" part, counted the same way over the pass's image tokens and
transformer calls (the usual portrait's segments and each pass's tile plan, as the finishing
and upscale estimates assume), with the window's share end - start of the calls.
"""

from __future__ import annotations

from engine.budget import (
    DeviceProfile,
    FluxShape,
    PassCost,
    Workload,
    evaluations,
    flux_flops,
)
from engine.budget_finish import EXPECTED_SEGMENTS, detailer_side
from engine.budget_upscale import job_sizes, on_flux_grid, plan_pass
from engine.recipe import Recipe
from engine.sizes import render_size, round_to_grid

CONTROLNET_BLOCKS = 15  # InstantX / Shakker union: 5 double + 10 single
CA_PARAMETERS = 20_981_760  # one PerceiverAttentionCA (pulid_counts.json)


def identity_parts(recipe: Recipe, shape: FluxShape, dev: DeviceProfile) -> list[PassCost]:
    """The extra work of PuLID and the pose ControlNet on the base pass (none when off)."""
    if recipe.source.kind == "image":
        return []
    identity, s = recipe.identity, recipe.settings
    width, height = render_size(recipe.prompt)
    image_tokens = (width // 16) * (height // 16)
    calls = evaluations(s.sampler, s.steps, s.cfg) * recipe.prompt.batch_size
    parts = []
    if identity.pose_active():
        pose = identity.pose
        share = min(1.0, CONTROLNET_BLOCKS / max(shape.blocks, 1)) * (pose.end - pose.start)
        flops = calls * share * flux_flops(image_tokens + shape.text_tokens, shape)
        parts.append(PassCost("base", "pose ControlNet", flops / dev.flops_per_s, 0.0))
    if identity.pulid_active():
        flops = pulid_flops(recipe, shape, width, height, calls)
        parts.append(PassCost("base", "PuLID", flops / dev.flops_per_s, 0.0))
    return parts


def pulid_flops(recipe: Recipe, shape: FluxShape, width: int, height: int, calls: int) -> float:
    """PuLID's CA modules over `calls` transformer calls of a width x height pass."""
    pulid = recipe.identity.pulid
    modules = max(1, round(shape.blocks * 20 / 57))  # FLUX.1: every 2nd of 19, 4th of 38
    image_tokens = (width // 16) * (height // 16)
    return calls * (pulid.end - pulid.start) * modules * 2 * CA_PARAMETERS * image_tokens


def pulid_finishing_parts(
    recipe: Recipe, work: Workload, shape: FluxShape, dev: DeviceProfile
) -> list[PassCost]:
    """PuLID's share of the pending latent, Refine and Upscale passes (none when it acts on
    the base pass only)."""
    if not recipe.identity.pulid_finishing():
        return []
    s, batch = recipe.settings, recipe.prompt.batch_size
    flops: dict[str, float] = {}

    def add(
        stage: str, width: int, height: int, steps: int, passes: int = 1, sampler: str = ""
    ) -> None:
        calls = passes * evaluations(sampler or s.sampler, steps, s.cfg)
        flops[stage] = flops.get(stage, 0.0) + pulid_flops(recipe, shape, width, height, calls)

    def runs(stage: str) -> bool:
        return work.finishing is None or stage in work.finishing

    lat = recipe.latent
    if work.latent and lat.enabled and recipe.source.kind != "image" and lat.denoise > 0:
        width, height = render_size(recipe.prompt)
        size = round_to_grid(width * lat.upscale), round_to_grid(height * lat.upscale)
        add("latent", *size, lat.steps, batch)
    refine = recipe.refine
    for region in refine.active_regions():
        params, stage = refine.region(region), f"refine_{region}"
        if runs(stage) and params.denoise > 0:
            side = detailer_side(params)
            add(stage, side, side, params.steps * params.cycles, EXPECTED_SEGMENTS[region])
    if runs("refine_chin") and refine.enabled and refine.chin.enabled:
        add("refine_chin", refine.chin.size, refine.chin.size, refine.chin.steps)
    for name in recipe.upscale.active_passes():
        plan = plan_pass(recipe, name)
        for part, settings in (("tiles", plan.tiles), ("seams", plan.seams)):
            stage = f"{name}_{part}"
            if not runs(stage) or settings.denoise <= 0:
                continue
            for (width, height), count in job_sizes(settings, *plan.target, part == "seams"):
                grid = on_flux_grid(width), on_flux_grid(height)
                add(stage, *grid, plan.params.steps, count * batch, plan.params.sampler)
    return [PassCost(stage, "PuLID", f / dev.flops_per_s, 0.0) for stage, f in flops.items()]
