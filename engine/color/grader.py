"""ColorGrader: the colour stage's entry point, with small caches so that re-grades are cheap."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.color.baked import (
    apply_lut_into,
    bake,
    grid_follows_chain,
    quantize_into,
    strip_ranges,
)
from engine.color.cube import CubeLut, list_luts, load_cube, resolve_lut
from engine.color.exposure import apply_exposure
from engine.color.grain import apply_grain, grain_base, grain_field, grain_is_identity
from engine.color.lut import apply_lut, lut_is_identity
from engine.color.tone import apply_tone, contrast_input, mean_from_sums, tone_is_identity
from engine.errors import InputError
from engine.recipe import ColorParams, GrainParams

LUT_CACHE_ENTRIES = 4
GRAIN_CACHE_BYTES = 384 * 2**20  # each of the two grain caches (bases and fields)


class _Lru:
    """A small thread-safe LRU, bounded by entry count and by tensor bytes."""

    def __init__(self, max_entries: int, max_bytes: int | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        # Sessions may grade at the same time (colour does not queue behind renders).
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        size = _nbytes(value)
        if self.max_bytes is not None and size > self.max_bytes:
            return  # never cache what would evict everything else and still not fit
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries or (
                self.max_bytes is not None and self.total_bytes() > self.max_bytes
            ):
                self._items.popitem(last=False)

    def total_bytes(self) -> int:
        return sum(_nbytes(value) for value in self._items.values())

    def __len__(self) -> int:
        return len(self._items)


def _nbytes(value: Any) -> int:
    return value.nbytes if isinstance(value, torch.Tensor) else 0


def pixel_chain(
    images: torch.Tensor, params: ColorParams, lut: CubeLut | None, mean: torch.Tensor | None
) -> torch.Tensor:
    """Brightness/contrast/saturation then the LUT: the steps that depend on colour alone."""
    out = apply_tone(images, params.tone, mean)
    if lut is not None:
        out = apply_lut(out, lut, params.lut.strength, params.lut.color_space)
    return out


class ColorGrader:
    """Exposure -> Grain -> Brightness/Contrast/Saturation -> LUT on (B, 3, H, W) batches."""

    def __init__(self, lut_folders: list[Path]) -> None:
        self.lut_folders = [Path(folder) for folder in lut_folders]
        self._luts = _Lru(LUT_CACHE_ENTRIES)
        self._grain_bases = _Lru(8, GRAIN_CACHE_BYTES)
        self._grain_fields = _Lru(8, GRAIN_CACHE_BYTES)
        # How the last grade ran, per image ("baked", "float", "float (...)" with the reason);
        # diagnostics for reports and benchmarks, never used to decide anything.
        self.last_routes: list[str] = []

    def list_luts(self) -> list[str]:
        """File names of the .cube LUTs in the allowed folders."""
        return list(list_luts(self.lut_folders))

    def resolve_lut(self, name: str) -> Path:
        """The path of a LUT given by plain file name; InputError for anything else."""
        return resolve_lut(name, self.lut_folders)

    def load_lut(self, name: str) -> CubeLut:
        """The parsed LUT, re-read only when the file's size or modification time changes."""
        path = self.resolve_lut(name)
        try:
            stat = path.stat()
        except OSError as exc:
            raise InputError(f"The LUT {name!r} cannot be read ({exc.strerror}).") from exc
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        lut = self._luts.get(key)
        if lut is None:
            lut = load_cube(path)
            self._luts.put(key, lut)
        return lut

    def grade(
        self, images: torch.Tensor, params: ColorParams, *, exact: bool = False
    ) -> torch.Tensor:
        """images (B,3,H,W) float in [0,1] -> graded copy; params.enabled False returns the input.

        On the CPU the colour-only steps go through one baked 8-bit LUT (within 2/255 of the
        float formulas); `exact=True`, or any other device, runs every step in float.
        """
        if not params.enabled:
            return images
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"expected a (B, 3, H, W) float batch, got {tuple(images.shape)}")
        lut = self._lut_for(params)
        fields = self._fields_for(images, params.grain)
        x = images.float()
        if exact or x.device.type != "cpu":
            out = self._grade_exact(x, params, lut, fields)
            self.last_routes = ["float"] * x.shape[0]
        else:
            out = self._grade_fast(x, params, lut, fields)
        return out.to(images.dtype)

    def _lut_for(self, params: ColorParams) -> CubeLut | None:
        if lut_is_identity(params.lut):
            return None
        if not params.lut.file:
            raise InputError("LUT Apply is on but no LUT file is chosen: pick one or turn it off.")
        return self.load_lut(params.lut.file)

    def _fields_for(self, images: torch.Tensor, grain: GrainParams) -> list[torch.Tensor] | None:
        """Each image's grain field (seed + i), from the caches when the size and settings match."""
        if grain_is_identity(grain):
            return None
        batch, _, height, width = images.shape
        fields = []
        for i in range(batch):
            base_key = (height, width, grain.scale, grain.seed + i, str(images.device))
            field_key = (base_key, grain.power, grain.saturation)
            field = self._grain_fields.get(field_key)
            if field is None:
                base = self._grain_bases.get(base_key)
                if base is None:
                    base = grain_base(height, width, grain.scale, grain.seed + i, images.device)
                    self._grain_bases.put(base_key, base)
                field = grain_field(base, grain.power, grain.saturation)
                self._grain_fields.put(field_key, field)
            fields.append(field)
        return fields

    def _grade_exact(
        self,
        images: torch.Tensor,
        params: ColorParams,
        lut: CubeLut | None,
        fields: list[torch.Tensor] | None,
    ) -> torch.Tensor:
        out = images
        if params.exposure.enabled:
            out = apply_exposure(out, params.exposure.exposure)
        if fields is not None:
            out = apply_grain(out, torch.stack(fields))
        out = pixel_chain(out, params, lut, None)
        return out.clone() if out is images else out

    def _grade_fast(
        self,
        images: torch.Tensor,
        params: ColorParams,
        lut: CubeLut | None,
        fields: list[torch.Tensor] | None,
    ) -> torch.Tensor:
        out = torch.empty(images.shape)
        routes: list[str] = []
        strips = strip_ranges(images.shape[2], images.shape[3])
        with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
            for i in range(images.shape[0]):
                field = None if fields is None else fields[i]
                routes.append(
                    _grade_image_fast(pool, images[i : i + 1], out[i], params, lut, field, strips)
                )
        self.last_routes = routes
        return out


