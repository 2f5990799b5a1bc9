"""What bench/upscale.py measures with: the pass's settings at the bench's size, a
random-weight ESRGAN built with spandrel's own class and loaded through the engine's
upscaler loader, the budget's estimate of the same work, and the tiny engine's check of the
Upscale stages through engine.run."""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.random_models import fill_random  # noqa: E402
from engine.budget import DeviceProfile, FluxShape, decode_cost, flux_pass  # noqa: E402
from engine.budget_upscale import upscale_passes, usdu_settings  # noqa: E402
from engine.recipe import Recipe  # noqa: E402
from engine.recipe_json import recipe_from_json  # noqa: E402
from engine.recipe_upscale import UsduParams  # noqa: E402
from engine.upscale.upscalers import LoadedUpscaler, load_upscaler  # noqa: E402
from engine.upscale.usdu_plan import UsduSettings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "upscale.json"
REAL = 1024  # the input's side the pass's pixel settings are for
UPSCALE_BY = 2.0
DENOISE = 0.3
SEAM_FIX = "half_tile"
# 4x-UltraSharp's shape (ESRGAN: 23 RRDB blocks of 64 filters, 4×); 2 blocks on a CPU.
ESRGAN_BLOCKS, ESRGAN_REDUCED_BLOCKS, ESRGAN_FILTERS, ESRGAN_SCALE = 23, 2, 64, 4


@dataclass(frozen=True)
class PassSetup:
    """The pass at the bench's size: tile = the input's side (so 2×2 tiles on the ×2
    canvas), the node's paddings and blurs scaled with it (multiples of 8 where it asks)."""

    size: int
    steps: int

    @property
    def scale(self) -> float:
        return self.size / REAL

    def _px(self, value: int, step: int = 1) -> int:
        return max(step, round(value * self.scale / step) * step)

    def params(self) -> UsduParams:
        return UsduParams(
            model="esrgan-random.safetensors", upscale_by=UPSCALE_BY, steps=self.steps,
            denoise=DENOISE, tile_width=self.size, tile_height=self.size,
            tile_padding=self._px(32, 8), mask_blur=self._px(8), seam_fix=SEAM_FIX,
            seam_fix_mask_blur=self._px(8), seam_fix_padding=self._px(16, 8),
        )  # fmt: skip

    def settings(self) -> UsduSettings:
        return usdu_settings(self.params())

    def recipe(self) -> Recipe:
        """A recipe of this pass on a size² render, for the budget's estimate."""
        first = {k: v for k, v in vars(self.params()).items() if k not in ("enabled", "prompt")}
        document = {
            "prompt": {"width": self.size, "height": self.size},
            "upscale": {"enabled": True, "first": first},
        }
        return recipe_from_json(json.dumps(document))


def esrgan(device: torch.device, reduced: bool, folder: Path) -> tuple[LoadedUpscaler, str]:
    """A random-weight ESRGAN of 4x-UltraSharp's shape (fewer blocks when `reduced`), built
    with spandrel's class, saved as safetensors and loaded by the engine's loader (so it
    runs in the dtype the studio picks: fp16 on CUDA). Returns it and its description."""
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    blocks = ESRGAN_REDUCED_BLOCKS if reduced else ESRGAN_BLOCKS
    model = ESRGAN(num_filters=ESRGAN_FILTERS, num_blocks=blocks, scale=ESRGAN_SCALE)
    fill_random(model, seed=1)
    path = folder / "esrgan-random.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_upscaler(path, device)
    shape = f"{blocks} RRDB blocks, {ESRGAN_FILTERS} filters, {ESRGAN_SCALE}×"
    what = "4x-UltraSharp's shape" if not reduced else "reduced on CPU"
    return loaded, f"ESRGAN ({what}: {shape}), random weights, {loaded.dtype}".replace("torch.", "")


def estimate(setup: PassSetup, shape: FluxShape, dev: DeviceProfile) -> dict:
    """The run budget's figures for the same work: the pass's stages and one untiled
    img2img of the target (its sampling plus an encode and a decode)."""
    parts = upscale_passes(setup.recipe(), None, shape, dev)
    stage_s = {
        stage: sum(p.seconds for p in parts if p.stage == stage)
        for stage in ("first_upscale", "first_tiles", "first_seams")
    }
    side = round(setup.size * UPSCALE_BY)
    sampled = flux_pass("untiled", side, side, 1, setup.steps, shape, dev)
    untiled = sampled.seconds + 2 * decode_cost(side, side, 1, shape, dev, False).seconds
    return {
        "device_profile": dev.name,
        "model_upscale_s": stage_s["first_upscale"],
        "tiles_s": stage_s["first_tiles"],
        "seams_s": stage_s["first_seams"],
        "untiled_s": untiled,
        "ratios": {
            "tiles/untiled": stage_s["first_tiles"] / untiled,
            "seams/untiled": stage_s["first_seams"] / untiled,
            "tiles+seams/untiled": (stage_s["first_tiles"] + stage_s["first_seams"]) / untiled,
        },
        "parts": [p.what for p in parts],
    }


def engine_check() -> dict:
    """The tiny engine (CPU) through engine.run: Upscale 1 (2×2 tiles, Half Tile seams) on a
    128² render, then its seam-fix blur changed. The run report's per-stage times, and
    which stages the change re-ran."""
    from engine.engine import Engine, EngineConfig
    from engine.models.manager import ModelConfig

    def recipe(seam_blur: int) -> Recipe:
        first = {
            "steps": 2, "denoise": DENOISE, "tile_width": 128, "tile_height": 128,
            "seam_fix": SEAM_FIX, "seam_fix_mask_blur": seam_blur,
        }  # fmt: skip
        document = {
            "prompt": {"width": 128, "height": 128},
            "settings": {"steps": 2},
            "upscale": {"enabled": True, "first": first},
            "color": {"enabled": False},
        }
        return recipe_from_json(json.dumps(document))

    with tempfile.TemporaryDirectory() as folder:
        models = ModelConfig(tiny=True, device="cpu", compile="off")
        engine = Engine(
            EngineConfig(models=models, outputs_dir=Path(folder, "o"), data_dir=Path(folder, "d"))
        )
        first = engine.run(recipe(8), save=False).report
        again = engine.run(recipe(4), save=False).report
    upscale = ("first_upscale", "first_tiles", "first_seams")
    return {
        "first_ms": {name: ms for name, ms in first.ran if name in upscale},
        "change_ran": again.ran_names,
        "only_seams_ran": [n for n in again.ran_names if n != "color"] == ["first_seams"],
    }


def to_canvas(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) on the device -> (H, W, 3) float32 on the host, as the stages hand it."""
    return np.ascontiguousarray(image[0].permute(1, 2, 0).float().cpu().numpy())
