"""Upscale tab benchmark: one Ultimate SD Upscale pass (Upscale 1) against one untiled
img2img at the target size, with the warm Flux.

skimage's astronaut at 1024² is upscaled ×2 to 2048²: the upscale model (a random-weight
ESRGAN of 4x-UltraSharp's shape, built with spandrel's class and loaded by the engine's
loader), LANCZOS to the target, then the redraw as 2×2 tiles of 1024 (processing 1056² with
the node's 32 px padding) and the Half Tile seam fix (4 jobs at 1024²), 12 steps at denoise
0.3. These are the pieces the first_upscale / first_tiles / first_seams stages run
(engine/upscale/tiled.py, usdu_plan, usdu_run: crop, LANCZOS, VAE encode, sample, decode,
composite); beside them one 2048² img2img at the same steps and denoise (encode, sample,
decode). Prints each part's time (its VAE share too), the peak memory of each (CUDA max
allocated) and the ratios tiles / untiled, next to the run budget's estimate of the same
ratios (engine/budget_upscale.py). The tiny engine then runs Upscale 1 through engine.run:
the run report's time per stage, and a seam-fix change re-running the seams alone.

On CUDA: FLUX.1-dev's real transformer and VAE with random weights in bf16 (--precision fp8,
--compile as bench/refine.py), random prompt embeddings of the real shapes. Every shape is
warmed up at 1 step first (one redraw job, one seam job, the untiled pass). On a CPU it is
reduced: 1 double + 1 single block, ESRGAN with 2 RRDB blocks, 4 steps, a 128² input (tile
128, paddings and blurs scaled by 1/8, T5 tokens by its square); peak memory is the
process's max RSS; only the ratios mean anything.

Run: .venv/bin/python bench/upscale.py [--device auto] [--size 1024] [--steps 12]
     [--reduced] [--precision bf16|fp8] [--compile] [--runs 1] [--no-engine-check]
A readable table, then the JSON summary as the last line (also bench/results/upscale.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.refine_setup import (  # noqa: E402
    SEED,
    T5_TOKENS,
    Clock,
    Setup,
    flux_bundle,
    peak_gb,
    portrait,
    prompt,
    rounded,
)
from bench.upscale_setup import (  # noqa: E402
    DENOISE,
    REAL,
    RESULTS,
    UPSCALE_BY,
    PassSetup,
    engine_check,
    esrgan,
    estimate,
    to_canvas,
)
from engine.device_profile import device_profile, flux_shape  # noqa: E402
from engine.faces.crop_stitch import resize_image  # noqa: E402
from engine.flux.sampling import SamplingPass, run_pass  # noqa: E402
from engine.graph import StageContext  # noqa: E402
from engine.models.precision import pick_device  # noqa: E402
from engine.models.runtime import PRECISION_WORDS  # noqa: E402
from engine.recipe import SettingsParams  # noqa: E402
from engine.refine.detailer import decode, encode  # noqa: E402
from engine.runtypes import RunReport  # noqa: E402
from engine.upscale.tiled import upscale_image  # noqa: E402
from engine.upscale.usdu_plan import redraw_jobs, seam_fix_jobs, target_size  # noqa: E402
from engine.upscale.usdu_run import flux_tile_render, pass_settings, run_jobs  # noqa: E402


class Bench:
    """The warm models and the four timed parts."""

    def __init__(self, setup: Setup, upscale: PassSetup, folder: Path) -> None:
        self.setup, self.upscale = setup, upscale
        self.clock = Clock(setup.device)
        self.bundle = flux_bundle(setup, self.clock)
        self.cond = prompt(setup, self.bundle.compute_dtype)
        self.upscaler, self.upscaler_label = esrgan(setup.device, setup.reduced, folder)
        self.ctx = StageContext(services=None, report=RunReport())
        self.target = target_size(setup.size, setup.size, UPSCALE_BY)
        self.usdu = upscale.settings()

    def sampling(self, steps: int) -> SettingsParams:
        """The main settings with the pass's own, as the stages sample (usdu_run)."""
        return pass_settings(SettingsParams(), replace(self.upscale.params(), steps=steps))

    def model_upscale(self, pixels: torch.Tensor) -> torch.Tensor:
        """The first_upscale stage's work: the model, then LANCZOS to the target."""
        enlarged = upscale_image(self.upscaler, pixels)
        return resize_image(enlarged, *self.target, "lanczos")

    def jobs(self, canvas, seams: bool, steps: int, limit: int | None = None):
        """The redraw (or seam-fix) jobs over `canvas` (H, W, 3), as the stages run them."""
        width, height = self.target
        plan = (seam_fix_jobs if seams else redraw_jobs)(self.usdu, width, height)[:limit]
        stage = "first_seams" if seams else "first_tiles"
        render = flux_tile_render(
            self.ctx, stage, self.bundle, self.cond, self.sampling(steps), SEED
        )
        return run_jobs(canvas, plan, render)

    def untiled(self, canvas, steps: int):
        """One img2img of the whole target: encode, sample at the same denoise, decode."""
        width, height = self.target
        settings = self.sampling(steps)
        sampling = SamplingPass(width, height, (SEED,), settings, True)
        tokens = run_pass(self.ctx, "untiled", self.bundle, self.cond, sampling,
                          encode(self.bundle, canvas))  # fmt: skip
        return decode(self.bundle, tokens, width, height)

    def timed(self, work) -> tuple[dict, Any]:
        """A part's seconds, its VAE share and its peak memory (CUDA: this part's own)."""
        device = self.setup.device
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        before = self.bundle.vae.seconds
        seconds, value = self.clock(work)
        figure = {"s": seconds, "vae_s": self.bundle.vae.seconds - before}
        if device.type == "cuda":
            figure["peak_gb"] = peak_gb(device)
        return figure, value

    def warm_up(self, pixels: torch.Tensor) -> None:
        """Every kernel shape once, at 1 step: one redraw job, one seam job, the untiled."""
        canvas = to_canvas(self.model_upscale(pixels))
        self.jobs(canvas, False, 1, limit=1)
        self.jobs(canvas, True, 1, limit=1)
        self.untiled(canvas, 1)

    def run(self, pixels: torch.Tensor) -> dict:
        steps = self.setup.steps
        model, upscaled = self.timed(lambda: self.model_upscale(pixels))
        canvas = to_canvas(upscaled)
        tiles, redrawn = self.timed(lambda: self.jobs(canvas, False, steps))
        seams, _ = self.timed(lambda: self.jobs(redrawn, True, steps))
        untiled, _ = self.timed(lambda: self.untiled(canvas, steps))
        return {"model_upscale": model, "tiles": tiles, "seams": seams, "untiled": untiled}


