"""Colour re-grade benchmark: the engine's colour stage against a straightforward PIL chain.

The dial-in is the suite's (seed 000, group 10): exposure 0, grain 0.20 / 0.40 / 0.75,
brightness 1.00 / contrast 1.10 / saturation 0.95, a LUT at strength 50 (linear). A re-grade
moves one slider (contrast) after a first grade has warmed the engine's caches; the PIL chain
has no caches and recomputes everything. Figures are ratios within one run; absolute times are
only meaningful on the machine that printed them.

Run: .venv/bin/python bench/regrade.py [--size 2048] [--runs 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance
from pillow_lut import load_cube_file
from scipy.ndimage import correlate1d

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.color.grader import ColorGrader  # noqa: E402
from engine.color.grain import (  # noqa: E402
    BLUR_SIZES,
    RGB_TO_YCC,
    bilinear_rows,
    noise_size,
    opencv_gaussian_kernel,
)
from engine.recipe import ColorParams, ExposureParams, GrainParams, LutParams, ToneParams  # noqa: E402

LUT_FOLDER = Path(__file__).resolve().parents[1] / "assets" / "luts"
LUT_NAME = "portrait_warm.cube"
NoiseFn = Callable[[int, int, int], np.ndarray]


def suite_params(contrast: float = 1.10) -> ColorParams:
    """The suite's group-10 dial-in, with a LUT the project ships."""
    return ColorParams(
        exposure=ExposureParams(enabled=True, exposure=0),
        grain=GrainParams(enabled=True, power=0.20, scale=0.40, saturation=0.75, seed=1),
        tone=ToneParams(brightness=1.00, contrast=contrast, saturation=0.95),
        lut=LutParams(enabled=True, file=LUT_NAME, strength=50, color_space="linear"),
    )


def synthetic_portrait(size: int, seed: int = 0) -> torch.Tensor:
    """A (1, 3, S, S) image: warm face-like blob on a cool gradient, shading and fine noise."""
    axis = torch.linspace(-1.0, 1.0, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    face = torch.exp(-((x / 0.45) ** 2 + ((y + 0.05) / 0.6) ** 2) * 1.5)
    light = 0.55 + 0.35 * (0.5 - 0.5 * x) * (0.8 - 0.3 * y)
    skin = torch.tensor([0.86, 0.62, 0.50]).view(3, 1, 1)
    backdrop = torch.stack([0.25 + 0.15 * y, 0.32 + 0.1 * x, 0.42 - 0.12 * y])
    image = (face * skin + (1 - face) * backdrop) * light + 0.08 * face * torch.sin(9 * x) * y
    generator = torch.Generator().manual_seed(seed)
    image = image + 0.02 * torch.randn(3, size, size, generator=generator)
    return image.clamp(0.0, 1.0).unsqueeze(0).contiguous()


class PilChain:
    """The four LayerStyle nodes written plainly: numpy, scipy, PIL ImageEnhance, Pillow LUT."""

    def __init__(self, lut_path: Path) -> None:
        # Parsed once here; the node re-reads its file on every run, which would only add time.
        self.lut = load_cube_file(str(lut_path))

    def grade(self, image: np.ndarray, params: ColorParams, noise: NoiseFn) -> np.ndarray:
        """image (H, W, 3) float32 -> graded (H, W, 3) float32, 8-bit between nodes."""
        x = image
        if params.exposure.enabled:
            x = x.copy()
            x[x > 0] *= 2.0 ** (params.exposure.exposure / 32)
            if params.exposure.exposure < 0:
                black = -params.exposure.exposure / 250
                x = (x - black) / (1 - black)
            x = _to_float(_to_pil(x))
        if params.grain.enabled:
            x = _to_float(_to_pil(self.add_grain(x, params.grain, noise)))
        pil = _to_pil(x)
        tone = params.tone
        for factor, enhancer in (
            (tone.brightness, ImageEnhance.Brightness),
            (tone.contrast, ImageEnhance.Contrast),
            (tone.saturation, ImageEnhance.Color),
        ):
            if factor != 1:
                pil = enhancer(pil).enhance(factor)
        if params.lut.enabled:
            pil = Image.blend(pil, pil.filter(self.lut), params.lut.strength / 100)
        return _to_float(pil)

    @staticmethod
    def add_grain(x: np.ndarray, grain: GrainParams, noise: NoiseFn) -> np.ndarray:
        height, width = x.shape[:2]
        rows, cols = noise_size(height, width, grain.scale)
        ycc = noise(rows, cols, grain.seed) @ np.array(RGB_TO_YCC, dtype=np.float32).T
        for channel, ksize in enumerate(BLUR_SIZES):
            kernel = opencv_gaussian_kernel(ksize).numpy()
            plane = ycc[..., channel]
            # scipy's "mirror" is OpenCV's BORDER_REFLECT_101.
            plane = correlate1d(plane, kernel, axis=1, mode="mirror")
            ycc[..., channel] = correlate1d(plane, kernel, axis=0, mode="mirror")
        yy, c1, c2 = ycc[..., 0], ycc[..., 1], ycc[..., 2]
        rgb = np.stack([yy + 1.5748 * c2, yy - 0.1873 * c1 - 0.4681 * c2, yy + 1.8556 * c1], -1)
        g = (rgb - 0.5) * grain.power
        g[..., 0] *= 2
        g[..., 2] *= 3
        g += 1
        g = g * grain.saturation + g[..., 1:2] * (1 - grain.saturation)
        g = _resize_bilinear(g, height, width)
        return np.clip(1 - (1 - x) * g, 0, 1)


def _resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """torch-style bilinear resize (align_corners=False, no antialias) with numpy indexing."""
    low, high, w = (t.numpy() for t in bilinear_rows(height, image.shape[0]))
    image = image[low] * (1 - w)[:, None, None] + image[high] * w[:, None, None]
    low, high, w = (t.numpy() for t in bilinear_rows(width, image.shape[1]))
    return image[:, low] * (1 - w)[None, :, None] + image[:, high] * w[None, :, None]


def _to_pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8))


