"""Refine tab benchmark: the FaceDetailer passes over a 1024² portrait with the warm Flux.

The portrait is skimage's astronaut upscaled to 1024². Regions, in the stage order:
face (the packaged MTCNN, through the engine's RefineModels), eyes (two, from dlib's 68
landmarks on that face) and hands (two). No hand detector is packaged, so the hands are two
fixed 120×140 px boxes (bbox masks, as a bbox YOLO gives them) at plausible spots: the glove
at the bottom left and the hand on the helmet at the bottom right. Every region runs at the
suite's settings (denoise 0.15, 20 steps, guide_size 512, max_size 1024, noise mask on,
feather 5, crop factor 3): segments_from_detections, then refine_segment per segment (crop,
scale, LANCZOS, VAE encode, masked sampling, decode, paste), the image flowing from region to
region as in the stages. Detection runs on the unrefined portrait: random weights turn the
refined face into something a detector may no longer find, a real Flux at 0.15 would not.

Prints each segment's render size and time (its VAE encode + decode part too), each region
(detection + its segments, and its share of the image tokens sampled), the whole tab (the
fastest of --runs, a warm-up first on CUDA), and a one-region change: the stage graph keeps
the other regions cached, so changing hands (denoise 0.15 -> 0.2, the last region) re-runs
hands alone; the tiny engine's run report confirms that through engine.run. (A face change
re-runs face, eyes and hands: the regions after it.) Goal on an H100: all three regions at
20 steps <= 6 s, a one-region change <= 2.5 s.

On CUDA: FLUX.1-dev's real transformer and VAE with random weights in bf16, eager (the
fastest eager path on Hopper in BENCHMARKS.md; --precision fp8 stores the weights in fp8 and
computes with fp8 tensor cores where the GPU has them, --compile compiles the repeated blocks
as the studio does on CUDA: each new render shape compiles during the warm-up), random prompt
embeddings of the real shapes (512 T5 tokens × 4096, pooled 768). On a CPU it is reduced:
1 double + 1 single block, 4 steps, a 128² portrait with the detailer's pixel settings
(guide_size, max_size, dilation, drop_size, feathers) and the detections scaled by 128/1024
and the T5 tokens by its square, so each segment renders at 1/8 of its real size; only the
ratios (each region / the tab, the change / the tab) mean anything there.

Run: .venv/bin/python bench/refine.py [--device auto] [--steps 20] [--size 1024] [--reduced]
     [--precision bf16|fp8] [--compile] [--runs 3] [--no-engine-check]
A readable table, then the JSON summary as the last line (also bench/results/refine.json).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.random_models import build, config, weights_gb  # noqa: E402
from engine.faces.boxes import FaceBox  # noqa: E402
from engine.faces.segments import Segment, SegmentParams, segments_from_detections  # noqa: E402
from engine.faces.yolo_segm import Detection  # noqa: E402
from engine.flux.prompt import PromptEmbeddings  # noqa: E402
from engine.flux.sampling import Conditioning  # noqa: E402
from engine.graph import StageContext  # noqa: E402
from engine.models.attention import choose_attention  # noqa: E402
from engine.models.manager import FluxBundle, FluxFiles  # noqa: E402
from engine.models.memory import GB, plan_memory  # noqa: E402
from engine.models.precision import (  # noqa: E402
    FULL,
    DeviceFacts,
    apply_weight_storage,
    pick_device,
    precision_path,
)
from engine.models.runtime import COMPILE_MODE, PRECISION_WORDS, Runtime  # noqa: E402
from engine.recipe import SettingsParams  # noqa: E402
from engine.recipe_refine import DetailerParams  # noqa: E402
from engine.refine.detailer import detailer_settings, refine_segment  # noqa: E402
from engine.refine.models import RefineModels  # noqa: E402
from engine.runtypes import RunReport  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "refine.json"
REAL = 1024  # the portrait's size for detection, and the size the suite's settings are for
REGIONS = ("face", "eyes", "hands")  # the stages' order (REFINE_REGIONS)
# Two hand-sized boxes (x1, y1, x2, y2) on the 1024² astronaut: no hand detector is packaged.
HAND_BOXES = ((220.0, 884.0, 340.0, 1024.0), (890.0, 860.0, 1010.0, 1000.0))
HAND_SCORE = 0.9
T5_TOKENS, POOLED, T5_WIDTH = 512, 768, 4096  # FLUX.1-dev's prompt embeddings
SEED = 0
CHANGE = ("hands", 0.2)  # the one-region change: hands' denoise 0.15 -> 0.2
GOAL_TAB_S, GOAL_CHANGE_S = 6.0, 2.5  # on an H100, 20 steps


@dataclass(frozen=True)
class Setup:
    device: torch.device
    size: int
    steps: int
    reduced: bool
    text_tokens: int
    fp8: bool = False  # fp8 weights (compute where the GPU has fp8 tensor cores, else storage)
    compile: bool = False  # the repeated blocks compiled, as the studio does on CUDA

    @property
    def scale(self) -> float:
        return self.size / REAL


class Clock:
    """Seconds of a call, with the device synchronised around it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, work: Callable[[], Any]) -> tuple[float, Any]:
        self.sync()
        start = time.perf_counter()
        value = work()
        self.sync()
        return time.perf_counter() - start, value

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class TimedVae:
    """The VAE with its encode and decode calls timed: each segment's VAE share."""

    def __init__(self, vae: AutoencoderKL, clock: Clock) -> None:
        self._vae, self._clock = vae, clock
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:  # device, dtype, config: the VAE's own
        return getattr(self._vae, name)

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(lambda: self._vae.encode(*args, **kwargs))

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(lambda: self._vae.decode(*args, **kwargs))

    def _timed(self, work: Callable[[], Any]) -> Any:
        seconds, value = self._clock(work)
        self.seconds += seconds
        return value


