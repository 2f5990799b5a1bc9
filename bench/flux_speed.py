"""Flux transformer speed: bf16, fp8 storage, torch.compile and the first-block cache.

Builds the real FLUX.1-dev architecture (engine/models/configs) with random weights and times
our own sampling path (FluxDenoiser + Euler, "simple" schedule) per variant: bf16 (baseline),
fp8 (e4m3fn storage incl. modulation, bf16 compute), compile / compile-max (regional
torch.compile, mode "default" / "max-autotune-no-cudagraphs"), fbcache (first-block cache
forced to hit every other step: the effective s/step at 50 % hits), compile+fbcache, and vae
(one decode with the real VAE config). BENCHMARKS.md explains the variants and the figures.

CUDA: the full model (19 + 38 blocks, 1024², 512 text tokens, 28 steps), absolute figures with
the GPU's name. CPU: a reduced configuration (2 + 4 blocks at full width, 256²), ratios to
bf16 only. Plain lines, then one JSON line.

Run: .venv/bin/python bench/flux_speed.py [--device auto] [--steps 2] [--variants bf16,fbcache]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.flux.denoiser import FluxDenoiser  # noqa: E402
from engine.flux.fbcache import FirstBlockCache  # noqa: E402
from engine.flux.latents import image_ids  # noqa: E402
from engine.flux.prompt import PromptEmbeddings  # noqa: E402
from engine.flux.samplers import sample_euler  # noqa: E402
from engine.flux.schedules import flux_mu, flux_sigmas  # noqa: E402
from engine.models.precision import apply_weight_storage, pick_device  # noqa: E402
from engine.recipe import FirstBlockCacheParams  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "engine" / "models" / "configs"
VARIANTS = ("bf16", "fp8", "compile", "compile-max", "fbcache", "compile+fbcache", "vae")
DEFAULT_VARIANTS = {
    "cuda": "bf16,fp8,compile,compile-max,fbcache,compile+fbcache,vae",
    "cpu": "bf16,fp8,compile,fbcache,vae",
}
# Every relative difference is below this, so max_consecutive_hits alone sets the hit rate.
FORCED_HIT = FirstBlockCacheParams(enabled=True, threshold=1e9, max_consecutive_hits=1)
GB = 1024**3


@dataclass
class Setup:
    """What one run of the benchmark measures on."""

    device: torch.device
    double: int
    single: int
    size: int
    text_tokens: int
    steps: int

    @property
    def image_tokens(self) -> int:
        return (self.size // 16) ** 2

    def label(self) -> str:
        shape = f"{self.double} double + {self.single} single blocks, {self.size}², "
        shape += f"{self.image_tokens} image + {self.text_tokens} text tokens, {self.steps} steps"
        if self.device.type == "cuda":
            return f"[{torch.cuda.get_device_name(self.device)}, {shape}]"
        return f"[CPU, reduced configuration: {shape}, bf16; ratios only]"


@dataclass
class Result:
    """One variant's figures; seconds are wall time on this device."""

    variant: str
    s_per_step: float
    total_s: float
    warmup_s: float
    weights_gb: float
    cpu_s_per_step: float = math.inf  # process CPU time, all threads
    peak_gb: float | None = None
    hits: int | None = None
    misses: int | None = None


def fill_random(model: torch.nn.Module, seed: int) -> None:
    """Random weights with std 1/sqrt(fan_in), fast: a tiled 1M-value pool instead of a full
    RNG draw per parameter (timings do not depend on the values, only on their finiteness)."""
    gen = torch.Generator().manual_seed(seed)
    first = next(model.parameters())
    pool = (torch.rand(1 << 20, generator=gen) * 2 - 1).to(first.device, first.dtype)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim < 2:
                param.fill_(1.0 if name.endswith("weight") else 0.0)  # norm scales, biases
                continue
            flat = param.view(-1)
            for start in range(0, flat.numel(), pool.numel()):
                chunk = flat[start : start + pool.numel()]
                chunk.copy_(pool[: chunk.numel()])
            param.mul_((3.0 / param[0].numel()) ** 0.5)


def build(cls: type, config_name: str, device: torch.device, **overrides) -> torch.nn.Module:
    """A bf16 model of a real config on `device`, allocated once (meta first), random weights."""
    config = json.loads((CONFIGS / config_name).read_text())
    config.pop("_class_name", None)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # bf16 from the start: no fp32 copy, no cast
    try:
        with torch.device("meta"):
            model = cls(**{**config, **overrides})
    finally:
        torch.set_default_dtype(previous)
    model.to_empty(device=device)
    assert not list(model.buffers()), "to_empty leaves buffers uninitialised"
    fill_random(model, seed=0)
    return model.eval()


