"""The planning half of Ultimate SD Upscale: settings, target size, grid and the ordered tile
jobs (redraw, then seam fix) that a Flux img2img tile loop runs one after the other, each on
the image the previous job left. No sampling here.

It follows the ComfyUI port (ssitu/ComfyUI_UltimateSDUpscale @34a3c2c, which runs Coyote-A's
script @2322caa under its patches). Where that code differs from specs/algorithms.md §6:

- Target size: ``round(W·upscale_by / 8)·8`` (Python's half-to-even `round`), not
  ``ceil(W·upscale_by / 64)·64``: the port's patched `USDUpscaler.__init__` overwrites the
  script's size (usdu_patch.py:45-47, 86-89 over ultimate-upscale.py:553 and usdu_patch.py:182).
- Redraw processing size: ``round((tile + padding) / 8)·8`` (usdu_patch.py:99-103), not
  ``ceil((tile + padding) / 64)·64`` (ultimate-upscale.py:157-158).
- Half Tile and intersection jobs are sampled at the tile size: the script's loops set
  ``p.width = tile_width`` after `init_draw` (ultimate-upscale.py:281-282, 298-299, 333-334).
  Band Pass jobs at (band + 2·padding) × canvas height, or canvas width × that
  (ultimate-upscale.py:373-374, 388-389).
- Seam-fix denoise: the port samples every job at `denoise` (processing.py:243 reads
  ``p.denoise``); the script's ``p.denoising_strength = seam_fix_denoise``
  (ultimate-upscale.py:274, 325, 359) is an A1111 field nobody reads. `seam_fix_denoise` is kept
  and validated for the node's interface, and seam-fix jobs carry `denoise`.
- Offsets use floor halves (``th // 2``, ``width // 2``); Half Tile runs the horizontal seams
  first, then the vertical ones (ultimate-upscale.py:277-309), as §6 says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from engine.upscale.usdu_masks import MaskKind, MaskSpec, Rect, crop_and_size

RedrawMode = Literal["linear", "chess", "none"]
SeamFixMode = Literal["none", "band_pass", "half_tile", "half_tile_intersections"]
PassName = Literal["redraw", "band_pass", "half_tile", "intersection"]

REDRAW_MODES: tuple[str, ...] = ("linear", "chess", "none")
SEAM_FIX_MODES: tuple[str, ...] = ("none", "band_pass", "half_tile", "half_tile_intersections")
MAX_SIZE = 8192  # the node's MAX_RESOLUTION (usdu_nodes.py:27)


def _check_int(name: str, value: object, low: int, high: int, step: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high or value % step:
        multiple = f" and a multiple of {step}" if step > 1 else ""
        raise ValueError(f"{name} must be between {low} and {high}{multiple}, got {value}")


def _check_float(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


@dataclass(frozen=True)
class UsduSettings:
    """The Ultimate SD Upscale node's tile settings, with its widget ranges (usdu_nodes.py:51-72):
    tiles 64..8192 in steps of 8, paddings and the band width in steps of 8, blurs 0..64."""

    upscale_by: float = 2.0
    denoise: float = 0.2
    tile_width: int = 512
    tile_height: int = 512
    mask_blur: int = 8
    tile_padding: int = 32
    mode: RedrawMode = "linear"
    seam_fix_mode: SeamFixMode = "none"
    seam_fix_denoise: float = 1.0
    seam_fix_width: int = 64
    seam_fix_mask_blur: int = 8
    seam_fix_padding: int = 16
    force_uniform_tiles: bool = True

    def __post_init__(self) -> None:
        _check_float("upscale_by", self.upscale_by, 0.05, 4.0)
        _check_float("denoise", self.denoise, 0.0, 1.0)
        _check_float("seam_fix_denoise", self.seam_fix_denoise, 0.0, 1.0)
        _check_int("tile_width", self.tile_width, 64, MAX_SIZE, 8)
        _check_int("tile_height", self.tile_height, 64, MAX_SIZE, 8)
        _check_int("tile_padding", self.tile_padding, 0, MAX_SIZE, 8)
        _check_int("seam_fix_width", self.seam_fix_width, 0, MAX_SIZE, 8)
        _check_int("seam_fix_padding", self.seam_fix_padding, 0, MAX_SIZE, 8)
        _check_int("mask_blur", self.mask_blur, 0, 64)
        _check_int("seam_fix_mask_blur", self.seam_fix_mask_blur, 0, 64)
        if self.mode not in REDRAW_MODES:
            raise ValueError(f"mode must be one of {REDRAW_MODES}, got {self.mode!r}")
        if self.seam_fix_mode not in SEAM_FIX_MODES:
            raise ValueError(
                f"seam_fix_mode must be one of {SEAM_FIX_MODES}, got {self.seam_fix_mode!r}"
            )
        if self.seam_fix_mode == "band_pass" and self.seam_fix_width == 0:
            raise ValueError("band_pass needs a seam_fix_width above 0 (the node fails on 0)")
        if not isinstance(self.force_uniform_tiles, bool):
            raise ValueError(
                f"force_uniform_tiles must be a bool, got {self.force_uniform_tiles!r}"
            )


@dataclass(frozen=True)
class TileJob:
    """One img2img job: crop `crop` out of the current canvas, resize it to `processing_size`,
    sample at `denoise`, resize back, and composite it with the blurred `mask` inside `crop`
    (`usdu_masks.job_alpha`). `tile` is the rectangle the mask is placed on (for seam fixes,
    the half-tile-offset or band box); `grid_index` is (xi, yi) of the tile, seam or corner."""

    pass_name: PassName
    grid_index: tuple[int, int]
    tile: Rect
    mask: MaskSpec
    crop: Rect
    processing_size: tuple[int, int]
    padding: int
    denoise: float

    @property
    def blur(self) -> int:
        return self.mask.blur


def _round_to_8(length: float) -> int:
    return round(length / 8) * 8


def target_size(width: int, height: int, upscale_by: float) -> tuple[int, int]:
    """The upscaled canvas: ``round(side·upscale_by / 8)·8`` per side (the port's rule)."""
    _check_int("width", width, 1, 10**6)
    _check_int("height", height, 1, 10**6)
    size = (_round_to_8(width * upscale_by), _round_to_8(height * upscale_by))
    if min(size) <= 0:
        raise ValueError(f"{width}x{height} upscaled by {upscale_by} rounds to nothing")
    return size


def grid(target_w: int, target_h: int, settings: UsduSettings) -> tuple[int, int]:
    """(rows, cols) = (⌈H / tile_height⌉, ⌈W / tile_width⌉) (ultimate-upscale.py:39-40)."""
    _check_int("target_w", target_w, 1, 10**6)
    _check_int("target_h", target_h, 1, 10**6)
    return math.ceil(target_h / settings.tile_height), math.ceil(target_w / settings.tile_width)


def redraw_processing_size(settings: UsduSettings) -> tuple[int, int]:
    """The uniform sampling size of redraw tiles (usdu_patch.py:99-103)."""
    return (
        _round_to_8(settings.tile_width + settings.tile_padding),
        _round_to_8(settings.tile_height + settings.tile_padding),
    )


def redraw_order(rows: int, cols: int, mode: RedrawMode) -> list[tuple[int, int]]:
    """(xi, yi) in redraw order: row-major; chess runs (xi + yi) even first, then the rest,
    each row-major (ultimate-upscale.py:191-234); none runs nothing."""
    cells = [(xi, yi) for yi in range(rows) for xi in range(cols)]
    if mode == "none":
        return []
    if mode == "chess":
        return [c for c in cells if sum(c) % 2 == 0] + [c for c in cells if sum(c) % 2 == 1]
    return cells


def _job(
    settings: UsduSettings,
    pass_name: PassName,
    index: tuple[int, int],
    mask: MaskSpec,
    padding: int,
    processing: tuple[int, int],
    tile: Rect | None = None,
) -> TileJob:
    crop, size = crop_and_size(mask, padding, processing, settings.force_uniform_tiles)
    return TileJob(pass_name, index, tile or mask.box, mask, crop, size, padding, settings.denoise)


def _mask(
    kind: MaskKind, x: int, y: int, size: tuple[int, int], canvas: tuple[int, int], blur: int
) -> MaskSpec:
    """A mask of `kind` whose shape, `size` = (w, h), is pasted at (x, y)."""
    return MaskSpec(kind, Rect(x, y, x + size[0], y + size[1]), canvas, blur)


def redraw_jobs(settings: UsduSettings, width: int, height: int) -> list[TileJob]:
    """The redraw jobs on the upscaled canvas `width` × `height`, in `settings.mode` order.
    The mask is the tile rectangle plus PIL's inclusive far row and column (see usdu_masks)."""
    rows, cols = grid(width, height, settings)
    tw, th = settings.tile_width, settings.tile_height
    canvas, processing = (width, height), redraw_processing_size(settings)
    jobs = []
    for xi, yi in redraw_order(rows, cols, settings.mode):
        mask = _mask("rectangle", xi * tw, yi * th, (tw + 1, th + 1), canvas, settings.mask_blur)
        tile = Rect(xi * tw, yi * th, (xi + 1) * tw, (yi + 1) * th)
        jobs.append(
            _job(settings, "redraw", (xi, yi), mask, settings.tile_padding, processing, tile)
        )
    return jobs


def band_pass_jobs(settings: UsduSettings, width: int, height: int) -> list[TileJob]:
    """A full-length mirrored-gradient band of `seam_fix_width` on every interior vertical tile
    line, then every horizontal one; unblurred (ultimate-upscale.py:354-406). Jobs =
    rows + cols − 2. The script names its loops' bounds the wrong way round twice over
    (signature `cols, rows`, called with `rows, cols`, lines 354 and 410): it comes out right."""
    rows, cols = grid(width, height, settings)
    band, pad, canvas = settings.seam_fix_width, settings.seam_fix_padding, (width, height)
    jobs = []
    for xi in range(1, cols):
        mask = _mask(
            "vertical_band", xi * settings.tile_width - band // 2, 0, (band, height), canvas, 0
        )
        jobs.append(_job(settings, "band_pass", (xi, 0), mask, pad, (band + 2 * pad, height)))
    for yi in range(1, rows):
        mask = _mask(
            "horizontal_band", 0, yi * settings.tile_height - band // 2, (width, band), canvas, 0
        )
        jobs.append(_job(settings, "band_pass", (0, yi), mask, pad, (width, band + 2 * pad)))
    return jobs


def half_tile_jobs(settings: UsduSettings, width: int, height: int) -> list[TileJob]:
    """Tile-sized 0→1→0 gradients offset by half a tile: the horizontal seams ((rows − 1)·cols,
    gradient running down), then the vertical ones (rows·(cols − 1), gradient running across);
    sampled at the tile size (ultimate-upscale.py:256-316)."""
    rows, cols = grid(width, height, settings)
    tw, th = settings.tile_width, settings.tile_height
    blur, pad, canvas = settings.seam_fix_mask_blur, settings.seam_fix_padding, (width, height)
    jobs = []
    for yi in range(rows - 1):
        for xi in range(cols):
            mask = _mask("horizontal_seam", xi * tw, yi * th + th // 2, (tw, th), canvas, blur)
            jobs.append(_job(settings, "half_tile", (xi, yi), mask, pad, (tw, th)))
    for yi in range(rows):
        for xi in range(cols - 1):
            mask = _mask("vertical_seam", xi * tw + tw // 2, yi * th, (tw, th), canvas, blur)
            jobs.append(_job(settings, "half_tile", (xi, yi), mask, pad, (tw, th)))
    return jobs


def intersection_jobs(settings: UsduSettings, width: int, height: int) -> list[TileJob]:
    """An inverted radial gradient centred on every interior grid corner, padding 0, blurred
    by `seam_fix_mask_blur`, sampled at the tile size (ultimate-upscale.py:318-352)."""
    rows, cols = grid(width, height, settings)
    tw, th = settings.tile_width, settings.tile_height
    blur, canvas = settings.seam_fix_mask_blur, (width, height)
    jobs = []
    for yi in range(rows - 1):
        for xi in range(cols - 1):
            mask = _mask("corner", xi * tw + tw // 2, yi * th + th // 2, (tw, th), canvas, blur)
            jobs.append(_job(settings, "intersection", (xi, yi), mask, 0, (tw, th)))
    return jobs


def seam_fix_jobs(settings: UsduSettings, width: int, height: int) -> list[TileJob]:
    """The seam-fix jobs of `settings.seam_fix_mode`, in the script's order."""
    if settings.seam_fix_mode == "band_pass":
        return band_pass_jobs(settings, width, height)
    if settings.seam_fix_mode == "none":
        return []
    jobs = half_tile_jobs(settings, width, height)
    if settings.seam_fix_mode == "half_tile_intersections":
        jobs += intersection_jobs(settings, width, height)
    return jobs


def plan_jobs(settings: UsduSettings, width: int, height: int) -> list[TileJob]:
    """Every job on the upscaled canvas: the redraw pass, then the seam fix."""
    return redraw_jobs(settings, width, height) + seam_fix_jobs(settings, width, height)


def job_count(settings: UsduSettings, width: int, height: int) -> int:
    """The script's count (ultimate-upscale.py:107-117): rows·cols unless mode is none, plus
    rows + cols − 2, rows(cols − 1) + (rows − 1)cols, or that + (rows − 1)(cols − 1)."""
    rows, cols = grid(width, height, settings)
    count = 0 if settings.mode == "none" else rows * cols
    half_tile = rows * (cols - 1) + (rows - 1) * cols
    extra = {
        "none": 0,
        "band_pass": rows + cols - 2,
        "half_tile": half_tile,
        "half_tile_intersections": half_tile + (rows - 1) * (cols - 1),
    }
    return count + extra[settings.seam_fix_mode]