def portrait(size: int) -> np.ndarray:
    """skimage's astronaut at size², float32 (H, W, 3) in [0, 1]."""
    from skimage import data

    picture = Image.fromarray(data.astronaut()).resize((size, size), Image.LANCZOS)
    return np.asarray(picture, np.float32) / 255


def flux_bundle(setup: Setup, clock: Clock) -> FluxBundle:
    """The engine's own FluxBundle over random-weight FLUX.1 models. The text encoders and
    tokenizers are None: refine_segment and run_pass never touch them (the Conditioning is
    built from PromptEmbeddings directly), only .transformer, .vae, .device, .compute_dtype,
    .runtime (attention) and describe_runtime()."""
    device = setup.device
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32  # compute_dtype_for: fp32 on a CPU
    flux = config("flux1_transformer.json")
    if setup.reduced:
        flux |= {"num_layers": 1, "num_single_layers": 1}
    transformer = build(lambda: FluxTransformer2DModel(**flux), device, dtype)
    weight_dtype = "fp8_e4m3fn" if setup.fp8 else "bf16" if cuda else "fp32"
    facts = DeviceFacts.of(device)
    path = precision_path(weight_dtype, facts)
    if path != FULL:
        apply_weight_storage(transformer, torch.float8_e4m3fn, dtype, path)
    if setup.compile:
        transformer.compile_repeated_blocks(mode=COMPILE_MODE)
    vae = build(lambda: AutoencoderKL(**config("flux1_vae.json")), device, dtype)
    memory = plan_memory("auto", device)
    if memory.tiled_vae:
        vae.enable_tiling()
    files = FluxFiles(
        transformer="random:flux1_transformer.json",
        vae="random:flux1_vae.json",
        text="none",
        weight_dtype=weight_dtype,
        label="FLUX.1-dev architecture, random weights",
        precision=path,
    )
    runtime = Runtime(facts, setup.compile, memory, choose_attention(device, dtype))
    return FluxBundle(
        transformer=transformer, vae=TimedVae(vae, clock), clip_tokenizer=None, clip=None,
        t5_tokenizer=None, t5=None, files=files, device=device, compute_dtype=dtype,
        t5_max_length=setup.text_tokens, runtime=runtime,
    )  # fmt: skip


def prompt(setup: Setup, dtype: torch.dtype) -> Conditioning:
    gen = torch.Generator().manual_seed(SEED)
    tokens = torch.randn(1, setup.text_tokens, T5_WIDTH, generator=gen)
    pooled = torch.randn(1, POOLED, generator=gen)
    embeddings = PromptEmbeddings(tokens.to(setup.device, dtype), pooled.to(setup.device, dtype))
    return Conditioning(embeddings)


def suite_detailer(setup: Setup, denoise: float = 0.15) -> DetailerParams:
    """The suite's region settings, their pixel sizes scaled to the portrait's size."""

    def px(value: int, least: int = 0) -> int:
        return max(least, round(value * setup.scale))

    return DetailerParams(
        enabled=True, denoise=denoise, steps=setup.steps, crop_factor=3.0, noise_mask=True,
        guide_size=px(512, 16), max_size=px(1024, 16), dilation=px(10), drop_size=px(10, 1),
        feather=px(5), noise_mask_feather=px(20),
    )  # fmt: skip


