"""Flux transformer speed: bf16, fp8 storage and fp8 compute, each with and without
torch.compile and the first-block cache.

Builds the real FLUX.1-dev architecture (engine/models/configs) with random weights and times
our own sampling path (FluxDenoiser + Euler, "simple" schedule) per variant. A variant is
"<precision>[+fuse][+compile|+compile-max][+fbcache]":
  precision  bf16 (baseline), fp8 (e4m3fn storage incl. modulation, bf16 compute),
             fp8c (fp8 compute: scaled fp8 matmuls, engine/models/fp8_compute.py)
  compile    regional torch.compile of the repeated blocks, mode "default";
             compile-max: mode "max-autotune-no-cudagraphs"
  fuse       q, k and v projections fused into one Linear (diffusers' fuse_qkv_projections)
  fbcache    first-block cache forced to hit every other step: the effective s/step at 50 %
and "vae" (one decode with the real VAE config). The old names still work: compile, fbcache,
compile+fbcache and compile-max mean bf16 with those. Attention runs on the SDPA kernel that
engine/models/attention.py ranks fastest (--attention to force one).

CUDA: the full model (19 + 38 blocks, 1024², 512 text tokens, 28 steps), absolute figures with
the GPU's name. CPU: a reduced configuration (2 + 4 blocks at full width, 256²), ratios to
bf16 only. Plain lines, then one JSON line (also written to --json when given, after every
group, so a run cut short keeps what it measured).

Run: .venv/bin/python bench/flux_speed.py [--device auto] [--steps 2] [--variants bf16,fp8c]
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

from bench.flux_variants import (  # noqa: E402
    COMPILE_MODES,
    DEFAULT_VARIANTS,
    EXAMPLES,
    PRECISIONS,
    Variant,
)
from bench.random_models import build, config, weights_gb  # noqa: E402
from engine.flux.denoiser import FluxDenoiser  # noqa: E402
from engine.flux.fbcache import FirstBlockCache  # noqa: E402
from engine.flux.latents import image_ids  # noqa: E402
from engine.flux.prompt import PromptEmbeddings  # noqa: E402
from engine.flux.samplers import sample_euler  # noqa: E402
from engine.flux.schedules import flux_mu, flux_sigmas  # noqa: E402
from engine.models.attention import AttentionChoice, choose_attention  # noqa: E402
from engine.models.memory import peak_gb, reset_peak  # noqa: E402
from engine.models.precision import apply_weight_storage, pick_device  # noqa: E402
from engine.recipe import FirstBlockCacheParams  # noqa: E402

# Every relative difference is below this, so max_consecutive_hits alone sets the hit rate.
FORCED_HIT = FirstBlockCacheParams(enabled=True, threshold=1e9, max_consecutive_hits=1)


@dataclass
class Setup:
    """What one run of the benchmark measures on."""

    device: torch.device
    double: int
    single: int
    size: int
    text_tokens: int
    steps: int
    attention: AttentionChoice

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
    error: str = ""


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
    denoiser = FluxDenoiser(model, emb, ids, 3.5, torch.bfloat16, attention=setup.attention)
    x = torch.randn(1, setup.image_tokens, 64, generator=gen).to(dev)
    sigmas = flux_sigmas("simple", steps, flux_mu(setup.size, setup.size)).to(dev)
    sample_euler(denoiser, x, sigmas)


def build_transformer(setup: Setup) -> FluxTransformer2DModel:
    body = config("flux1_transformer.json")
    body |= {"num_layers": setup.double, "num_single_layers": setup.single}
    return build(lambda: FluxTransformer2DModel(**body), setup.device)


def prepare(setup: Setup, kind: Variant) -> FluxTransformer2DModel:
    transformer = build_transformer(setup)
    if kind.fuse:
        transformer.fuse_qkv_projections()
    path = PRECISIONS[kind.precision]
    if path:
        apply_weight_storage(transformer, torch.float8_e4m3fn, torch.bfloat16, path)
    if kind.compile:
        # Regional: the blocks are what repeat, and the cache wrapper calls them one by one.
        transformer.compile_repeated_blocks(mode=COMPILE_MODES[kind.compile])
    return transformer


def measure_group(setup: Setup, variants: list[str], repeats: int) -> list[Result]:
    """Build the group's transformers, warm each variant up, then time `repeats` rounds that
    visit every variant in turn and keep each one's fastest round (other load on the machine
    only ever adds time, and interleaving spreads a slow spell over all variants)."""
    parsed = {v: Variant.parse(v) for v in variants}
    kinds = {p.kind: p for p in parsed.values()}
    transformers = {kind: prepare(setup, p) for kind, p in kinds.items()}
    mu = flux_mu(setup.size, setup.size)
    models = {
        v: FirstBlockCache(transformers[p.kind], FORCED_HIT, mu) if p.fbcache
        else transformers[p.kind]
        for v, p in parsed.items()
    }  # fmt: skip
    # Two warm-up steps: compilation, and for the cache both its miss and its hit path.
    results = {}
    for v, model in models.items():
        warmup, _ = timed(setup.device, lambda m=model: denoise(setup, m, 2))
        size = weights_gb(transformers[parsed[v].kind])
        results[v] = Result(v, math.inf, math.inf, warmup, size)
    for _ in range(repeats):
        for variant, model in models.items():
            time_round(setup, model, results[variant])
    return list(results.values())


def time_round(setup: Setup, model, result: Result) -> None:
    """One timed run of setup.steps steps; keeps the fastest."""
    if isinstance(model, FirstBlockCache):
        model.reset()
    reset_peak(setup.device)
    total, cpu = timed(setup.device, lambda: denoise(setup, model, setup.steps))
    if total < result.total_s:
        result.total_s, result.s_per_step = total, total / setup.steps
    result.cpu_s_per_step = min(result.cpu_s_per_step, cpu / setup.steps)
    result.peak_gb = peak_gb(setup.device)
    if isinstance(model, FirstBlockCache):
        result.hits, result.misses = model.hits, model.misses


def measure_vae(setup: Setup, repeats: int) -> Result:
    body = config("flux1_vae.json")
    vae = build(lambda: AutoencoderKL(**body), setup.device)
    gen = torch.Generator().manual_seed(2)
    side = setup.size // 8
    latents = torch.randn(1, 16, side, side, generator=gen).to(setup.device, torch.bfloat16)
    with torch.inference_mode():
        warmup, _ = timed(setup.device, lambda: vae.decode(latents))
        reset_peak(setup.device)
        runs = [timed(setup.device, lambda: vae.decode(latents)) for _ in range(repeats)]
    wall, cpu = min(w for w, _ in runs), min(c for _, c in runs)
    result = Result("vae", wall, wall, warmup, weights_gb(vae), peak_gb=peak_gb(setup.device))
    result.cpu_s_per_step = cpu
    return result


def describe(setup: Setup, r: Result, base: Result | None) -> str:
    """One plain line: absolute figures on CUDA, ratios to bf16 on a CPU."""
    if r.error:
        return f"{r.variant}: {r.error} {setup.label()}"
    cache = f", hits {r.hits}/{r.hits + r.misses}" if r.hits is not None else ""
    if setup.device.type == "cuda":
        what = "decode" if r.variant == "vae" else f"{r.s_per_step:.3f} s/step"
        return (
            f"{r.variant}: {what}, {r.total_s:.2f} s total, warm-up {r.warmup_s:.1f} s, "
            f"weights {r.weights_gb:.2f} GB, peak {r.peak_gb:.2f} GB{cache} {setup.label()}"
        )
    if base is None or base.error:
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
    "--variants": (str, f"comma list, e.g. {EXAMPLES}"),
    "--repeats": (int, "timed rounds, the fastest kept (default 2 on CUDA, 6 on CPU)"),
    "--attention": (str, "auto (rank the SDPA kernels), default, cudnn, flash, efficient, math"),
    "--budget-s": (float, "skip the groups that would start after this many seconds"),
    "--json": (str, "also write the JSON summary to this file, after every group"),
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


def attention_for(name: str | None, device: torch.device) -> AttentionChoice:
    if name in (None, "auto"):
        return choose_attention(device)
    return AttentionChoice() if name == "default" else AttentionChoice((name, "math"))


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
    for v in variants:
        try:
            v == "vae" or Variant.parse(v)
        except ValueError:
            raise SystemExit(f"unknown variant {v!r}; e.g. {EXAMPLES}") from None
    variants.sort(key=lambda v: v != "bf16")  # the baseline first
    attention = attention_for(args.attention, device)
    return Setup(device, double, single, size, text, steps, attention), variants


def groups(variants: list[str], interleave: bool) -> list[list[str]]:
    """Transformer variants measured together: all at once (interleaved rounds), or one
    transformer at a time when several full models would not fit in memory together."""
    wanted = [v for v in variants if v != "vae"]
    if interleave:
        return [wanted] if wanted else []
    kinds = dict.fromkeys(Variant.parse(v).kind for v in wanted)
    return [[v for v in wanted if Variant.parse(v).kind == kind] for kind in kinds]


def release(cuda: bool) -> None:
    torch.compiler.reset()  # compiled code holds its modules: let the group's models go
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def failed(variant: str, exc: BaseException) -> Result:
    text = " ".join(str(exc).split())[:300]
    return Result(variant, math.nan, math.nan, math.nan, math.nan, error=f"failed: {text}")


def run_groups(setup: Setup, variants: list[str], args, emit: Callable) -> dict[str, Result]:
    """Every group in turn, each failure kept as that variant's result, not the run's end."""
    cuda = setup.device.type == "cuda"
    interleave = (not cuda) if args.interleave is None else args.interleave
    repeats = args.repeats or (2 if cuda else 6)
    start, measured = time.perf_counter(), {}
    for group in groups(variants, interleave) + ([["vae"]] if "vae" in variants else []):
        if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
            measured |= {v: failed(v, RuntimeError("skipped: time budget spent")) for v in group}
            continue
        try:
            if group == ["vae"]:
                measured["vae"] = measure_vae(setup, repeats)
            else:
                measured |= {r.variant: r for r in measure_group(setup, group, repeats)}
        except Exception as exc:  # one variant's failure must not lose the others' figures
            measured |= {v: failed(v, exc) for v in group}
        release(cuda)
        for v in group:
            print(describe(setup, measured[v], measured.get("bf16")), flush=True)
        emit(measured)
    return measured


def summary(setup: Setup, measured: dict[str, Result], repeats: int, load: list) -> dict:
    cuda = setup.device.type == "cuda"
    base = measured.get("bf16")
    ok = base is not None and not base.error
    results = list(measured.values())
    return {
        "benchmark": "flux_speed",
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(setup.device) if cuda else "cpu",
        "reduced": not cuda or (setup.double, setup.single, setup.size) != (19, 38, 1024),
        "setup": {k: v for k, v in asdict(setup).items() if k not in ("device", "attention")},
        "attention": setup.attention.describe(),
        "repeats": repeats,
        "load_average_start_end": None if cuda else load,
        "torch": torch.__version__,
        "results": [asdict(r) for r in results],
        "ratios_to_bf16": {r.variant: r.s_per_step / base.s_per_step for r in results if ok},
        "cpu_time_ratios_to_bf16": {
            r.variant: r.cpu_s_per_step / base.cpu_s_per_step for r in results if ok and not cuda
        },
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup, variants = make_setup(args)
    cuda = setup.device.type == "cuda"
    repeats = args.repeats or (2 if cuda else 6)
    torch.set_grad_enabled(False)
    load = [os.getloadavg()[0]]  # other work on a shared CPU skews every figure
    print(setup.attention.describe(), flush=True)

    def emit(measured: dict[str, Result]) -> None:
        if args.json:
            body = summary(setup, measured, repeats, [*load, os.getloadavg()[0]])
            Path(args.json).write_text(json.dumps(body, indent=1))

    measured = run_groups(setup, variants, args, emit)
    ordered = {v: measured[v] for v in variants}
    print(json.dumps(summary(setup, ordered, repeats, [*load, os.getloadavg()[0]])))


if __name__ == "__main__":
    main()
