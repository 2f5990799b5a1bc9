"""Masks and crop rectangles of Ultimate SD Upscale jobs, drawn the way the ComfyUI port draws
them (ssitu/ComfyUI_UltimateSDUpscale @34a3c2c over Coyote-A's script @2322caa).

The shapes are made with PIL exactly as the script makes them, so they match it byte for byte
before the float conversion:

- redraw: ``ImageDraw.rectangle((x1, y1, x1 + tw, y1 + th))`` (ultimate-upscale.py:163-177).
  PIL fills that box *inclusive* of its far corner, so the white area is (tw + 1) × (th + 1);
  `get_crop_region` then takes one pixel back off the padded box (usdu_utils.py:66-74).
- Half Tile: 256-level `Image.linear_gradient` halves, BICUBIC-resized and stacked into a
  0→1→0 tile (ultimate-upscale.py:261-272).
- intersections: `ImageOps.invert` of `Image.radial_gradient` BICUBIC-resized to the tile
  (ultimate-upscale.py:322-324). PIL's radial gradient is ``min(255, ⌊√(2·(dx² + dy²))⌋)``, so
  the inverted mask is still ≈ 0.29 at the middle of the tile's sides: it ends at the box edge.
- Band Pass: a 256² mirrored gradient BICUBIC-resized to a full-length band
  (ultimate-upscale.py:362-368).

The crop comes from the *unblurred* mask's bounding box; the mask is blurred afterwards with
``ImageFilter.GaussianBlur(blur)`` (processing.py:190-219): Pillow's radius is σ, made of three
box passes. The port composites the blurred mask only inside the crop (processing.py:266-278),
which is what `job_alpha` returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageFilter, ImageOps

if TYPE_CHECKING:
    from engine.upscale.usdu_plan import TileJob

MaskKind = Literal[
    "rectangle", "horizontal_seam", "vertical_seam", "corner", "vertical_band", "horizontal_band"
]
MASK_KINDS: tuple[str, ...] = (
    "rectangle",
    "horizontal_seam",
    "vertical_seam",
    "corner",
    "vertical_band",
    "horizontal_band",
)


@dataclass(frozen=True)
class Rect:
    """A pixel rectangle; `x2` and `y2` are exclusive, as in PIL's crop boxes."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x1, self.y1, self.x2, self.y2)

    def intersect(self, other: Rect) -> Rect | None:
        """The overlap of two rectangles, or None when they do not overlap."""
        x1, y1 = max(self.x1, other.x1), max(self.y1, other.y1)
        x2, y2 = min(self.x2, other.x2), min(self.y2, other.y2)
        return Rect(x1, y1, x2, y2) if x1 < x2 and y1 < y2 else None


@dataclass(frozen=True)
class MaskSpec:
    """A job's mask: a `kind` of shape pasted at `box` (it may reach past the canvas, as the
    script's pastes do) on a black canvas of `canvas` = (width, height), blurred by `blur`."""

    kind: MaskKind
    box: Rect
    canvas: tuple[int, int]
    blur: int

    def __post_init__(self) -> None:
        if self.kind not in MASK_KINDS:
            raise ValueError(f"unknown mask kind {self.kind!r}; expected one of {MASK_KINDS}")
        if self.box.width <= 0 or self.box.height <= 0:
            raise ValueError(f"mask box {self.box.box} is empty")

    @property
    def canvas_rect(self) -> Rect:
        return Rect(0, 0, *self.canvas)


def _mirrored_gradient() -> Image.Image:
    """The band pass's 256² mask: 0→255 over the top half, 255→0 over the bottom half."""
    gradient = Image.linear_gradient("L")
    mirrored = Image.new("L", (256, 256), "black")
    mirrored.paste(gradient.resize((256, 128), resample=Image.BICUBIC), (0, 0))
    mirrored.paste(gradient.rotate(180).resize((256, 128), resample=Image.BICUBIC), (0, 128))
    return mirrored


