"""The figures engine/budget.py estimates with, read from the device and the warm models.

Throughput starts from what bench/run_budget.py measured (BENCHMARKS.md, "Run budget"):
the bf16 eager FLUX.1 transformer on an H200, scaled by how the chosen runtime (fp8 compute,
compiled blocks) compared with it in bench/flux_speed.py. Other GPUs start from the H200
figure scaled by their streaming-multiprocessor count; every render then corrects it.
"""

from __future__ import annotations

import os

import torch

from engine.budget import GB, DeviceProfile, FluxShape
from engine.models.precision import FP8_COMPUTE, FP8_STORAGE

# bf16 eager FLUX.1-dev on an H200 (132 SMs): 7.1e14-7.5e14 FLOP/s from 1024² to 2048²
# (bench/run_budget.py; 512² reaches 5.0e14, small steps are overhead-bound).
HOPPER_FLOPS_PER_S = 7.2e14
HOPPER_SMS = 132
OLDER_GPU_FACTOR = 0.45  # per SM, Ampere and Ada reach about this share of Hopper
CPU_FLOPS_PER_S = 5.0e10  # a guess for the first render; the next ones use the measurement
MEMORY_SHARE = 0.95  # of a GPU's memory one render may take
CPU_MEMORY_SHARE = 0.8  # of the machine's memory

# Time of each runtime's Linears and attention relative to bf16 eager. fp8 compute with
# compiled blocks was fitted from 1024² and 2048² steps on the H200 (bench/run_budget.py:
# 0.60× bf16 at 1024², 0.69× at 2048²): fp8 speeds up the Linears, attention stays bf16.
# The others come from the 1024² figures of bench/flux_speed.py with attention at bf16 speed.
RUNTIME_FACTORS = {
    ("full", False): (1.0, 1.0),
    ("full", True): (0.74, 1.0),
    (FP8_STORAGE, False): (1.27, 1.0),
    (FP8_STORAGE, True): (1.01, 1.0),
    (FP8_COMPUTE, False): (1.43, 1.0),
    (FP8_COMPUTE, True): (0.55, 0.96),
}


def device_profile(device: torch.device, attention: str = "") -> DeviceProfile:
    """The device's starting figures (before any render corrected them)."""
    if device.type != "cuda":
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB  # Linux
        return DeviceProfile("CPU", total * CPU_MEMORY_SHARE, CPU_FLOPS_PER_S)
    props = torch.cuda.get_device_properties(device)
    per_sm = 1.0 if props.major >= 9 else OLDER_GPU_FACTOR
    flops = HOPPER_FLOPS_PER_S * props.multi_processor_count / HOPPER_SMS * per_sm
    return DeviceProfile(
        props.name,
        props.total_memory / GB * MEMORY_SHARE,
        flops,
        quadratic_attention=attention == "math",
    )


def runtime_factors(precision: str, compiled: bool) -> tuple[float, float]:
    """(Linears, attention): how much longer (>1) or shorter each takes than bf16 eager."""
    return RUNTIME_FACTORS.get((precision, compiled), (1.0, 1.0))


def flux_shape(transformer: torch.nn.Module, vae: torch.nn.Module, text_tokens: int) -> FluxShape:
    """The estimate's view of a loaded Flux transformer and VAE."""
    config = transformer.config
    heads = config.num_attention_heads
    return FluxShape(
        params=float(sum(p.numel() for p in transformer.parameters())),
        hidden=heads * config.attention_head_dim,
        heads=heads,
        blocks=config.num_layers + config.num_single_layers,
        text_tokens=text_tokens,
        vae_channels=vae.config.block_out_channels[0],
        vae_dtype_bytes=vae.dtype.itemsize,
        vae_tile_pixels=_tile_pixels(vae),
    )


def _tile_pixels(vae: torch.nn.Module) -> int:
    """Pixels of one tile of diffusers' tiled decode (its tile_sample_min_size squared)."""
    side = getattr(vae, "tile_sample_min_size", None) or vae.config.sample_size
    side = side[0] if isinstance(side, (list, tuple)) else side
    return int(side) ** 2


def resident_gb(modules: list[torch.nn.Module], device: torch.device) -> float:
    """Bytes of the parameters and buffers of `modules` that live on `device`, in GB."""
    total = 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.device.type == device.type:
                total += tensor.numel() * tensor.element_size()
    return total / GB