def run(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    reduced = args.reduced or not cuda
    size = args.size or (REAL if cuda else 128)
    if size % 16:
        raise SystemExit(f"--size must be a multiple of 16, got {size}")
    tokens = max(8, round(T5_TOKENS * (size / REAL) ** 2)) if reduced else T5_TOKENS
    steps = args.steps or (12 if cuda else 4)
    setup = Setup(device, size, steps, reduced, tokens, args.precision == "fp8", args.compile)
    upscale = PassSetup(size, steps)
    torch.set_grad_enabled(False)
    pixels = torch.from_numpy(portrait(size)).permute(2, 0, 1)[None].to(device)
    with tempfile.TemporaryDirectory() as folder:
        build_s, bench = Clock(device)(lambda: Bench(setup, upscale, Path(folder)))
    bench.warm_up(pixels)  # kernels and allocations per shape, on a CPU too
    runs = [bench.run(pixels) for _ in range(args.runs or 1)]
    parts = min(runs, key=lambda r: r["tiles"]["s"] + r["seams"]["s"])
    return rounded(_figures(args, setup, bench, parts, build_s, len(runs)))


def _figures(args, setup: Setup, bench: Bench, parts: dict, build_s: float, runs: int) -> dict:
    cuda = setup.device.type == "cuda"
    shape = flux_shape(bench.bundle.transformer, bench.bundle.vae, setup.text_tokens)
    profile = device_profile(setup.device, bench.bundle.runtime.attention.name)
    # CUDA: the parts' own peaks (each part resets the counter); a CPU: the RSS high mark
    peak = max(p["peak_gb"] for p in parts.values()) if cuda else peak_gb(setup.device)
    figures = {
        **_described(setup, bench),
        "build_s": build_s,
        "runs": runs,
        "parts": parts,
        "pass_s": sum(parts[k]["s"] for k in ("model_upscale", "tiles", "seams")),
        "ratios": _ratios(parts),
        "estimate": estimate(bench.upscale, shape, profile),
        "peak_memory_gb": peak,
        "peak_memory_kind": "GPU allocated" if cuda else "process RSS (host)",
        "runtime": bench.bundle.describe_runtime(),
    }
    if not args.no_engine_check:
        seconds, figures["engine_check"] = Clock(torch.device("cpu"))(engine_check)
        figures["engine_check"]["s"] = seconds
    return figures


def _described(setup: Setup, bench: Bench) -> dict:
    """What was measured: device, models, sizes, settings and the jobs of the plan."""
    cuda, settings = setup.device.type == "cuda", bench.usdu
    redraw = redraw_jobs(settings, *bench.target)
    seams = seam_fix_jobs(settings, *bench.target)
    flux = "FLUX.1-dev (19 double + 38 single blocks)"
    if setup.reduced:
        flux = f"reduced{' on CPU' if not cuda else ''}: 1 double + 1 single block"
    return {
        "benchmark": "upscale",
        "device": torch.cuda.get_device_name(setup.device) if cuda else "CPU",
        "architecture": f"{flux}, random weights",
        "upscaler": bench.upscaler_label,
        "precision": PRECISION_WORDS[bench.bundle.files.precision],
        "compiled": setup.compile,
        "size": setup.size,
        "target": list(bench.target),
        "tile": settings.tile_width,
        "tile_padding": settings.tile_padding,
        "seam_fix": settings.seam_fix_mode,
        "steps": setup.steps,
        "denoise": DENOISE,
        "t5_tokens": setup.text_tokens,
        "redraw_jobs": {"count": len(redraw), "processing": list(redraw[0].processing_size)},
        "seam_jobs": {"count": len(seams), "processing": list(seams[0].processing_size)},
    }


def _ratios(parts: dict) -> dict:
    untiled, tiles, seams = (parts[k]["s"] for k in ("untiled", "tiles", "seams"))
    return {
        "tiles/untiled": tiles / untiled,
        "seams/untiled": seams / untiled,
        "tiles+seams/untiled": (tiles + seams) / untiled,
        "model_upscale/tiles": parts["model_upscale"]["s"] / tiles,
    }


def show(f: dict) -> None:
    note = "" if f["device"] != "CPU" else " — only the ratios mean anything"
    (tw, th), size = f["target"], f["size"]
    print(
        f"Upscale 1 on {f['device']}: {f['architecture']}, {f['precision']}, "
        f"{'compiled' if f['compiled'] else 'eager'} blocks, {size}² → {tw}×{th}, "
        f"{f['steps']} steps at denoise {f['denoise']}, {f['t5_tokens']} T5 tokens{note}"
    )
    print(f"  upscaler: {f['upscaler']}")
    r, s = f["redraw_jobs"], f["seam_jobs"]
    print(
        f"  tiles {f['tile']}² (padding {f['tile_padding']}): {r['count']} redraw jobs at "
        f"{r['processing'][0]}×{r['processing'][1]}; {f['seam_fix']} seam fix: {s['count']} "
        f"jobs at {s['processing'][0]}×{s['processing'][1]}"
    )
    peak = "peak GB" if f["device"] != "CPU" else ""
    print(f"  {'part':<34}{'s':>9}{'vae s':>9}{'× untiled':>11}{peak:>10}")
    labels = {
        "model_upscale": "model upscale + LANCZOS",
        "tiles": "redraw tiles",
        "seams": "seam fix",
        "untiled": f"untiled img2img {tw}×{th}",
    }
    untiled = f["parts"]["untiled"]["s"]
    for key, label in labels.items():
        part = f["parts"][key]
        memory = f"{part['peak_gb']:>10.2f}" if "peak_gb" in part else ""
        ratio = part["s"] / untiled
        print(f"  {label:<34}{part['s']:>9.3f}{part['vae_s']:>9.3f}{ratio:>11.2f}{memory}")
    e = f["estimate"]["ratios"]
    print(
        f"  ratios: tiles / untiled {f['ratios']['tiles/untiled']:.2f} (budget estimate "
        f"{e['tiles/untiled']:.2f}); tiles + seams / untiled "
        f"{f['ratios']['tiles+seams/untiled']:.2f} (estimate {e['tiles+seams/untiled']:.2f}); "
        f"model upscale / tiles {f['ratios']['model_upscale/tiles']:.3f}"
    )
    if f["device"] == "CPU":
        print(
            "  on a CPU the reduced sizes leave fixed per-call costs in every job (the transformer "
            "and the VAE);\n  the figures to quote come from a GPU run of the full configuration"
        )
    print(
        f"  whole pass {f['pass_s']:.3f} s; peak memory {f['peak_memory_gb']:.2f} GB "
        f"({f['peak_memory_kind']}); built in {f['build_s']:.1f} s; fastest of {f['runs']}"
    )
    print(f"  {f['runtime']}")
    check = f.get("engine_check")
    if check:
        times = ", ".join(f"{k} {v:.0f} ms" for k, v in check["first_ms"].items())
        verdict = "only the seams re-ran" if check["only_seams_ran"] else "MORE than seams ran"
        print(
            f"  tiny engine (engine.run): {times}; after a seam-fix blur change ran "
            f"{check['change_ran']} -> {verdict} ({check['s']:.1f} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=None, help="input side: 1024 CUDA, 128 CPU")
    parser.add_argument("--steps", type=int, default=None, help="default 12 on CUDA, 4 on CPU")
    parser.add_argument("--reduced", action="store_true", help="1 double + 1 single block")
    parser.add_argument("--precision", choices=("bf16", "fp8"), default="bf16")
    parser.add_argument("--compile", action="store_true", help="compile the repeated blocks")
    parser.add_argument("--runs", type=int, default=None, help="timed runs (default 1)")
    parser.add_argument("--no-engine-check", action="store_true", help="skip the tiny engine")
    figures = run(parser.parse_args())
    show(figures)
    print(json.dumps(figures))  # the last line: the summary bench/gpu.sh collects
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
