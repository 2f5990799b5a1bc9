"""Real model architectures with random weights, built straight on the target device.

Timings and memory depend on shapes and dtypes, not on the values, so the benchmarks build
FLUX.1's real configs (engine/models/configs) and fill them with cheap finite values.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.models.memory import GB

CONFIGS = Path(__file__).resolve().parents[1] / "engine" / "models" / "configs"


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


def config(name: str) -> dict:
    """A config JSON from engine/models/configs, without its class name."""
    body = json.loads((CONFIGS / name).read_text())
    body.pop("_class_name", None)
    return body


def build(make, device: torch.device, dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    """make() under `dtype` on the meta device, then allocated once on `device`, random."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # from the start: no fp32 copy, no cast
    try:
        with torch.device("meta"):
            model = make()
    finally:
        torch.set_default_dtype(previous)
    model.to_empty(device=device)
    for buffer in model.buffers():  # to_empty leaves buffers (e.g. position ids) undefined
        buffer.zero_()
    fill_random(model, seed=0)
    return model.eval()


def weights_gb(model: torch.nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / GB