class Detectors:
    """Each region's detections on the 1024² portrait, through the engine's RefineModels
    (MTCNN; MTCNN + dlib landmarks for the eyes), scaled to the bench's size."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.models = RefineModels(None, "cpu")
        self.rgb = (portrait(REAL) * 255).round().astype(np.uint8)

    def __call__(self, region: str) -> list[Detection]:
        if region == "hands":
            found = [Detection(FaceBox(*box, HAND_SCORE), "hand", None) for box in HAND_BOXES]
        else:
            found = self.models.detect(self.models.source(region), self.rgb)
        return [self._scaled(d) for d in found]

    def _scaled(self, found: Detection) -> Detection:
        if self.setup.size == REAL:
            return found
        import cv2

        f, size, b = self.setup.scale, self.setup.size, found.box
        box = FaceBox(b.x1 * f, b.y1 * f, b.x2 * f, b.y2 * f, b.score)
        mask = None
        if found.mask is not None:
            area = cv2.resize(found.mask.astype(np.float32), (size, size), cv2.INTER_AREA)
            mask = area > 0
        return Detection(box, found.label, mask)


class Bench:
    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.clock = Clock(setup.device)
        self.bundle = flux_bundle(setup, self.clock)
        self.cond = prompt(setup, self.bundle.compute_dtype)
        self.detect = Detectors(setup)
        self.report = RunReport()
        self.ctx = StageContext(services=None, report=self.report)

    def region(self, name: str, pixels: np.ndarray, detailer: DetailerParams) -> tuple:
        """One region as its stage runs it: detect, build segments, refine each."""
        size = self.setup.size
        detect_s, found = self.clock(lambda: self.detect(name))
        params = SegmentParams(
            detailer.bbox_threshold, detailer.dilation, detailer.crop_factor, detailer.drop_size
        )
        segments = segments_from_detections(found, size, size, params)
        settings = detailer_settings(SettingsParams(), detailer)
        figures = []
        for number, segment in enumerate(segments):
            pixels, figure = self.segment(name, pixels, segment, detailer, settings, number)
            figures.append(figure)
        total = detect_s + sum(f["s"] for f in figures)
        return pixels, {"detect_s": detect_s, "segments": figures, "s": total}

    def segment(self, name, pixels, segment: Segment, detailer, settings, number) -> tuple:
        vae = self.bundle.vae
        before = vae.seconds
        seconds, outcome = self.clock(
            lambda: refine_segment(
                self.ctx, f"refine_{name}", self.bundle, self.cond, pixels, segment, detailer,
                settings, SEED + number,
            )
        )  # fmt: skip
        figure = {
            "label": segment.label,
            "bbox": [round(v, 1) for v in segment.bbox],
            "crop": list(segment.crop_region),
            "render": list(outcome.size),
            "tokens": outcome.size[0] * outcome.size[1] // 256,  # 2×2 patches of 8 px cells
            "refined": outcome.refined,
            "s": seconds,
            "vae_s": vae.seconds - before,
        }
        return outcome.image, figure

    def tab(self, pixels: np.ndarray) -> tuple[np.ndarray, float, dict]:
        """All three regions in the stages' order, the image flowing through them."""
        detailer = suite_detailer(self.setup)

        def run() -> tuple[np.ndarray, dict]:
            image, regions = pixels, {}
            for name in REGIONS:
                image, regions[name] = self.region(name, image, detailer)
            return image, regions

        seconds, (image, regions) = self.clock(run)
        return image, seconds, regions

    def change(self, pixels: np.ndarray) -> dict:
        """The one-region change: that region alone re-runs (the others stay cached)."""
        name, denoise = CHANGE
        detailer = suite_detailer(self.setup, denoise)
        seconds, (_, figures) = self.clock(lambda: self.region(name, pixels, detailer))
        return {"region": name, "denoise": denoise, "s": seconds, **figures}