def _grade_image_fast(
    pool: Executor,
    image: torch.Tensor,
    out: torch.Tensor,
    params: ColorParams,
    lut: CubeLut | None,
    field: torch.Tensor | None,
    strips: list[slice],
) -> str:
    """One (1, 3, H, W) image into `out` (3, H, W): two passes over strips, one baked LUT.

    Returns how it was graded (see ColorGrader.last_routes).
    """
    # torch work stays on this thread (its own thread pool splits each op): torch ops issued
    # from several Python threads at once made OpenMP oversubscribe the cores, 3-5x slower.
    if tone_is_identity(params.tone) and lut is None:
        for rows in strips:
            out[:, rows].copy_(_before_colour(image, params, field, rows)[0])
        return "float (no colour map)"
    pixels = np.empty((image.shape[2], image.shape[3], 3), np.uint8)
    sums: torch.Tensor | None = None
    for rows in strips:
        x = _before_colour(image, params, field, rows)
        quantize_into(x[0], pixels[rows])
        source = contrast_input(x, params.tone)
        if source is not None:
            part = source.sum(dim=(2, 3)).double()
            sums = part if sums is None else sums + part
    mean = None if sums is None else mean_from_sums(sums, pixels.shape[0] * pixels.shape[1])
    chain = lambda colours: pixel_chain(colours, params, lut, mean)
    baked = bake(chain)
    if not grid_follows_chain(baked, chain, pixels):
        x = _before_colour(image, params, field, slice(None))
        out.copy_(chain(x)[0])
        return "float (the baked grid missed the chain by more than a level)"
    # Pillow and numpy only in the workers: both release the GIL for the whole strip.
    list(pool.map(lambda rows: apply_lut_into(baked, pixels[rows], out[:, rows]), strips))
    return "baked"


def _before_colour(
    images: torch.Tensor, params: ColorParams, field: torch.Tensor | None, rows: slice
) -> torch.Tensor:
    """Exposure and grain (the steps that are not a function of colour alone) on some rows."""
    x = images[:, :, rows]
    # Exposure 0 multiplies by one: skip the pass on [0, 1] input.
    if params.exposure.enabled and params.exposure.exposure != 0:
        x = apply_exposure(x, params.exposure.exposure)
    if field is not None:
        x = apply_grain(x, field[:, rows])
    return x
