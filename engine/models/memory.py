"""Where the warm components live between renders: all on the GPU, or a budget plan.

"resident" keeps every component on the GPU (fastest re-encodes). "budget" is for 16–24 GB
cards: the text encoders (T5-XXL alone is 9.5 GB in bf16) wait in CPU memory and visit the
GPU only to encode a new prompt, whose embeddings the text stage caches anyway; the VAE
decodes in tiles. "auto" picks budget below BUDGET_BELOW_GB of GPU memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from engine.speed_options import MEMORY_MODES, check_choice

# FLUX.1 in fp8 (11.9 GB) + T5-XXL in bf16 (9.5 GB) + activations at 1024² need about 24 GB.
BUDGET_BELOW_GB = 30.0
GB = 1024**3


@dataclass(frozen=True)
class MemoryPlan:
    """The resolved memory mode and what it does."""

    mode: str  # "resident" | "budget"
    offload_text: bool  # text encoders in CPU memory between encodes
    tiled_vae: bool

    def describe(self) -> str:
        if self.mode == "resident":
            return "memory: resident (every model stays on its device)"
        return "memory: budget (text encoders on the GPU only while encoding, tiled VAE)"


def plan_memory(requested: str, device: torch.device, total_gb: float | None = None) -> MemoryPlan:
    """The plan for `requested` on `device`; total_gb overrides the device's own memory."""
    check_choice("memory mode", requested, MEMORY_MODES)
    mode = requested
    if mode == "auto":
        if device.type != "cuda":
            mode = "resident"  # CPU memory is all one pool: moving saves nothing
        else:
            total = total_gb if total_gb is not None else _device_gb(device)
            mode = "budget" if total < BUDGET_BELOW_GB else "resident"
    budget = mode == "budget" and device.type == "cuda"
    return MemoryPlan(mode, offload_text=budget, tiled_vae=budget)


def reset_peak(device: torch.device) -> None:
    """Start counting the GPU's peak allocated memory afresh (no-op elsewhere)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    """Peak allocated GPU memory since the last reset_peak, or None off the GPU."""
    return torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None


def _device_gb(device: torch.device) -> float:
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_properties(index).total_memory / GB


def home_device(plan: MemoryPlan, device: torch.device, component: str) -> torch.device:
    """Where a component waits between uses under `plan`."""
    if plan.offload_text and component in ("clip", "t5"):
        return torch.device("cpu")
    return device


@contextmanager
def visiting(modules: list[torch.nn.Module], device: torch.device) -> Iterator[None]:
    """Move `modules` to `device` for the block and back where they were after it."""
    homes = [next(m.parameters()).device for m in modules]
    try:
        for module, home in zip(modules, homes, strict=True):
            if home != device:
                module.to(device)
        yield
    finally:
        for module, home in zip(modules, homes, strict=True):
            if home != device:
                module.to(home)
        if device.type == "cuda" and any(home != device for home in homes):
            torch.cuda.empty_cache()  # hand the encoders' memory back to the next model
