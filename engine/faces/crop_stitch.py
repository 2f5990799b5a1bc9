"""Crop-and-stitch for inpainting a region (the Refine tab's "chin optimiser"): lquesada's
ComfyUI-Inpaint-CropAndStitch "InpaintCropImproved" / "InpaintStitchImproved" as pure functions.

Images are one (1, 3, H, W) float tensor in [0, 1], as engine stages pass them; masks are
(H, W) float in [0, 1]. Where this differs from the node (see `CropParams` and `resize_image`):
resizes stay in float instead of a round trip through 8-bit, the canvas corners are
edge-replicated too, and pre-resize and outpaint extension are not offered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.faces.crop_stitch_mask import blur_mask, hipass_mask, prepare_mask

Resample = Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]
RESAMPLES = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
OUTPUT_PADDINGS = (0, 8, 16, 32, 64, 128, 256, 512)
MAX_RESOLUTION = 16384  # ComfyUI's nodes.MAX_RESOLUTION, the node's upper bound on sizes


@dataclass(frozen=True, kw_only=True)
class CropParams:
    """Every InpaintCropImproved input, named and defaulted as in the node.

    `device_mode` is left out: this module always follows the node's CPU path. Pre-resize and
    the outpaint extension change the size of the stitched result, which the studio keeps
    equal to its input, so their switches must stay False (the other fields are kept so a
    node's settings map one to one).
    """

    downscale_algorithm: Resample = "bilinear"
    upscale_algorithm: Resample = "bicubic"
    preresize: bool = False
    preresize_mode: str = "ensure minimum resolution"
    preresize_min_width: int = 1024
    preresize_min_height: int = 1024
    preresize_max_width: int = MAX_RESOLUTION
    preresize_max_height: int = MAX_RESOLUTION
    mask_fill_holes: bool = True
    mask_expand_pixels: int = 0
    mask_invert: bool = False
    mask_blend_pixels: int = 32
    mask_hipass_filter: float = 0.1
    extend_for_outpainting: bool = False
    extend_up_factor: float = 1.0
    extend_down_factor: float = 1.0
    extend_left_factor: float = 1.0
    extend_right_factor: float = 1.0
    context_from_mask_extend_factor: float = 1.2
    output_resize_to_target_size: bool = True
    output_target_width: int = 512
    output_target_height: int = 512
    output_padding: int = 32

    def __post_init__(self) -> None:
        for name in ("downscale_algorithm", "upscale_algorithm"):
            if getattr(self, name) not in RESAMPLES:
                raise ValueError(f"{name} must be one of {RESAMPLES}, got {getattr(self, name)!r}")
        for name in ("preresize", "extend_for_outpainting"):
            if getattr(self, name):
                raise ValueError(f"{name} is not supported: the stitched image keeps its size")
        _check_range("mask_expand_pixels", self.mask_expand_pixels, 0, MAX_RESOLUTION)
        _check_range("mask_blend_pixels", self.mask_blend_pixels, 0, 64)
        _check_range("mask_hipass_filter", self.mask_hipass_filter, 0.0, 1.0)
        factor = self.context_from_mask_extend_factor
        _check_range("context_from_mask_extend_factor", factor, 1.0, 100.0)
        _check_range("output_target_width", self.output_target_width, 64, MAX_RESOLUTION)
        _check_range("output_target_height", self.output_target_height, 64, MAX_RESOLUTION)
        if self.output_padding not in OUTPUT_PADDINGS:
            raise ValueError(f"output_padding must be one of {OUTPUT_PADDINGS}")


@dataclass(frozen=True)
class PixelBox:
    """An integer pixel rectangle; x and y may be negative for a box reaching past an edge."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    def union(self, other: PixelBox) -> PixelBox:
        x, y = min(self.x, other.x), min(self.y, other.y)
        return PixelBox(x, y, max(self.right, other.right) - x, max(self.bottom, other.bottom) - y)


@dataclass(frozen=True, eq=False)
class StitchPlan:
    """What the stitch needs: the crop's box on the canvas, where the original frame sits on
    the canvas, the blend mask at crop size, and the resampling filters."""

    context: PixelBox  # canvas coordinates ("cropped_to_canvas" in the node)
    canvas_width: int
    canvas_height: int
    original: PixelBox  # the input frame on the canvas ("canvas_to_orig")
    blend_mask: torch.Tensor
    downscale_algorithm: Resample
    upscale_algorithm: Resample

    @property
    def context_in_image(self) -> PixelBox:
        """The crop's box in input-image coordinates (may reach past its edges)."""
        c = self.context
        return PixelBox(c.x - self.original.x, c.y - self.original.y, c.width, c.height)


@dataclass(frozen=True, eq=False)
class CropResult:
    """The crop to inpaint (1, 3, h, w), its mask (h, w), and the plan to stitch it back."""

    image: torch.Tensor
    mask: torch.Tensor
    plan: StitchPlan

    @property
    def blend_mask(self) -> torch.Tensor:
        return self.plan.blend_mask


def mask_bounds(mask: torch.Tensor) -> PixelBox | None:
    """The bounding box of the mask's non-zero pixels; None for an empty mask."""
    rows = torch.nonzero(mask.amax(dim=1) > 0).flatten()
    cols = torch.nonzero(mask.amax(dim=0) > 0).flatten()
    if rows.numel() == 0:
        return None
    y, x = int(rows[0]), int(cols[0])
    return PixelBox(x, y, int(cols[-1]) - x + 1, int(rows[-1]) - y + 1)


def context_box(
    mask: torch.Tensor, extend_factor: float, context_mask: torch.Tensor | None = None
) -> PixelBox:
    """The mask's box (the whole image if empty) grown by (factor − 1)/2 a side, clamped to
    the image, then joined with the context mask's box. Both masks already prepared."""
    height, width = mask.shape
    box = mask_bounds(mask) or PixelBox(0, 0, width, height)
    if extend_factor >= 1.01:  # the node's threshold for growing at all
        grow_x = _grow_amount(box.width, extend_factor)
        grow_y = _grow_amount(box.height, extend_factor)
        x, y = max(box.x - grow_x, 0), max(box.y - grow_y, 0)
        right, bottom = min(box.right + grow_x, width), min(box.bottom + grow_y, height)
        box = PixelBox(x, y, right - x, bottom - y)
    extra = None if context_mask is None else mask_bounds(context_mask)
    return box if extra is None else box.union(extra)


def target_size(params: CropParams, context: PixelBox) -> tuple[int, int]:
    """(width, height) of the crop: the target (or the context when not resizing), rounded up
    to a multiple of output_padding."""
    if params.output_resize_to_target_size:
        width, height = params.output_target_width, params.output_target_height
    else:
        width, height = context.width, context.height
    if params.output_padding:
        width = math.ceil(width / params.output_padding) * params.output_padding
        height = math.ceil(height / params.output_padding) * params.output_padding
    return width, height


def fit_box_to_aspect(
    box: PixelBox, image_size: tuple[int, int], target: tuple[int, int]
) -> PixelBox:
    """Grow one side of `box` (image coordinates) to the target's aspect ratio, centred, then
    shifted inside the image; a side longer than the image is centred over it."""
    image_w, image_h = image_size
    aspect = target[0] / target[1]
    if box.width / box.height < aspect:
        width = int(box.height * aspect)
        x = _place(box.x - (width - box.width) // 2, width, image_w)
        return PixelBox(x, box.y, width, box.height)
    height = int(box.width / aspect)
    y = _place(box.y - (height - box.height) // 2, height, image_h)
    return PixelBox(box.x, y, box.width, height)


def grow_box_to_size(
    box: PixelBox, image_size: tuple[int, int], target: tuple[int, int]
) -> PixelBox:
    """Without resizing, grow each side shorter than the target to it, placed as above."""
    x, y, width, height = box.x, box.y, box.width, box.height
    if width < target[0]:
        x, width = _place(x - (target[0] - width) // 2, target[0], image_size[0]), target[0]
    if height < target[1]:
        y, height = _place(y - (target[1] - height) // 2, target[1], image_size[1]), target[1]
    return PixelBox(x, y, width, height)


def crop_for_inpaint(
    image: torch.Tensor,
    mask: torch.Tensor,
    params: CropParams,
    context_mask: torch.Tensor | None = None,
) -> CropResult:
    """Prepare the mask, find the context, and cut it out of an edge-extended canvas at the
    target size, with the plan to stitch an inpainted crop back."""
    _check_image(image, "image")
    image_size = (image.shape[3], image.shape[2])
    for name, m in (("mask", mask), ("context_mask", context_mask)):
        if m is not None and tuple(m.shape) != (image_size[1], image_size[0]):
            raise ValueError(f"{name} must be (H, W) = {image_size[::-1]}, got {tuple(m.shape)}")
    mask = prepare_mask(mask, params)
    if context_mask is not None and params.mask_hipass_filter >= 0.01:
        context_mask = hipass_mask(context_mask, params.mask_hipass_filter)
    context = context_box(mask, params.context_from_mask_extend_factor, context_mask)
    target = target_size(params, context)
    box = fit_box_to_aspect(context, image_size, target)
    if not params.output_resize_to_target_size:
        box = grow_box_to_size(box, image_size, target)
    canvas, canvas_mask, original = _extend_canvas(image, mask, box)
    ctx = PixelBox(box.x + original.x, box.y + original.y, box.width, box.height)
    crop = canvas[:, :, ctx.y : ctx.bottom, ctx.x : ctx.right]
    crop_mask = canvas_mask[ctx.y : ctx.bottom, ctx.x : ctx.right]
    if params.output_resize_to_target_size:
        upscaling = target[0] > ctx.width or target[1] > ctx.height
        algorithm = params.upscale_algorithm if upscaling else params.downscale_algorithm
        crop = resize_image(crop, *target, algorithm)
        crop_mask = resize_mask(crop_mask, *target, algorithm)
    else:  # copies, so that no result is a view of the caller's tensors
        crop, crop_mask = crop.clone(), crop_mask.clone()
    blend = crop_mask.clone()
    if params.mask_blend_pixels > 0:
        blend = blur_mask(crop_mask, params.mask_blend_pixels)
    plan = StitchPlan(
        context=ctx,
        canvas_width=canvas.shape[3],
        canvas_height=canvas.shape[2],
        original=original,
        blend_mask=blend,
        downscale_algorithm=params.downscale_algorithm,
        upscale_algorithm=params.upscale_algorithm,
    )
    return CropResult(image=crop.to(image.dtype), mask=crop_mask, plan=plan)


def stitch(plan: StitchPlan, canvas_image: torch.Tensor, inpainted: torch.Tensor) -> torch.Tensor:
    """Blend the inpainted crop into `canvas_image` (the image that was cropped, or any image
    of its size): m·inpainted + (1 − m)·image over the context, m the resized blend mask."""
    _check_image(canvas_image, "canvas_image")
    _check_image(inpainted, "inpainted")
    size, expected = tuple(canvas_image.shape[2:]), (plan.original.height, plan.original.width)
    if size != expected:
        raise ValueError(f"canvas_image must be (H, W) = {expected} like the crop, got {size}")
    algorithm = _stitch_algorithm(plan, inpainted.shape[3], inpainted.shape[2])
    ctx = plan.context
    patch = resize_image(inpainted, ctx.width, ctx.height, algorithm).to(canvas_image.device)
    weights = resize_mask(plan.blend_mask, ctx.width, ctx.height, algorithm)
    weights = weights.to(canvas_image.device)
    inside, frame = _context_in_frame(plan)
    out = canvas_image.to(torch.float32).clone()
    region = out[:, :, frame[0], frame[1]]
    m = weights[inside]
    out[:, :, frame[0], frame[1]] = m * patch[:, :, inside[0], inside[1]] + (1.0 - m) * region
    return out.to(canvas_image.dtype)


def blend_weights(plan: StitchPlan) -> torch.Tensor:
    """The (H, W) weight the stitch gives the inpainted crop at each input pixel (0 outside
    the context), for a crop inpainted at its own size."""
    h, w = plan.blend_mask.shape
    ctx = plan.context
    resized = resize_mask(plan.blend_mask, ctx.width, ctx.height, _stitch_algorithm(plan, w, h))
    out = torch.zeros(plan.original.height, plan.original.width, device=resized.device)
    inside, frame = _context_in_frame(plan)
    out[frame] = resized[inside]
    return out


def resize_image(image: torch.Tensor, width: int, height: int, algorithm: Resample) -> torch.Tensor:
    """Resize (1, C, H, W) with PIL's filter of that name, clamped to [0, 1], float32.

    The node converts to 8-bit first (torchvision's to_pil_image truncates); PIL's float
    ("F") path uses the same filter kernels without that rounding, so the crop keeps its depth.
    """
    channels = [_resize_plane(plane, width, height, algorithm) for plane in image[0]]
    return torch.stack(channels).unsqueeze(0).clamp(0.0, 1.0).to(image.device)


def resize_mask(mask: torch.Tensor, width: int, height: int, algorithm: Resample) -> torch.Tensor:
    """Resize an (H, W) mask like `resize_image`, clamped to [0, 1]."""
    return _resize_plane(mask, width, height, algorithm).clamp(0.0, 1.0).to(mask.device)


def _resize_plane(plane: torch.Tensor, width: int, height: int, algorithm: str) -> torch.Tensor:
    values = np.ascontiguousarray(plane.detach().to("cpu", torch.float32).numpy())
    filter_ = getattr(Image.Resampling, algorithm.upper())
    resized = Image.fromarray(values).resize((width, height), filter_)
    return torch.from_numpy(np.asarray(resized, dtype=np.float32).copy())


def _stitch_algorithm(plan: StitchPlan, width: int, height: int) -> Resample:
    upscaling = plan.context.width > width or plan.context.height > height
    return plan.upscale_algorithm if upscaling else plan.downscale_algorithm


def _context_in_frame(plan: StitchPlan) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(rows, cols) of the context that land inside the original frame, and where they land."""
    ctx, orig = plan.context, plan.original
    x0, x1 = max(ctx.x, orig.x), min(ctx.right, orig.right)
    y0, y1 = max(ctx.y, orig.y), min(ctx.bottom, orig.bottom)
    inside = (slice(y0 - ctx.y, y1 - ctx.y), slice(x0 - ctx.x, x1 - ctx.x))
    frame = (slice(y0 - orig.y, y1 - orig.y), slice(x0 - orig.x, x1 - orig.x))
    return inside, frame


def _extend_canvas(
    image: torch.Tensor, mask: torch.Tensor, box: PixelBox
) -> tuple[torch.Tensor, torch.Tensor, PixelBox]:
    """Pad the image with its edge pixels (mask 1 there) until `box` fits; return the canvas,
    its mask and the original frame's box on it. The node leaves corners black when both axes
    grow (only without resizing); replicating them too is what it means to do."""
    height, width = mask.shape
    left, up = max(0, -box.x), max(0, -box.y)
    right, down = max(0, box.right - width), max(0, box.bottom - height)
    canvas = image.to(torch.float32)
    canvas_mask = mask.to(torch.float32)
    if left or right or up or down:
        canvas = F.pad(canvas, (left, right, up, down), mode="replicate")
        canvas_mask = F.pad(canvas_mask, (left, right, up, down), value=1.0)
    return canvas, canvas_mask, PixelBox(left, up, width, height)


def _place(start: int, length: int, limit: int) -> int:
    """The node's shift: keep [start, start + length) inside [0, limit) if it fits, else
    centre it over the image (the extra split floor-left)."""
    if length <= limit:
        return min(max(start, 0), limit - length)
    return -((length - limit) // 2)


def _grow_amount(size: int, factor: float) -> int:
    # The node rounds in float32 torch (half to even); doing the same keeps ties identical.
    return int((torch.tensor([size]).float() * (factor - 1.0) / 2.0).round().item())


def _check_image(image: torch.Tensor, name: str) -> None:
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"{name} must be one (1, 3, H, W) image, got {tuple(image.shape)}")


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
