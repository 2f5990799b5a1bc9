"""The Upscale passes' share of a render's estimate (engine/budget.py has the model; specs §6,
engine/upscale/usdu_plan.py the jobs). Each active pass runs three stages, each counted only
while it is pending:

- `<pass>_upscale`: the upscale model, then LANCZOS to the target. A fixed part, not FLOPs:
  they depend on the architecture (4x-UltraSharp's ESRGAN does about 3.8e13 on a 1024² input,
  Real-ESRGAN Compact and SPAN a tenth of that or less, DAT and HAT several times more), and even
  ESRGAN's is under 1 % of the tiles it feeds (4 jobs × 30 steps × 1.3e14 FLOPs ≈ 1.6e16
  for the default Upscale 1 of a 1024² portrait). Its memory is counted: the tiler holds the
  model's output in fp32 (sum, weights and their quotient) at the model's scale, taken as 4×.
- `<pass>_tiles` and `<pass>_seams`: every redraw and seam-fix job is a Flux img2img pass at
  the job's processing size padded to Flux's 16 px grid (the pass's steps at its denoise:
  `evaluations` of the pass's sampler and the main true-CFG scale, which the pass has none of
  its own) plus a VAE encode and decode of that size (priced as two decodes, as the
  detailers are).
- The upscaled image is held on the device in fp32 RGB twice while a pass runs (a stage's
  input and its output; the jobs composite on a host copy), so it is added to the memory of
  every part: it is what grows with the target and refuses an upscale too large for the
  memory budget.

Each image of the batch is upscaled on its own: jobs and images count once per image. With an
uploaded picture (source "image") the picture's size is not known to this torch-free
estimate, so the prompt's size stands in for it. The captioner is not counted.
Transformer FLOPs are left at 0 on these parts, as on the detailers': a stage's measured time
includes the model upscale, the masks and the compositing, so it must not calibrate the device.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from engine.budget import (
    GB,
    DeviceProfile,
    FluxShape,
    PassCost,
    decode_cost,
    evaluations,
    flux_pass,
)
from engine.recipe import Recipe
from engine.recipe_upscale import UsduParams
from engine.sizes import render_size, round_to_grid
from engine.upscale.passes import (
    PASS_LABELS,
    STAGE_KINDS,
    usdu_settings,
)
from engine.upscale.usdu_plan import UsduSettings, redraw_jobs, seam_fix_jobs, target_size

# One model upscale per image, whatever its architecture (see above): a round figure for an
# ESRGAN-class model on a 1024² input on a current GPU (bench/upscale.py prints the measured).
MODEL_UPSCALE_SECONDS = 2.0
ASSUMED_MODEL_SCALE = 4  # the suite's 4x-UltraSharp; the file's scale is known only once loaded
MODEL_OUT_BYTES_PER_PIXEL = 4 * 4 + 3 * 4  # fp32 RGB sum + weight, then the fp32 quotient
IMAGE_BYTES_PER_PIXEL = 3 * 4 * 2  # fp32 RGB, a stage's input and its output
FEWER_STEPS = 15  # the steps variant
SMALLER_TILE = 768  # the tile variant: less memory per job, more jobs (so more time)
SMALLER_UPSCALE = 2.0  # the upscale_by variant
FLUX_GRID = 16


@dataclass(frozen=True)
class UpscalePlan:
    """One active pass: its recipe settings, the plan's settings of its tiles and of its
    seams (as the stages build them), and its sizes."""

    name: str
    params: UsduParams
    tiles: UsduSettings
    seams: UsduSettings
    source: tuple[int, int]  # the image the pass starts from
    target: tuple[int, int]  # the upscaled canvas its jobs run on

    @property
    def label(self) -> str:
        return PASS_LABELS[self.name]


def upscale_input_size(recipe: Recipe, name: str) -> tuple[int, int]:
    """The size of the image pass `name` starts from: the render size (after the latent pass,
    when it runs), or the target of the active pass before it."""
    width, height = render_size(recipe.prompt)
    if recipe.latent.enabled and recipe.source.kind != "image":
        width = round_to_grid(width * recipe.latent.upscale)
        height = round_to_grid(height * recipe.latent.upscale)
    for earlier in recipe.upscale.active_passes():
        if earlier == name:
            break
        width, height = target_size(width, height, getattr(recipe.upscale, earlier).upscale_by)
    return width, height


def plan_pass(recipe: Recipe, name: str) -> UpscalePlan:
    """Pass `name`'s settings and sizes in `recipe`."""
    params: UsduParams = getattr(recipe.upscale, name)
    source = upscale_input_size(recipe, name)
    label = PASS_LABELS[name]
    tiles, seams = (usdu_settings(params, part, label) for part in ("tiles", "seams"))
    return UpscalePlan(name, params, tiles, seams, source, target_size(*source, params.upscale_by))


@lru_cache(maxsize=64)
def job_sizes(
    settings: UsduSettings, width: int, height: int, seams: bool
) -> tuple[tuple[tuple[int, int], int], ...]:
    """(processing size, job count) of the redraw jobs, or the seam-fix jobs, in plan order."""
    jobs = (seam_fix_jobs if seams else redraw_jobs)(settings, width, height)
    return tuple(Counter(job.processing_size for job in jobs).items())


