"""Peak GPU memory of the warm studio at 1024²: every component on the GPU, or the budget plan.

Builds FLUX.1's real transformer (fp8: compute where the GPU has fp8 tensor cores, else
storage), VAE, CLIP-L and T5-XXL with random weights, then per memory plan encodes a prompt,
runs two sampling steps (the peak is the same as for 28) and decodes, and reports the peak
allocated memory, what stays allocated between renders, and the encode and decode times.
Plans: resident and budget (engine/models/memory.py: text encoders on the GPU only while
encoding, tiled VAE decode), each with T5 in bf16 and stored in fp8.
The goal is a warm studio under 20 GB, so it fits a 24 GB card.

Needs CUDA for figures; on a CPU it runs a reduced configuration to check the code path.
Run: .venv/bin/python bench/studio_memory.py [--size 1024] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.random_models import build, config, weights_gb  # noqa: E402
from engine.flux.denoiser import FluxDenoiser  # noqa: E402
from engine.flux.latents import image_ids, unpack  # noqa: E402
from engine.flux.prompt import PromptEmbeddings  # noqa: E402
from engine.flux.samplers import sample_euler  # noqa: E402
from engine.flux.schedules import flux_mu, flux_sigmas  # noqa: E402
from engine.models.memory import (  # noqa: E402
    GB,
    MemoryPlan,
    home_device,
    peak_gb,
    plan_memory,
    reset_peak,
    visiting,
)
from engine.models.precision import (  # noqa: E402
    DeviceFacts,
    apply_t5_fp8_storage,
    apply_weight_storage,
    pick_device,
    precision_path,
)

PLANS = ("resident", "budget", "resident+fp8-t5", "budget+fp8-t5")


@dataclass
class Figures:
    plan: str
    peak_gb: float
    idle_gb: float  # allocated between renders
    encode_s: float
    decode_s: float
    weights_gb: dict


def build_all(device: torch.device, reduced: bool) -> dict[str, torch.nn.Module]:
    flux = config("flux1_transformer.json")
    t5 = config("t5xxl.json")
    if reduced:
        flux |= {"num_layers": 1, "num_single_layers": 1}
        t5 |= {"num_layers": 1}
    models = {
        "transformer": build(lambda: FluxTransformer2DModel(**flux), device),
        "vae": build(lambda: AutoencoderKL(**config("flux1_vae.json")), device),
        "clip": build(lambda: CLIPTextModel(CLIPTextConfig(**config("clip_l.json"))), device),
        "t5": build(lambda: T5EncoderModel(T5Config(**t5)), device),
    }
    path = precision_path("fp8_e4m3fn", DeviceFacts.of(device))
    apply_weight_storage(models["transformer"], torch.float8_e4m3fn, torch.bfloat16, path)
    return models


def encode(models: dict, device: torch.device, plan: MemoryPlan) -> PromptEmbeddings:
    gen = torch.Generator().manual_seed(0)
    clip_ids = torch.randint(0, 49408, (1, 77), generator=gen).to(device)
    t5_ids = torch.randint(0, 32128, (1, 512), generator=gen).to(device)
    text = [models["clip"], models["t5"]]
    with visiting(text, device), torch.inference_mode():
        pooled = models["clip"](clip_ids).pooler_output
        tokens = models["t5"](t5_ids)[0]
    return PromptEmbeddings(tokens=tokens.to(torch.bfloat16), pooled=pooled.to(torch.bfloat16))


def render(models: dict, device: torch.device, size: int, emb: PromptEmbeddings) -> torch.Tensor:
    denoiser = FluxDenoiser(
        models["transformer"], emb, image_ids(size, size, device), 3.5, torch.bfloat16
    )
    x = torch.randn(1, (size // 16) ** 2, 64, generator=torch.Generator().manual_seed(1))
    sigmas = flux_sigmas("simple", 2, flux_mu(size, size)).to(device)
    tokens = sample_euler(denoiser, x.to(device), sigmas)
    return unpack(tokens, size, size).to(torch.bfloat16)


def timed(device: torch.device, fn) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, out


def measure(models: dict, device: torch.device, size: int, name: str) -> Figures:
    plan = plan_memory(name.split("+")[0], device)
    for component, model in models.items():
        model.to(home_device(plan, device, component))
    if plan.tiled_vae:
        models["vae"].enable_tiling()
    else:
        models["vae"].disable_tiling()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
    reset_peak(device)
    idle = torch.cuda.memory_allocated(device) / GB if cuda else 0.0
    encode_s, emb = timed(device, lambda: encode(models, device, plan))
    latents = render(models, device, size, emb)
    with torch.inference_mode():
        decode_s, _ = timed(device, lambda: models["vae"].decode(latents))
    peak = peak_gb(device) or 0.0
    sizes = {c: round(weights_gb(m), 3) for c, m in models.items()}
    return Figures(name, peak, idle, encode_s, decode_s, sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=None, help="default 1024 on CUDA, 64 on CPU")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    size = args.size or (1024 if cuda else 64)
    torch.set_grad_enabled(False)
    models = build_all(device, reduced=not cuda)
    results = []
    for name in PLANS:
        if name == "resident+fp8-t5":  # from here on T5 stays fp8
            apply_t5_fp8_storage(models["t5"], torch.bfloat16)
        measure(models, device, size, name)  # warm-up: kernels, cuDNN plans, allocator
        figures = measure(models, device, size, name)
        results.append(figures)
        print(
            f"{name}: peak {figures.peak_gb:.2f} GB, between renders {figures.idle_gb:.2f} GB, "
            f"encode {figures.encode_s:.2f} s, decode {figures.decode_s:.2f} s, weights "
            f"{figures.weights_gb} [{torch.cuda.get_device_name(device) if cuda else 'CPU'}, "
            f"{size}²{'' if cuda else ', reduced: no figures'}]",
            flush=True,
        )
    body = {
        "benchmark": "studio_memory",
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "size": size,
        "results": [asdict(r) for r in results],
    }
    if args.json:
        Path(args.json).write_text(json.dumps(body, indent=1))
    print(json.dumps(body))


if __name__ == "__main__":
    main()
