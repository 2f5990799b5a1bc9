"""How far fp8 storage and fp8 compute move the Flux transformer's output from bf16.

One real-width FLUX.1 transformer (1 double + 1 single block by default) with random weights,
one forward at 1024² in bf16, in fp8 storage and in fp8 compute; prints each one's relative
error against bf16, and for one Fp8Linear the gap between the device's scaled matmul and the
dequantised reference (fp8 values times scales, multiplied in fp32).
Run: .venv/bin/python bench/fp8_accuracy.py [--device auto] [--blocks 1,1] [--size 1024]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from diffusers import FluxTransformer2DModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.random_models import build, config  # noqa: E402
from engine.flux.latents import image_ids  # noqa: E402
from engine.models.fp8_compute import Fp8Linear, quantise_rows  # noqa: E402
from engine.models.precision import (  # noqa: E402
    FP8_COMPUTE,
    FP8_STORAGE,
    apply_weight_storage,
    pick_device,  # noqa: E402
)


def forward(model, device: torch.device, size: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    tokens = (size // 16) ** 2
    inputs = {
        "hidden_states": torch.randn(1, tokens, 64, generator=gen),
        "encoder_hidden_states": torch.randn(1, 512, 4096, generator=gen),
        "pooled_projections": torch.randn(1, 768, generator=gen),
    }
    inputs = {k: v.to(device, torch.bfloat16) for k, v in inputs.items()}
    with torch.inference_mode():
        return model(
            **inputs,
            timestep=torch.full((1,), 0.7, device=device, dtype=torch.bfloat16),
            guidance=torch.full((1,), 3.5, device=device),
            txt_ids=torch.zeros(512, 3, device=device),
            img_ids=image_ids(size, size, device),
            return_dict=False,
        )[0].float()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def layer_gap(layer: Fp8Linear, device: torch.device) -> float:
    """The device's _scaled_mm against the dequantised reference, relative."""
    x = torch.randn(4096, layer.in_features, generator=torch.Generator().manual_seed(4))
    x = x.to(device, torch.bfloat16)
    values, scale = quantise_rows(x)
    reference = (values.float() * scale) @ layer.dequantised_weight().float().t()
    if layer.bias is not None:
        reference = reference + layer.bias.float()
    with torch.inference_mode():
        return relative(layer(x).float(), reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--blocks", default="1,1")
    parser.add_argument("--size", type=int, default=None, help="default 1024 on CUDA, 128 on CPU")
    args = parser.parse_args()
    device = pick_device(args.device)
    size = args.size or (1024 if device.type == "cuda" else 128)
    double, single = (int(v) for v in args.blocks.split(","))
    body = config("flux1_transformer.json") | {"num_layers": double, "num_single_layers": single}
    base = build(lambda: FluxTransformer2DModel(**body), device)
    reference = forward(base, device, size)
    errors = {}
    for path in (FP8_STORAGE, FP8_COMPUTE):
        model = copy.deepcopy(base)
        apply_weight_storage(model, torch.float8_e4m3fn, torch.bfloat16, path)
        errors[path] = relative(forward(model, device, size), reference)
        if path == FP8_COMPUTE:
            layer = model.transformer_blocks[0].attn.to_q
            errors["scaled_mm_vs_dequantised"] = layer_gap(layer, device)
        del model
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    for name, value in errors.items():
        print(f"{name}: relative error {value:.4f} [{where}, {double}+{single} blocks, {size}²]")
    print(json.dumps({"benchmark": "fp8_accuracy", "device": where, "errors": errors}))


if __name__ == "__main__":
    main()