def engine_check() -> dict:
    """The tiny engine (CPU) through engine.run: face, eyes and hands, then hands' denoise
    changed; the run report says which stages ran and which were served from cache. Hands
    have no detector there (a note, nothing rendered): only the caching is checked."""
    import io

    from engine.engine import Engine, EngineConfig
    from engine.models.manager import ModelConfig
    from engine.recipe_json import recipe_from_json

    def recipe(digest: str, hands_denoise: float):
        regions = {r: {"enabled": True, "steps": 2} for r in REGIONS}
        regions["hands"]["denoise"] = hands_denoise
        source = {"kind": "image", "image": digest}
        document = {"source": source, "refine": regions, "color": {"enabled": False}}
        return recipe_from_json(json.dumps(document))

    with tempfile.TemporaryDirectory() as folder:
        models = ModelConfig(tiny=True, device="cpu", compile="off")
        engine = Engine(
            EngineConfig(models=models, outputs_dir=Path(folder, "o"), data_dir=Path(folder, "d"))
        )
        buffer = io.BytesIO()
        Image.fromarray((portrait(512) * 255).round().astype(np.uint8)).save(buffer, "PNG")
        digest = engine.store_image(buffer.getvalue())
        first = engine.run(recipe(digest, 0.15), save=False).report
        again = engine.run(recipe(digest, CHANGE[1]), save=False).report
    refine = [f"refine_{r}" for r in REGIONS]
    return {
        "first_ran": [n for n in first.ran_names if n in refine],
        "change_ran": again.ran_names,
        "change_cached": [n for n in again.cached if n in refine],
        "only_hands_ran": again.ran_names == ["refine_hands"],
    }