def weights_gb(model: torch.nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / GB


def timed(device: torch.device, fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and process CPU seconds of fn(), once the device has finished its queue. On a
    shared CPU the CPU time is the steadier figure: it leaves out time spent descheduled."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda _device: None
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def denoise(setup: Setup, model, steps: int) -> None:
    """`steps` Euler steps of our own sampling path on random latents and text."""
    dev, gen = setup.device, torch.Generator().manual_seed(1)
    emb = PromptEmbeddings(
        tokens=torch.randn(1, setup.text_tokens, 4096, generator=gen).to(dev, torch.bfloat16),
        pooled=torch.randn(1, 768, generator=gen).to(dev, torch.bfloat16),
    )
    ids = image_ids(setup.size, setup.size, dev)
    denoiser = FluxDenoiser(model, emb, ids, 3.5, torch.bfloat16)
    x = torch.randn(1, setup.image_tokens, 64, generator=gen).to(dev)
    sigmas = flux_sigmas("simple", steps, flux_mu(setup.size, setup.size)).to(dev)
    sample_euler(denoiser, x, sigmas)


def kind_of(variant: str) -> str:
    """The transformer a variant runs on; the cache variants share their plain one's."""
    return variant.removesuffix("+fbcache").replace("fbcache", "bf16")


def prepare(setup: Setup, kind: str) -> FluxTransformer2DModel:
    transformer = build(
        FluxTransformer2DModel, "flux1_transformer.json", setup.device,
        num_layers=setup.double, num_single_layers=setup.single,
    )  # fmt: skip
    if kind == "fp8":
        apply_weight_storage(transformer, torch.float8_e4m3fn, torch.bfloat16)
    if kind.startswith("compile"):
        mode = "max-autotune-no-cudagraphs" if kind == "compile-max" else "default"
        # Regional: the blocks are what repeat, and the cache wrapper calls them one by one.
        transformer.compile_repeated_blocks(mode=mode)
    return transformer


def peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None


def measure_group(setup: Setup, variants: list[str], repeats: int) -> list[Result]:
    """Build the group's transformers, warm each variant up, then time `repeats` rounds that
    visit every variant in turn and keep each one's fastest round (other load on the machine
    only ever adds time, and interleaving spreads a slow spell over all variants)."""
    transformers = {kind: prepare(setup, kind) for kind in dict.fromkeys(map(kind_of, variants))}
    mu = flux_mu(setup.size, setup.size)
    models = {
        v: FirstBlockCache(transformers[kind_of(v)], FORCED_HIT, mu) if "fbcache" in v
        else transformers[kind_of(v)]
        for v in variants
    }  # fmt: skip
    # Two warm-up steps: compilation, and for the cache both its miss and its hit path.
    results = {}
    for v, model in models.items():
        warmup, _ = timed(setup.device, lambda m=model: denoise(setup, m, 2))
        results[v] = Result(v, math.inf, math.inf, warmup, weights_gb(transformers[kind_of(v)]))
    for _ in range(repeats):
        for variant, model in models.items():
            if isinstance(model, FirstBlockCache):
                model.reset()
            if setup.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(setup.device)
            total, cpu = timed(setup.device, lambda m=model: denoise(setup, m, setup.steps))
            result = results[variant]
            if total < result.total_s:
                result.total_s, result.s_per_step = total, total / setup.steps
            result.cpu_s_per_step = min(result.cpu_s_per_step, cpu / setup.steps)
            result.peak_gb = peak_gb(setup.device)
            if isinstance(model, FirstBlockCache):
                result.hits, result.misses = model.hits, model.misses
    return list(results.values())


def measure_vae(setup: Setup, repeats: int) -> Result:
    vae = build(AutoencoderKL, "flux1_vae.json", setup.device)
    gen = torch.Generator().manual_seed(2)
    side = setup.size // 8
    latents = torch.randn(1, 16, side, side, generator=gen).to(setup.device, torch.bfloat16)
    with torch.inference_mode():
        warmup, _ = timed(setup.device, lambda: vae.decode(latents))
        if setup.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(setup.device)
        runs = [timed(setup.device, lambda: vae.decode(latents)) for _ in range(repeats)]
    wall, cpu = min(w for w, _ in runs), min(c for _, c in runs)
    result = Result("vae", wall, wall, warmup, weights_gb(vae), peak_gb(setup.device))
    result.cpu_s_per_step = cpu
    return result


def describe(setup: Setup, r: Result, base: Result | None) -> str:
    """One plain line: absolute figures on CUDA, ratios to bf16 on a CPU."""
    cache = f", hits {r.hits}/{r.hits + r.misses}" if r.hits is not None else ""
    if setup.device.type == "cuda":
        what = "decode" if r.variant == "vae" else f"{r.s_per_step:.3f} s/step"
        return (
            f"{r.variant}: {what}, {r.total_s:.2f} s total, warm-up {r.warmup_s:.1f} s, "
            f"weights {r.weights_gb:.2f} GB, peak {r.peak_gb:.2f} GB{cache} {setup.label()}"
        )
    if base is None:
        role = "the baseline of the ratios" if r.variant == "bf16" else "no bf16 run to compare"
        return f"{r.variant}: {role}{cache} {setup.label()}"
    unit = "one decode / one bf16 step" if r.variant == "vae" else "s/step vs bf16"
    warmup = r.warmup_s / base.s_per_step
    return (
        f"{r.variant}: {r.s_per_step / base.s_per_step:.2f}x {unit} "
        f"({r.cpu_s_per_step / base.cpu_s_per_step:.2f}x in CPU time), weights "
        f"{r.weights_gb / base.weights_gb:.2f}x, warm-up {warmup:.1f} bf16 steps{cache} "
        f"{setup.label()}"
    )


OPTIONS: dict[str, tuple[type, str]] = {
    "--device": (str, "auto, cpu, cuda or cuda:N (default auto)"),
    "--blocks": (str, "double,single (default 19,38 on CUDA, 2,4 on CPU)"),
    "--size": (int, "image side in px (default 1024 on CUDA, 256 on CPU)"),
    "--text-tokens": (int, "default 512 x image tokens / 4096, as real Flux at 1024²"),
    "--steps": (int, "timed steps per round (default 28 on CUDA, 2 on CPU)"),
    "--variants": (str, f"comma list of {', '.join(VARIANTS)}"),
    "--repeats": (int, "timed rounds, the fastest kept (default 2 on CUDA, 6 on CPU)"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for flag, (kind, text) in OPTIONS.items():
        parser.add_argument(flag, type=kind, default=None, help=text)
    parser.add_argument(
        "--interleave", action=argparse.BooleanOptionalAction, default=None,
        help="hold every variant's model at once and alternate them (default on CPU only)",
    )  # fmt: skip
    return parser.parse_args(argv)


def make_setup(args: argparse.Namespace) -> tuple[Setup, list[str]]:
    device = pick_device(args.device or "auto")
    cuda = device.type == "cuda"
    double, single = (int(v) for v in (args.blocks or ("19,38" if cuda else "2,4")).split(","))
    size = args.size or (1024 if cuda else 256)
    if size % 16:
        raise SystemExit("--size must be a multiple of 16")
    # Keep real Flux's 8:1 image:text token ratio (4096:512 at 1024²) when the size shrinks.
    text = args.text_tokens or max(16, 512 * (size // 16) ** 2 // 4096)
    steps = args.steps or (28 if cuda else 2)
    variants = (args.variants or DEFAULT_VARIANTS["cuda" if cuda else "cpu"]).split(",")
    if unknown := sorted(set(variants) - set(VARIANTS)):
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    variants.sort(key=lambda v: v != "bf16")  # the baseline first
    return Setup(device, double, single, size, text, steps), variants


def groups(variants: list[str], interleave: bool) -> list[list[str]]:
    """Transformer variants measured together: all at once (interleaved rounds), or one
    transformer at a time when several full models would not fit in memory together."""
    wanted = [v for v in variants if v != "vae"]
    if interleave:
        return [wanted] if wanted else []
    kinds = dict.fromkeys(map(kind_of, wanted))
    return [[v for v in wanted if kind_of(v) == kind] for kind in kinds]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup, variants = make_setup(args)
    cuda = setup.device.type == "cuda"
    interleave = (not cuda) if args.interleave is None else args.interleave
    repeats = args.repeats or (2 if cuda else 6)
    torch.set_grad_enabled(False)
    load_start = os.getloadavg()[0]  # other work on a shared CPU skews every figure
    measured: dict[str, Result] = {}
    for group in groups(variants, interleave):
        measured |= {r.variant: r for r in measure_group(setup, group, repeats)}
        torch.compiler.reset()  # compiled code holds its modules: let the group's models go
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    if "vae" in variants:
        measured["vae"] = measure_vae(setup, repeats)
    results = [measured[v] for v in variants]
    base = measured.get("bf16")
    for result in results:
        print(describe(setup, result, None if result is base else base), flush=True)
    summary = {
        "benchmark": "flux_speed",
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(setup.device) if cuda else "cpu",
        "reduced": not cuda or (setup.double, setup.single, setup.size) != (19, 38, 1024),
        "setup": {k: v for k, v in asdict(setup).items() if k != "device"},
        "repeats": repeats,
        "load_average_start_end": None if cuda else [load_start, os.getloadavg()[0]],
        "torch": torch.__version__,
        "results": [asdict(r) for r in results],
        "ratios_to_bf16": {r.variant: r.s_per_step / base.s_per_step for r in results if base},
        "cpu_time_ratios_to_bf16": {
            r.variant: r.cpu_s_per_step / base.cpu_s_per_step for r in results if base and not cuda
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
