"""How the Flux models run on this device: precision path, attention kernel, compiled blocks
and memory plan, decided once per ModelManager and named in every run report."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.models.attention import AttentionChoice
from engine.models.memory import MemoryPlan
from engine.models.precision import FP8_COMPUTE, FP8_STORAGE, FULL, DeviceFacts
from engine.speed_options import COMPILE_MODES, check_choice

PRECISION_WORDS = {
    FULL: "weights in the compute dtype",
    FP8_STORAGE: "fp8 storage (weights cast to bf16 in each layer)",
    FP8_COMPUTE: "fp8 compute (scaled fp8 matmuls)",
}
# Regional compilation's mode: on an H200 "default" gave 0.103 s/step with fp8 compute, while
# "max-autotune-no-cudagraphs" spent about a minute autotuning each of the five fp8 matmul
# shapes (BENCHMARKS.md), far too long for a studio's start.
COMPILE_MODE = "default"


def resolve_compile(requested: str, device: torch.device) -> bool:
    """Whether to compile the repeated blocks: "auto" compiles on CUDA only."""
    check_choice("compile", requested, COMPILE_MODES)
    return requested == "on" or (requested == "auto" and device.type == "cuda")


@dataclass(frozen=True)
class Runtime:
    """The device-level choices every render of one ModelManager shares."""

    facts: DeviceFacts
    compile: bool
    memory: MemoryPlan
    attention: AttentionChoice

    def describe(self, precision: str) -> str:
        """e.g. "Runtime: fp8 compute (scaled fp8 matmuls) · attention: cudnn · compiled
        blocks · memory: budget (...)" for the run report."""
        parts = [
            f"Runtime on {self.facts.name or self.facts.kind}: {PRECISION_WORDS[precision]}",
            self.attention.describe(),
            "compiled blocks" if self.compile else "eager blocks",
            self.memory.describe(),
        ]
        return " · ".join(parts)