def run(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    reduced = args.reduced or not cuda
    size = args.size or (REAL if cuda else 128)
    if size % 16:
        raise SystemExit(f"--size must be a multiple of 16, got {size}")
    scale = size / REAL
    tokens = max(8, round(T5_TOKENS * scale * scale)) if reduced else T5_TOKENS
    steps = args.steps or (20 if cuda else 4)
    setup = Setup(device, size, steps, reduced, tokens, args.precision == "fp8", args.compile)
    torch.set_grad_enabled(False)
    build_s, bench = Clock(device)(lambda: Bench(setup))
    pixels = portrait(size)
    if cuda:  # warm-up: kernels per shape, allocator, MTCNN and dlib (a CPU's runs warm up)
        bench.tab(pixels)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    runs = []
    for _ in range(args.runs or (3 if cuda else 2)):
        image, tab_s, regions = bench.tab(pixels)
        runs.append((tab_s, regions, bench.change(image)))
    tab_s, regions, _ = min(runs, key=lambda r: r[0])  # the fastest: least disturbed
    change = min((r[2] for r in runs), key=lambda c: c["s"])
    tokens_of = {name: sum(s["tokens"] for s in regions[name]["segments"]) for name in REGIONS}
    transformer = bench.bundle.transformer
    figures = {
        "benchmark": "refine",
        "device": torch.cuda.get_device_name(device) if cuda else "CPU",
        "architecture": (
            "reduced on CPU: 1 double + 1 single block"
            if not cuda and reduced
            else "reduced: 1 double + 1 single block"
            if reduced
            else "FLUX.1-dev (19 double + 38 single blocks)"
        )
        + ", random weights",  # fmt: skip
        "precision": PRECISION_WORDS[bench.bundle.files.precision],
        "compiled": setup.compile,
        "size": size,
        "steps": setup.steps,
        "t5_tokens": tokens,
        "detailer_scale": scale,
        "build_s": build_s,
        "weights_gb": {
            "transformer": weights_gb(transformer),
            "vae": weights_gb(bench.bundle.vae._vae),
        },
        "regions": regions,
        "tab_s": tab_s,
        "change": change,
        "runs": len(runs),
        "tab_runs_s": [r[0] for r in runs],
        "ratios": {
            **{f"{name}/tab": regions[name]["s"] / tab_s for name in REGIONS},
            "change/tab": change["s"] / tab_s,
        },
        "token_shares": {name: n / sum(tokens_of.values()) for name, n in tokens_of.items()},
        "peak_memory_gb": _peak_gb(device),
        "peak_memory_kind": "GPU allocated" if cuda else "process RSS (host)",
        "runtime": bench.bundle.describe_runtime(),
    }
    comparable = cuda and not reduced and setup.steps == 20 and size == REAL
    figures["goal"] = {
        "tab_s": GOAL_TAB_S,
        "change_s": GOAL_CHANGE_S,
        "tab_met": tab_s <= GOAL_TAB_S if comparable else None,
        "change_met": change["s"] <= GOAL_CHANGE_S if comparable else None,
    }
    if not args.no_engine_check:
        seconds, figures["engine_check"] = Clock(torch.device("cpu"))(engine_check)
        figures["engine_check"]["s"] = seconds
    return _rounded(figures)


def _peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB  # KiB on Linux


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def show(f: dict) -> None:
    note = "" if f["goal"]["tab_met"] is not None else " — only the ratios mean anything"
    print(
        f"Refine tab on {f['device']}: {f['architecture']}, {f['precision']}, "
        f"{'compiled' if f['compiled'] else 'eager'} blocks, "
        f"{f['size']}² portrait, {f['steps']} steps, {f['t5_tokens']} T5 tokens{note}"
    )
    if f["detailer_scale"] != 1:
        print(f"  detections and the detailer's pixel settings scaled by {f['detailer_scale']:g} "
              f"(guide_size {round(512 * f['detailer_scale'])}, max_size "
              f"{round(1024 * f['detailer_scale'])}); T5 tokens by its square")  # fmt: skip
    print(f"  {'region':<7}{'segment':<11}{'bbox':<26}{'render':>11}{'s':>9}{'vae s':>9}")
    for name, region in f["regions"].items():
        print(f"  {name:<7}{'detect':<11}{'':<26}{'':>11}{region['detect_s']:>9.3f}")
        if not region["segments"]:
            print(f"  {'':<7}nothing kept: its boxes are too small at this size")
        for s in region["segments"]:
            render = f"{s['render'][0]}×{s['render'][1]}" if s["refined"] else "skipped"
            box = "(" + ", ".join(f"{v:.0f}" for v in s["bbox"]) + ")"
            print(f"  {'':<7}{s['label']:<11}{box:<26}{render:>11}{s['s']:>9.3f}{s['vae_s']:>9.3f}")
        share = (
            f"{f['ratios'][f'{name}/tab']:.0%} of the tab "
            f"({f['token_shares'][name]:.0%} of the tab's image tokens)"
        )
        print(f"  {'':<7}{'region':<11}{'':<26}{'':>11}{region['s']:>9.3f}   {share}")
    c, goal = f["change"], f["goal"]
    print(
        f"  whole tab (face -> eyes -> hands): {f['tab_s']:.3f} s, fastest of {f['runs']} "
        f"({', '.join(f'{t:.2f}' for t in f['tab_runs_s'])})   "
        f"[goal on an H100 at 20 steps: <= {goal['tab_s']:g} s{_verdict(goal['tab_met'])}]"
    )
    print(
        f"  one-region change ({c['region']}, denoise 0.15 -> {c['denoise']}): {c['s']:.3f} s "
        f"= {f['ratios']['change/tab']:.0%} of the tab   "
        f"[goal: <= {goal['change_s']:g} s{_verdict(goal['change_met'])}]"
    )
    print("  (a face change re-runs face, eyes and hands: the whole tab)")
    if f["device"] == "CPU":
        print(
            "  on a CPU each call of the reduced transformer is bound by reading its weights, so "
            "every segment costs about the same;\n  on a GPU the regions' shares follow their "
            "image tokens more closely"
        )
    weights = ", ".join(f"{k} {v:.2f} GB" for k, v in f["weights_gb"].items())
    print(f"  peak memory {f['peak_memory_gb']:.2f} GB ({f['peak_memory_kind']}); "
          f"weights {weights}; built in {f['build_s']:.1f} s")  # fmt: skip
    print(f"  {f['runtime']}")
    check = f.get("engine_check")
    if check:
        print(f"  tiny engine (engine.run): first run {', '.join(check['first_ran'])}; after the "
              f"hands change ran {check['change_ran']}, cached {check['change_cached']} "
              f"-> {'only hands re-ran' if check['only_hands_ran'] else 'MORE than hands ran'} "
              f"({check['s']:.1f} s)")  # fmt: skip


def _verdict(met: bool | None) -> str:
    return "" if met is None else (" — met" if met else " — NOT met")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=None, help="default 20 on CUDA, 4 on CPU")
    parser.add_argument("--size", type=int, default=None, help="default 1024 on CUDA, 128 on CPU")
    parser.add_argument("--reduced", action="store_true", help="1 double + 1 single block")
    parser.add_argument(
        "--precision", choices=("bf16", "fp8"), default="bf16", help="the transformer's weights "
        "on CUDA (fp8: compute with fp8 tensor cores, else storage); a CPU computes in fp32"
    )  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="compile the repeated blocks")
    parser.add_argument("--runs", type=int, default=None, help="timed runs (3 CUDA, 2 CPU)")
    parser.add_argument("--no-engine-check", action="store_true", help="skip the tiny engine")
    figures = run(parser.parse_args())
    show(figures)
    print(json.dumps(figures))  # the last line: the summary bench/gpu.sh collects
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