def _to_float(pil: Image.Image) -> np.ndarray:
    return np.asarray(pil, dtype=np.float32) / 255


def numpy_noise(rows: int, cols: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, cols, 3), dtype=np.float32)


def torch_noise(rows: int, cols: int, seed: int) -> np.ndarray:
    """The engine's noise, so that both chains can be compared pixel for pixel."""
    return torch.rand(rows, cols, 3, generator=torch.Generator().manual_seed(seed)).numpy()


def timed(fn: Callable[[], object], sync: Callable[[], None] = lambda: None) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return (time.perf_counter() - start) * 1000


def contrast_steps(runs: int) -> list[float]:
    """A different contrast for every timed re-grade (1.11, 1.12, ...), never the warm-up's."""
    return [round(1.11 + 0.01 * i, 2) for i in range(runs)]


def bench_engine(image: torch.Tensor, runs: int) -> dict[str, float]:
    sync = torch.cuda.synchronize if image.is_cuda else (lambda: None)
    grader = ColorGrader([LUT_FOLDER])
    first = timed(lambda: grader.grade(image, suite_params()), sync)
    regrades = [
        timed(lambda c=c: grader.grade(image, suite_params(c)), sync) for c in contrast_steps(runs)
    ]
    exact = [
        timed(lambda c=c: grader.grade(image, suite_params(c), exact=True), sync)
        for c in contrast_steps(max(3, runs // 2))
    ]
    return {
        "first_ms": first,
        "regrade_ms": statistics.median(regrades),
        "regrade_exact_ms": statistics.median(exact),
    }


def bench_pil(image: np.ndarray, runs: int) -> dict[str, float]:
    chain = PilChain(LUT_FOLDER / LUT_NAME)
    chain.grade(image, suite_params(), numpy_noise)  # warm-up (imports, allocator)
    full = [
        timed(lambda c=c: chain.grade(image, suite_params(c), numpy_noise))
        for c in contrast_steps(max(3, runs // 2))
    ]
    no_grain = dataclasses.replace(suite_params(1.15), grain=GrainParams(enabled=False))
    pixels = [timed(lambda: chain.grade(image, no_grain, numpy_noise)) for _ in range(runs)]
    return {"pil_ms": statistics.median(full), "pil_without_grain_ms": statistics.median(pixels)}


def agreement(image: torch.Tensor) -> dict[str, float]:
    """Largest differences, in 8-bit levels: fast vs exact engine, engine vs the PIL chain."""
    grader = ColorGrader([LUT_FOLDER])
    params = suite_params(1.15)
    fast = grader.grade(image, params)
    exact = grader.grade(image, params, exact=True)
    hwc = image[0].permute(1, 2, 0).numpy()
    pil = torch.from_numpy(PilChain(LUT_FOLDER / LUT_NAME).grade(hwc, params, torch_noise))
    pil = pil.permute(2, 0, 1).unsqueeze(0)
    return {
        "fast_vs_exact_max_levels": float((fast - exact).abs().max() * 255),
        "fast_vs_exact_mean_levels": float((fast - exact).abs().mean() * 255),
        "engine_vs_pil_max_levels": float((fast - pil).abs().max() * 255),
        "engine_vs_pil_mean_levels": float((fast - pil).abs().mean() * 255),
    }


def levels(agree: dict[str, float], key: str) -> str:
    return f"max {agree[key + '_max_levels']:.2f}, mean {agree[key + '_mean_levels']:.3f}"


def show(label: str, value: str) -> None:
    print(f"{label:<48} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    image = synthetic_portrait(args.size)
    hwc = image[0].permute(1, 2, 0).contiguous().numpy()
    load_before = os.getloadavg()[0]

    cpu = bench_engine(image, args.runs)
    pil = bench_pil(hwc, args.runs)
    ratios = {
        "regrade_vs_pil": pil["pil_ms"] / cpu["regrade_ms"],
        "first_vs_pil": pil["pil_ms"] / cpu["first_ms"],
        "regrade_vs_pil_without_grain": pil["pil_without_grain_ms"] / cpu["regrade_ms"],
    }
    print(f"image {args.size}x{args.size}, CPU, {torch.get_num_threads()} torch threads")
    show("engine re-grade (contrast moved, caches warm)", f"{cpu['regrade_ms']:.0f} ms")
    show("engine re-grade, exact float path", f"{cpu['regrade_exact_ms']:.0f} ms")
    show("engine first grade (cold: LUT parse, grain)", f"{cpu['first_ms']:.0f} ms")
    show("PIL + pillow-lut chain (recomputes all)", f"{pil['pil_ms']:.0f} ms")
    show("PIL chain without the grain node", f"{pil['pil_without_grain_ms']:.0f} ms")
    show("ratio re-grade vs PIL chain", f"{ratios['regrade_vs_pil']:.1f}x")
    show("ratio first grade vs PIL chain", f"{ratios['first_vs_pil']:.1f}x")
    show(
        "ratio re-grade vs PIL chain without grain",
        f"{ratios['regrade_vs_pil_without_grain']:.1f}x",
    )
    show("engine route for this grade", ", ".join(cpu_routes(image)))

    agree = agreement(image)
    show("fast vs exact engine (8-bit levels)", levels(agree, "fast_vs_exact"))
    # PIL's Image.blend truncates instead of rounding: each ImageEnhance step is ~0.5 darker.
    show("engine vs PIL chain, same noise (8-bit levels)", levels(agree, "engine_vs_pil"))
    result: dict[str, object] = {
        "size": args.size,
        "threads": torch.get_num_threads(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpu": cpu | pil,
        "cpu_ratios": ratios,
        "agreement": agree,
    }
    show("load average before / after", f"{load_before:.2f} / {os.getloadavg()[0]:.2f}")
    if torch.cuda.is_available():
        gpu = bench_engine(image.cuda(), args.runs)
        show(f"CUDA ({torch.cuda.get_device_name()}) re-grade", f"{gpu['regrade_ms']:.1f} ms")
        show("CUDA first grade", f"{gpu['first_ms']:.0f} ms")
        show("ratio CUDA re-grade vs CPU PIL chain", f"{pil['pil_ms'] / gpu['regrade_ms']:.0f}x")
        result["cuda"] = gpu
    else:
        show("CUDA", "not available on this machine")
    print(json.dumps(result, sort_keys=True))


def cpu_routes(image: torch.Tensor) -> list[str]:
    grader = ColorGrader([LUT_FOLDER])
    grader.grade(image, suite_params(1.15))
    return grader.last_routes


if __name__ == "__main__":
    main()
