"""What bench/refine.py measures with: the portrait, the Flux bundle of the real (or
reduced) architecture with random weights, the prompt, the suite's detailer settings, and
the detections of each region (the engine's MTCNN and landmarks; fixed hand boxes)."""

from __future__ import annotations

import argparse
import json
import resource
import sys
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

from bench.random_models import build, config  # noqa: E402
from engine.faces.boxes import FaceBox  # noqa: E402
from engine.faces.yolo_segm import Detection  # noqa: E402
from engine.flux.prompt import PromptEmbeddings  # noqa: E402
from engine.flux.sampling import Conditioning  # noqa: E402
from engine.models.attention import choose_attention  # noqa: E402
from engine.models.manager import FluxBundle, FluxFiles  # noqa: E402
from engine.models.memory import GB, plan_memory  # noqa: E402
from engine.models.precision import (  # noqa: E402
    FULL,
    DeviceFacts,
    apply_weight_storage,
    precision_path,
)
from engine.models.runtime import COMPILE_MODE, Runtime  # noqa: E402
from engine.recipe_refine import DetailerParams  # noqa: E402
from engine.refine.models import RefineModels  # noqa: E402

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


def peak_gb(device: torch.device) -> float:
    """CUDA's max allocated, or the process's max RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB  # KiB on Linux


def rounded(value: Any) -> Any:
    """Floats to 4 decimals, through dicts and lists (the JSON summary)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def step_bench_main(doc: str, run, show, results: Path, argv: list[str] | None = None) -> None:
    """The command line of the per-step benches (identity, regions): --device, --size and
    --steps; prints the table and one JSON line, and writes the JSON to `results`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--size", type=int, default=0, help="render size (1024 on CUDA, 256 CPU)")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (5 on CUDA, 3 CPU)")
    args = parser.parse_args(argv)
    if args.steps < 0 or args.size < 0:
        parser.error("--steps and --size must be positive")
    figures = run(args)
    show(figures)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))
