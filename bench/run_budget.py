"""Calibrates and checks the run budget's estimate (engine/budget.py) on this device.

Builds the real FLUX.1-dev transformer and VAE (random weights, bf16, eager) and measures,
per size and batch, a transformer step's time and the memory it needs beyond the weights,
and the VAE decode's time and memory (whole and tiled). For each it prints the estimate
next to the measurement, and the figures the estimate should use on this device
(throughput, activation factors). Then it checks the out-of-memory recovery for real: a
tiny-model Engine on the GPU with its memory capped renders a recipe that cannot fit, must
answer with OutOfMemory, hand the memory back, and render the next recipe.

Run (CUDA only): .venv/bin/python bench/run_budget.py [--quick]
Plain lines, then one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.random_models import build, config  # noqa: E402
from engine.budget import GB, FluxShape, Workload, estimate, flux_flops  # noqa: E402
from engine.device_profile import device_profile, flux_shape  # noqa: E402
from engine.flux.denoiser import FluxDenoiser  # noqa: E402
from engine.flux.latents import image_ids  # noqa: E402
from engine.flux.prompt import PromptEmbeddings  # noqa: E402
from engine.models.attention import choose_attention  # noqa: E402
from engine.models.precision import FP8_COMPUTE, apply_weight_storage  # noqa: E402
from engine.recipe import Recipe  # noqa: E402
from engine.recipe_json import recipe_from_dict  # noqa: E402

TEXT_TOKENS = 512
FLUX_CASES = [(512, 1), (1024, 1), (1024, 2), (1536, 1), (2048, 1), (2048, 2)]
VAE_CASES = [(1024, 1, False), (1024, 2, False), (2048, 1, False), (4096, 1, False)]
VAE_CASES += [(4096, 1, True), (4096, 2, True)]


def synced(device: torch.device, fn) -> float:
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize(device)
    return time.perf_counter() - start


def flux_step_case(model, shape: FluxShape, size: int, batch: int, attention) -> dict:
    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(1)
    emb = PromptEmbeddings(
        tokens=torch.randn(1, TEXT_TOKENS, 4096, generator=gen).to(dev, torch.bfloat16),
        pooled=torch.randn(1, 768, generator=gen).to(dev, torch.bfloat16),
    )
    denoiser = FluxDenoiser(model, emb, image_ids(size, size, dev), 3.5, torch.bfloat16,
                            attention=attention)  # fmt: skip
    x = torch.randn(batch, (size // 16) ** 2, 64, generator=gen).to(dev)
    sigma = torch.tensor(0.5, device=dev)
    denoiser(x, sigma)  # warm-up (kernel choice, caches)
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    seconds = min(synced(dev, lambda: denoiser(x, sigma)) for _ in range(2))
    extra_gb = (torch.cuda.max_memory_allocated(dev) - base) / GB
    tokens = (size // 16) ** 2 + TEXT_TOKENS
    flops = batch * flux_flops(tokens, shape)
    return {
        "size": size,
        "batch": batch,
        "s_per_step": round(seconds, 4),
        "extra_gb": round(extra_gb, 3),
        "flops": flops,
        "flops_per_s": flops / seconds,
        "act_factor": extra_gb * GB / (batch * tokens * shape.hidden * 2),
    }


def vae_case(vae, size: int, batch: int, tiled: bool) -> dict:
    dev = torch.device("cuda")
    if tiled:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
    z = torch.randn(batch, 16, size // 8, size // 8, device=dev, dtype=torch.bfloat16)
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    try:
        with torch.inference_mode():
            seconds = synced(dev, lambda: vae.decode(z))
    except torch.OutOfMemoryError as exc:
        return {"size": size, "batch": batch, "tiled": tiled, "error": str(exc)[:120]}
    extra_gb = (torch.cuda.max_memory_allocated(dev) - base) / GB
    pixels = batch * size * size
    return {
        "size": size,
        "batch": batch,
        "tiled": tiled,
        "seconds": round(seconds, 4),
        "extra_gb": round(extra_gb, 3),
        "pixels_per_s": pixels / seconds,
        "vae_act_factor": extra_gb * GB / (pixels * 128 * 2),
    }


def predicted(shape: FluxShape, profile, size: int, batch: int, tiled=False, decode=False):
    recipe = recipe_from_dict(
        {
            "prompt": {"width": size, "height": size, "batch_size": batch},
            "settings": {"steps": 1},
            "latent": {"enabled": False},
        },  # fmt: skip
        Recipe(),
    )
    work = Workload(base=not decode, latent=False, decode=decode, tiled_vae=tiled)
    (part,) = estimate(recipe, shape, profile, 0.0, work).parts
    return part


def fp8c_cases(shape: FluxShape, attention, bf16: list[dict]) -> list[dict]:
    """The same steps with fp8 compute and compiled blocks: the runtime factor per size."""
    dev = torch.device("cuda")
    model = build(lambda: FluxTransformer2DModel(**config("flux1_transformer.json")), dev)
    apply_weight_storage(model, torch.float8_e4m3fn, torch.bfloat16, FP8_COMPUTE)
    model.compile_repeated_blocks(mode="default")
    out = []
    for case in bf16:
        if case["size"] < 1024:
            continue
        got = flux_step_case(model, shape, case["size"], case["batch"], attention)
        got["factor_vs_bf16"] = got["s_per_step"] / case["s_per_step"]
        out.append(got)
        print(f"fp8c+compile {case['size']}² ×{case['batch']}: {got['s_per_step']:.3f} s/step "
              f"({got['factor_vs_bf16']:.2f}× bf16), +{got['extra_gb']:.2f} GB, "
              f"act_factor {got['act_factor']:.1f}")  # fmt: skip
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return out


def oom_recovery() -> dict:
    """A capped GPU, a recipe that cannot fit: OutOfMemory, memory back, the next renders."""
    from engine.engine import Engine, EngineConfig
    from engine.models.manager import ModelConfig
    from engine.run_guard import OutOfMemory

    folder = Path(tempfile.mkdtemp())
    config = EngineConfig(
        models=ModelConfig(tiny=True, device="cuda", compile="off"),
        outputs_dir=folder / "out",
        data_dir=folder / "data",
    )
    engine = Engine(config)
    small = recipe_from_dict({"prompt": {"width": 256, "height": 256}}, Recipe())
    engine.run(small, save=False)
    settled = torch.cuda.memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((settled + 256 * 1024**2) / total)
    big = recipe_from_dict(
        {"prompt": {"width": 4096, "height": 4096, "batch_size": 4}, "settings": {"steps": 2}},
        Recipe(),
    )
    out = {"settled_gb": settled / GB}
    try:
        engine.run(big, save=False)
        out["error"] = "no out-of-memory at all"
    except OutOfMemory as exc:
        out["message"] = str(exc)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    out["after_gb"] = torch.cuda.memory_allocated() / GB
    again = engine.run(dataclasses.replace(small, settings=dataclasses.replace(
        small.settings, seed=7)), save=False)  # fmt: skip
    out["next_render_ok"] = len(again.images) == 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes")
    parser.add_argument("--fp8c", action="store_true", help="also fp8 compute + compile")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/run_budget.py measures a GPU; none is present.")
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    attention = choose_attention(dev)
    results: dict = {"device": name, "attention": attention.name}
    model = build(lambda: FluxTransformer2DModel(**config("flux1_transformer.json")), dev)
    vae = build(lambda: AutoencoderKL(**config("flux1_vae.json")), dev)
    shape = flux_shape(model, vae, TEXT_TOKENS)
    profile = device_profile(dev, attention.name)
    print(f"{name}: starting profile {profile}")
    cases = FLUX_CASES[:3] if args.quick else FLUX_CASES
    results["flux"] = []
    for size, batch in cases:
        got = flux_step_case(model, shape, size, batch, attention)
        guess = predicted(shape, profile, size, batch)
        got["estimate_s"], got["estimate_gb"] = guess.seconds, guess.gb
        results["flux"].append(got)
        tflops, factor = got["flops_per_s"] / 1e12, got["act_factor"]
        print(f"flux {size}² ×{batch}: {got['s_per_step']:.3f} s/step (estimate "
              f"{guess.seconds:.3f}), +{got['extra_gb']:.2f} GB (estimate {guess.gb:.2f}), "
              f"{tflops:.0f} TFLOP/s, act_factor {factor:.1f}")  # fmt: skip
    del model
    gc.collect()
    torch.cuda.empty_cache()
    if args.fp8c:
        results["fp8c_compile"] = fp8c_cases(shape, attention, results["flux"])
    results["vae"] = []
    for size, batch, tiled in VAE_CASES[:3] if args.quick else VAE_CASES:
        got = vae_case(vae, size, batch, tiled)
        guess = predicted(shape, profile, size, batch, tiled, decode=True)
        got["estimate_s"], got["estimate_gb"] = guess.seconds, guess.gb
        results["vae"].append(got)
        print(f"vae {size}² ×{batch}{' tiled' if tiled else ''}: {got}")
    del vae
    gc.collect()
    torch.cuda.empty_cache()
    results["oom"] = oom_recovery()
    print(f"out-of-memory recovery: {results['oom']}")
    print(json.dumps(results, default=float))


if __name__ == "__main__":
    main()
