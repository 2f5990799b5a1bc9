"""The running half of Ultimate SD Upscale: the tile loop over the jobs `usdu_plan` lays out,
and the Flux img2img render of one job's crop.

The loop is written against a render function (crop pixels in, crop pixels out), so it is
tested without Flux: with an identity render every job composites `x + a·(x − x)` and the
image comes back bit-identical.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from engine.flux.sampling import Conditioning, SamplingPass, run_pass
from engine.graph import StageContext
from engine.identity.pulid_passes import PulidPass, pulid_during
from engine.recipe import DetailDaemonParams, LyingSigmaParams, SettingsParams
from engine.recipe_upscale import UsduParams
from engine.refine.detailer import decode, encode, lanczos
from engine.upscale.usdu_masks import job_alpha
from engine.upscale.usdu_plan import TileJob

# (crop (h, w, 3) float32 in [0, 1], its job) -> the re-rendered crop, same shape
TileRender = Callable[[np.ndarray, TileJob], np.ndarray]
JobProgress = Callable[[int, int], None]  # (jobs done, jobs in all), called before each job
FLUX_GRID = 16  # 8 px VAE cells × 2×2 patches


def pass_settings(main: SettingsParams, usdu: UsduParams) -> SettingsParams:
    """The main settings with the pass's own steps, denoise, guidance, sampler, scheduler and
    max_shift; Detail Daemon at the node's defaults with the pass's amount (off at 0), Lying
    Sigma off (the suite's override nodes for the upscale pass, seed 000 §10)."""
    amount = usdu.detail_amount
    return dataclasses.replace(
        main,
        steps=usdu.steps,
        denoise=usdu.denoise,
        guidance=usdu.guidance,
        sampler=usdu.sampler,
        scheduler=usdu.scheduler,
        max_shift=usdu.max_shift,
        detail_daemon=DetailDaemonParams(enabled=amount != 0, amount=amount),
        lying_sigma=LyingSigmaParams(enabled=False),
    )


def composite(canvas: np.ndarray, rendered: np.ndarray, job: TileJob) -> None:
    """Blend the rendered crop into `canvas` (in place) inside the job's crop with its
    blurred mask as alpha: `x + a·(tile − x)`, so an unchanged tile changes nothing."""
    crop = job.crop
    alpha = job_alpha(job)[..., None]
    region = canvas[crop.y1 : crop.y2, crop.x1 : crop.x2]
    region += alpha * (rendered - region)


def run_jobs(
    image: np.ndarray,
    jobs: Sequence[TileJob],
    render: TileRender,
    progress: JobProgress | None = None,
) -> np.ndarray:
    """The (H, W, 3) image after every job in order, each starting from the image the jobs
    before it left (the script's `p.init_images` update); `image` itself is not changed."""
    canvas = np.array(image, dtype=np.float32, copy=True)
    for index, job in enumerate(jobs):
        if progress is not None:
            progress(index, len(jobs))
        crop = job.crop
        before = canvas[crop.y1 : crop.y2, crop.x1 : crop.x2].copy()
        rendered = render(before, job)
        if rendered.shape != before.shape:
            raise RuntimeError(
                f"a tile render returned {rendered.shape} for a crop of {before.shape}"
            )
        composite(canvas, rendered.astype(np.float32, copy=False), job)
    return canvas


def pad_to_grid(pixels: np.ndarray, grid: int = FLUX_GRID) -> np.ndarray:
    """(h, w, 3) grown right and down to multiples of `grid` by repeating the edge pixels."""
    height, width = pixels.shape[:2]
    extra = (-height % grid, -width % grid)
    if extra == (0, 0):
        return pixels
    return np.pad(pixels, ((0, extra[0]), (0, extra[1]), (0, 0)), mode="edge")


def flux_tile_render(
    ctx: StageContext,
    stage: str,
    bundle,
    cond: Conditioning,
    settings: SettingsParams,
    seed: int,
    pulid: PulidPass | None = None,
) -> TileRender:
    """A job's img2img with the warm Flux model: crop → LANCZOS to the processing size →
    VAE encode → sample at the job's denoise (one seed for every tile, as the node does) →
    decode → LANCZOS back to the crop size.

    The plan's processing sizes are multiples of 8 (the port's rule), while Flux samples on a
    16 px grid: a size that is not a multiple of 16 is padded by repeating its edge pixels,
    sampled, and cropped back, so the tile keeps the node's size and aspect. With `pulid`,
    PuLID acts on each job's pass, its window in sigmas from that job's own mu."""

    def render(crop: np.ndarray, job: TileJob) -> np.ndarray:
        width, height = job.processing_size
        scaled = pad_to_grid(lanczos(crop, width, height))
        grid_h, grid_w = scaled.shape[:2]
        job_settings = dataclasses.replace(settings, denoise=job.denoise)
        sampling = SamplingPass(grid_w, grid_h, (seed,), job_settings, True)
        with pulid_during(pulid, bundle.transformer, sampling):
            tokens = run_pass(ctx, stage, bundle, cond, sampling, encode(bundle, scaled))
        sampled = decode(bundle, tokens, grid_w, grid_h)[:height, :width]
        return lanczos(sampled, crop.shape[1], crop.shape[0])

    return render