def _seam_tile(width: int, height: int, vertical_gradient: bool) -> Image.Image:
    """A Half Tile mask: two linear-gradient halves, rising then falling across the seam."""
    gradient = Image.linear_gradient("L")
    tile = Image.new("L", (width, height), "black")
    if vertical_gradient:
        half = (width, height // 2)
        tile.paste(gradient.resize(half, resample=Image.BICUBIC), (0, 0))
        tile.paste(gradient.rotate(180).resize(half, resample=Image.BICUBIC), (0, height // 2))
    else:
        half = (width // 2, height)
        tile.paste(gradient.rotate(90).resize(half, resample=Image.BICUBIC), (0, 0))
        tile.paste(gradient.rotate(270).resize(half, resample=Image.BICUBIC), (width // 2, 0))
    return tile


@lru_cache(maxsize=32)
def shape_image(kind: MaskKind, width: int, height: int) -> Image.Image:
    """The 'L' image a mask of this kind pastes, sized (width, height). Cached: never mutate."""
    if kind == "rectangle":
        return Image.new("L", (width, height), 255)
    if kind in ("horizontal_seam", "vertical_seam"):
        return _seam_tile(width, height, vertical_gradient=kind == "horizontal_seam")
    if kind == "corner":
        radial = Image.radial_gradient("L").resize((width, height), resample=Image.BICUBIC)
        return ImageOps.invert(radial)
    if kind == "vertical_band":
        return _mirrored_gradient().rotate(90).resize((width, height), resample=Image.BICUBIC)
    return _mirrored_gradient().resize((width, height), resample=Image.BICUBIC)


def _shape_of(spec: MaskSpec) -> Image.Image:
    return shape_image(spec.kind, spec.box.width, spec.box.height)


def mask_bbox(spec: MaskSpec) -> Rect | None:
    """PIL's `getbbox` of the unblurred full-canvas mask (None when it is all black); it looks
    only at the part of the shape that lands on the canvas, which gives the same box."""
    visible = spec.box.intersect(spec.canvas_rect)
    if visible is None:
        return None
    local = Rect(
        visible.x1 - spec.box.x1,
        visible.y1 - spec.box.y1,
        visible.x2 - spec.box.x1,
        visible.y2 - spec.box.y1,
    )
    found = _shape_of(spec).crop(local.box).getbbox()
    if found is None:
        return None
    x1, y1, x2, y2 = found
    return Rect(x1 + visible.x1, y1 + visible.y1, x2 + visible.x1, y2 + visible.y1)


def padded_crop(bbox: Rect, padding: int, canvas: tuple[int, int]) -> Rect:
    """The bounding box ± padding clamped to the canvas, then one pixel off the right and
    bottom edges that stay inside it (`get_crop_region` + `fix_crop_region`,
    usdu_utils.py:50-74). The pixel is taken off gradient masks too, which had none extra."""
    width, height = canvas
    x1, y1 = max(bbox.x1 - padding, 0), max(bbox.y1 - padding, 0)
    x2, y2 = min(bbox.x2 + padding, width), min(bbox.y2 + padding, height)
    return Rect(x1, y1, x2 - 1 if x2 < width else x2, y2 - 1 if y2 < height else y2)


def _expand_span(start: int, end: int, limit: int, target: int) -> tuple[int, int]:
    """One axis of `expand_crop` (usdu_utils.py:77-113): grow the far side by half the
    shortfall, the near side by what is still missing, then the far side again; clamped."""
    end = min(end + (target - (end - start)) // 2, limit)
    start = max(start - (target - (end - start)), 0)
    end = min(end + (target - (end - start)), limit)
    return start, end


def expand_crop(region: Rect, canvas: tuple[int, int], target: tuple[int, int]) -> Rect:
    """Grow `region` towards `target` = (width, height) around itself, shifting inward at the
    canvas borders; it stays smaller than the target only when the canvas is smaller."""
    x1, x2 = _expand_span(region.x1, region.x2, canvas[0], target[0])
    y1, y2 = _expand_span(region.y1, region.y2, canvas[1], target[1])
    return Rect(x1, y1, x2, y2)


def uniform_target(region: Rect, processing: tuple[int, int]) -> tuple[int, int]:
    """The crop size with the processing aspect ratio that contains `region`: one side kept,
    the other `round`ed (Python's half-to-even), as in processing.py:192-204."""
    crop_ratio = region.width / region.height
    processing_ratio = processing[0] / processing[1]
    if crop_ratio > processing_ratio:
        return region.width, round(region.width / processing_ratio)
    return round(region.height * processing_ratio), region.height


def crop_and_size(
    spec: MaskSpec, padding: int, processing: tuple[int, int], force_uniform: bool
) -> tuple[Rect, tuple[int, int]]:
    """A job's crop rectangle and the size its crop is resized to for sampling.

    Uniform: the crop grows to the processing aspect ratio and is resized to `processing`
    (crops differ in size, e.g. 544² at a corner and 576² inside for the defaults; only the
    ratio and the sampled size are uniform). Otherwise the crop grows to the next multiples of
    8 and that is the sampled size (processing.py:207-215)."""
    bbox = mask_bbox(spec)
    if bbox is None:
        raise ValueError(f"the {spec.kind} mask at {spec.box.box} misses the canvas")
    region = padded_crop(bbox, padding, spec.canvas)
    if force_uniform:
        return expand_crop(region, spec.canvas, uniform_target(region, processing)), processing
    size = (math.ceil(region.width / 8) * 8, math.ceil(region.height / 8) * 8)
    return expand_crop(region, spec.canvas, size), size


def _blur_margin(blur: int) -> int:
    """Pixels around a window that make a windowed blur equal the full-canvas one: Pillow's
    three box passes of radius ≈ σ reach about 3σ, and each pass's edge clamping moves inward
    by one box radius."""
    return 4 * blur + 4


def render_mask(spec: MaskSpec, window: Rect | None = None) -> np.ndarray:
    """The mask as float32 in [0, 1]: the whole canvas (H, W), or only `window` of it."""
    window = window or spec.canvas_rect
    if spec.blur > 0:
        margin = _blur_margin(spec.blur)
        grown = Rect(window.x1 - margin, window.y1 - margin, window.x2 + margin, window.y2 + margin)
        drawn = grown.intersect(spec.canvas_rect) or window
    else:
        drawn = window
    canvas = Image.new("L", (drawn.width, drawn.height), "black")
    canvas.paste(_shape_of(spec), (spec.box.x1 - drawn.x1, spec.box.y1 - drawn.y1))
    if spec.blur > 0:
        canvas = canvas.filter(ImageFilter.GaussianBlur(spec.blur))
    inner = (window.x1 - drawn.x1, window.y1 - drawn.y1, window.x2 - drawn.x1, window.y2 - drawn.y1)
    return np.asarray(canvas.crop(inner), dtype=np.float32) / np.float32(255.0)


def job_mask(job: TileJob) -> np.ndarray:
    """The job's full-canvas blurred mask, float32 (H, W) in [0, 1]."""
    return render_mask(job.mask)


def job_alpha(job: TileJob) -> np.ndarray:
    """The blurred mask inside the job's crop, (crop height, crop width): the alpha the port
    composites the resampled crop with; outside the crop nothing changes."""
    return render_mask(job.mask, job.crop)
