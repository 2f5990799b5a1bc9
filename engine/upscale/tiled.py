"""Running a trained upscale model over an image of any size, tile by tile.

Why this is written here: spandrel runs a model on the whole image it is given and has no
tiler; ComfyUI's `tiled_scale` lives inside ComfyUI's own `comfy.utils` and chaiNNer's tiler
inside its application, neither published as a library. A 4× or 8× model on a 2 MP portrait
needs tiles to fit in GPU memory, so the few lines that split, run and blend are here.

Tiles overlap by `overlap` input pixels; inside each overlap the two tiles are mixed with
linear ramps that sum to one, so no seam shows. On CUDA out-of-memory the tile size is
halved and the whole image is tried again, down to MIN_TILE, as ComfyUI's
ImageUpscaleWithModel does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.errors import InputError
from engine.upscale.upscalers import LoadedUpscaler

Progress = Callable[[int, int], None]
MIN_TILE = 128  # below this a model's receptive field is mostly tile border


@dataclass(frozen=True)
class Span:
    """One tile's extent along an axis, in input pixels, and how far it overlaps the tiles
    before and after it (0 at the image's edges)."""

    start: int
    end: int
    lead: int
    trail: int


def upscale_image(
    upscaler: LoadedUpscaler,
    image: torch.Tensor,
    tile: int = 512,
    overlap: int = 32,
    progress: Progress | None = None,
) -> torch.Tensor:
    """`image` (1, 3, H, W), float in [0, 1], enlarged by the model's scale to
    (1, 3, H·s, W·s) in the image's dtype and on its device, clamped to [0, 1].

    Tiles of `tile`² input pixels overlapping by `overlap`; one call when the image fits in
    one tile. `progress(done, total)` is called after every tile (it may raise to cancel);
    after an out-of-memory retry it counts the new, smaller tiles from zero."""
    _check_image(image)
    _check_tiling(tile, overlap)
    while True:
        try:
            return _upscale_once(upscaler, image, tile, min(overlap, tile // 2), progress)
        except torch.OutOfMemoryError:
            if upscaler.device.type != "cuda" or tile // 2 < MIN_TILE:
                raise
        # Retried outside the handler so the failed attempt's tensors can be freed first.
        torch.cuda.empty_cache()
        tile //= 2


def _check_image(image: torch.Tensor) -> None:
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise InputError(f"An image to upscale must be (1, 3, H, W); got {tuple(image.shape)}.")
    if not image.is_floating_point():
        raise InputError(f"An image to upscale must be float in [0, 1]; got {image.dtype}.")
    if image.shape[2] < 1 or image.shape[3] < 1:
        raise InputError(f"An image to upscale cannot be empty; got {tuple(image.shape)}.")


def _check_tiling(tile: int, overlap: int) -> None:
    if tile < 16:
        raise InputError(f"The upscale tile size must be at least 16 pixels; got {tile}.")
    if overlap < 0:
        raise InputError(f"The upscale tile overlap cannot be negative; got {overlap}.")


@torch.no_grad()
def _upscale_once(
    upscaler: LoadedUpscaler,
    image: torch.Tensor,
    tile: int,
    overlap: int,
    progress: Progress | None,
) -> torch.Tensor:
    _, _, height, width = image.shape
    if (height <= tile and width <= tile) or _tiles_internally(upscaler):
        result = _run_model(upscaler, image)
        _report(progress, 1, 1)
        return result.clamp_(0, 1).to(image.dtype)
    rows, cols = tile_spans(height, tile, overlap), tile_spans(width, tile, overlap)
    return _blend_tiles(upscaler, image, rows, cols, progress).to(image.dtype)


def _tiles_internally(upscaler: LoadedUpscaler) -> bool:
    """spandrel's ModelTiling.INTERNAL: the model tiles on its own and must see it all."""
    return upscaler.descriptor.tiling.name == "INTERNAL"


def tile_spans(length: int, tile: int, overlap: int) -> list[Span]:
    """Tiles of `tile` pixels every `tile - overlap` pixels; the last one is moved back to
    end at the edge, so every tile is full size (its overlap with the one before grows)."""
    if length <= tile:
        return [Span(0, length, 0, 0)]
    step = tile - overlap
    starts = list(range(0, length - tile, step)) + [length - tile]
    ends = [start + tile for start in starts]
    return [
        Span(
            start=start,
            end=end,
            lead=ends[index - 1] - start if index > 0 else 0,
            trail=end - starts[index + 1] if index + 1 < len(starts) else 0,
        )
        for index, (start, end) in enumerate(zip(starts, ends, strict=True))
    ]


def ramp(size: int, lead: int, trail: int) -> torch.Tensor:
    """Weights along one tile axis: rising linearly over the first `lead` pixels, falling
    over the last `trail`, 1 between. Where two tiles overlap by L pixels their ramps are
    (i + ½)/L and 1 − (i + ½)/L, so they sum to one and are never zero."""
    position = torch.arange(size, dtype=torch.float32) + 0.5
    weights = torch.ones(size)
    if lead > 0:
        weights = torch.minimum(weights, position / lead)
    if trail > 0:
        weights = torch.minimum(weights, (size - position) / trail)
    return weights


def _blend_tiles(
    upscaler: LoadedUpscaler,
    image: torch.Tensor,
    rows: list[Span],
    cols: list[Span],
    progress: Progress | None,
) -> torch.Tensor:
    """Every tile run and added in with its ramps; the sum divided by the summed weights."""
    scale = upscaler.scale
    _, channels, height, width = image.shape
    out_shape = (1, channels, height * scale, width * scale)
    total = torch.zeros(out_shape, dtype=torch.float32, device=image.device)
    weight = torch.zeros((1, 1, *out_shape[2:]), dtype=torch.float32, device=image.device)
    count, done = len(rows) * len(cols), 0
    for row in rows:
        row_ramp = ramp((row.end - row.start) * scale, row.lead * scale, row.trail * scale)
        for col in cols:
            col_ramp = ramp((col.end - col.start) * scale, col.lead * scale, col.trail * scale)
            mask = (row_ramp[:, None] * col_ramp[None, :]).to(image.device)
            piece = _run_model(upscaler, image[:, :, row.start : row.end, col.start : col.end])
            area = (
                slice(None),
                slice(None),
                slice(row.start * scale, row.end * scale),
                slice(col.start * scale, col.end * scale),
            )
            total[area] += piece * mask
            weight[area] += mask
            done += 1
            _report(progress, done, count)
    return (total / weight).clamp_(0, 1)


def _run_model(upscaler: LoadedUpscaler, pixels: torch.Tensor) -> torch.Tensor:
    """One model call in the model's device and dtype; float32 on the input's device back."""
    model_input = pixels.to(device=upscaler.device, dtype=upscaler.dtype).clamp(0, 1)
    output = upscaler.descriptor(model_input)
    expected = (pixels.shape[2] * upscaler.scale, pixels.shape[3] * upscaler.scale)
    if tuple(output.shape[2:]) != expected:
        raise RuntimeError(
            f"{upscaler.label} returned {tuple(output.shape[2:])} pixels for "
            f"{tuple(pixels.shape[2:])}, not the {expected} its scale promises."
        )
    # A copy, so what leaves here is an ordinary tensor rather than an inference-mode one.
    return output.to(device=pixels.device, dtype=torch.float32, copy=True)


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