def on_flux_grid(side: int) -> int:
    """A processing side as the job samples it: padded up to Flux's 16 px grid (the plan's
    sizes are multiples of 8; usdu_run.pad_to_grid pads, samples and crops back)."""
    return -(-side // FLUX_GRID) * FLUX_GRID


def image_gb(width: int, height: int, batch: int) -> float:
    """The upscaled images held while a pass runs."""
    return batch * width * height * IMAGE_BYTES_PER_PIXEL / GB


def upscale_passes(
    recipe: Recipe,
    pending: frozenset[str] | None,
    shape: FluxShape,
    dev: DeviceProfile,
    tiled_vae: bool = False,
) -> list[PassCost]:
    """The parts of the pending <pass>_upscale, _tiles and _seams stages (None: every active
    pass's stages)."""
    parts: list[PassCost] = []
    for name in recipe.upscale.active_passes():
        plan = plan_pass(recipe, name)
        stages = [f"{name}_{kind}" for kind in STAGE_KINDS]
        runs = [pending is None or stage in pending for stage in stages]
        if runs[0]:
            parts.append(model_upscale_part(plan, recipe.prompt.batch_size))
        if runs[1]:
            parts += job_parts(recipe, plan, stages[1], False, shape, dev, tiled_vae)
        if runs[2]:
            parts += job_parts(recipe, plan, stages[2], True, shape, dev, tiled_vae)
    return parts


def model_upscale_part(plan: UpscalePlan, batch: int) -> PassCost:
    """The model upscale and the LANCZOS resize: a fixed time, the buffers' memory."""
    (sw, sh), (tw, th) = plan.source, plan.target
    image = image_gb(tw, th, batch)
    if not plan.params.model:
        what = f"{plan.label} LANCZOS {sw}×{sh} → {tw}×{th}"
        return PassCost(f"{plan.name}_upscale", what, 0.0, image)
    scale = ASSUMED_MODEL_SCALE
    held = sw * sh * scale * scale * MODEL_OUT_BYTES_PER_PIXEL / GB  # one image at a time
    what = f"{plan.label} model ×{scale} {sw}×{sh} → {tw}×{th}"
    return PassCost(f"{plan.name}_upscale", what, batch * MODEL_UPSCALE_SECONDS, held + image)


def job_parts(
    recipe: Recipe, plan: UpscalePlan, stage: str, seams: bool, shape: FluxShape,
    dev: DeviceProfile, tiled_vae: bool,
) -> list[PassCost]:  # fmt: skip
    """The redraw (or seam-fix) jobs grouped by processing size: their sampling, and their
    encode + decode, each with the upscaled images held beside them."""
    p, batch = plan.params, recipe.prompt.batch_size
    settings = plan.seams if seams else plan.tiles
    denoise = settings.denoise
    evals = evaluations(p.sampler, p.steps, recipe.settings.cfg) if denoise > 0 else 0
    image = image_gb(*plan.target, batch)
    kind = "seams" if seams else "tiles"
    parts = []
    for (width, height), count in job_sizes(settings, *plan.target, seams):
        jobs = count * batch
        grid_w, grid_h = on_flux_grid(width), on_flux_grid(height)
        sampled = flux_pass(stage, grid_w, grid_h, 1, evals, shape, dev)
        coded = decode_cost(grid_w, grid_h, 1, shape, dev, tiled_vae)
        what = f"{plan.label} {kind} {jobs} × {width}×{height}"
        parts.append(PassCost(stage, what, jobs * sampled.seconds, sampled.gb + image))
        what = f"{plan.label} {kind} encode + decode {jobs} × {width}×{height}"
        parts.append(PassCost(stage, what, jobs * 2 * coded.seconds, coded.gb + image))
    return parts


def upscale_variants(recipe: Recipe) -> list[tuple[str, Recipe]]:
    """Recipes with one Upscale cost lowered, each with a phrase saying what changed: each
    active pass's own cheaper settings, then each pass off, the last pass first."""
    active = recipe.upscale.active_passes()
    out = [variant for name in active for variant in _pass_variants(recipe, name)]
    for name in reversed(active):
        out.append((f"{PASS_LABELS[name]} off", _with_pass(recipe, name, enabled=False)))
    return out


def _pass_variants(recipe: Recipe, name: str) -> list[tuple[str, Recipe]]:
    """Pass `name` with its seam fix off, fewer steps, a smaller upscale, or smaller tiles
    (less memory per job, though more jobs and so more time)."""
    p, label = getattr(recipe.upscale, name), PASS_LABELS[name]
    out = []
    if p.seam_fix != "none":
        out.append((f"{label} seam fix off", _with_pass(recipe, name, seam_fix="none")))
    if p.steps > FEWER_STEPS:
        out.append((f"{label} {FEWER_STEPS} steps", _with_pass(recipe, name, steps=FEWER_STEPS)))
    if p.upscale_by > SMALLER_UPSCALE:
        phrase = f"{label} ×{p.upscale_by:g} → ×{SMALLER_UPSCALE:g}"
        out.append((phrase, _with_pass(recipe, name, upscale_by=SMALLER_UPSCALE)))
    if max(p.tile_width, p.tile_height) > SMALLER_TILE:
        tw, th = min(p.tile_width, SMALLER_TILE), min(p.tile_height, SMALLER_TILE)
        phrase = f"{label} tiles {p.tile_width}×{p.tile_height} → {tw}×{th}"
        out.append((phrase, _with_pass(recipe, name, tile_width=tw, tile_height=th)))
    return out


def _with_pass(recipe: Recipe, name: str, **changes) -> Recipe:
    changed = dataclasses.replace(getattr(recipe.upscale, name), **changes)
    upscale = dataclasses.replace(recipe.upscale, **{name: changed})
    return dataclasses.replace(recipe, upscale=upscale)
