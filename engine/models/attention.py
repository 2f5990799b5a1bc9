"""The fastest exact attention on the device: PyTorch's SDPA kernels, ranked once at start.

diffusers' Flux attention calls `F.scaled_dot_product_attention`; which kernel runs is
PyTorch's choice among cuDNN, FlashAttention-2, memory-efficient and math. We time each one
at the transformer's own shape and hand SDPA the ranking as a priority list, so every call
takes the fastest kernel that supports its inputs (a Redux balance mask rules out
FlashAttention, for one, and falls through to the next). FlashAttention-3 is not among them:
it has no installable wheel; on Hopper cuDNN's attention is its closest stand-in.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS: dict[str, SDPBackend] = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}
# FLUX.1 at 1024²: 24 heads of 128, 4096 image + 512 text tokens.
PROBE_SHAPE = (1, 24, 4608, 128)
PROBE_RUNS = 5


@dataclass(frozen=True)
class AttentionChoice:
    """SDPA kernels by priority (empty: PyTorch's own order) and what the probe measured."""

    order: tuple[str, ...] = ()
    timings_ms: tuple[tuple[str, float], ...] = ()

    @property
    def name(self) -> str:
        return self.order[0] if self.order else "sdpa default"

    def context(self) -> contextlib.AbstractContextManager:
        """Run attention under this ranking (a no-op without one)."""
        if not self.order:
            return contextlib.nullcontext()
        backends = [BACKENDS[n] for n in self.order]
        try:
            return sdpa_kernel(backends, set_priority=True)
        except TypeError:  # PyTorch before 2.6: the set without an order
            return sdpa_kernel(backends)

    def describe(self) -> str:
        """e.g. "attention: cudnn (cudnn 1.9 ms, flash 2.6 ms, efficient 4.1 ms)"."""
        times = ", ".join(f"{n} {ms:.2f} ms" for n, ms in self.timings_ms)
        return f"attention: {self.name}" + (f" ({times})" if times else "")


Timer = Callable[[Callable[[], object]], float]


def cuda_timer(device: torch.device) -> Timer:
    """Median milliseconds of PROBE_RUNS calls, after one warm-up call."""

    def run(fn: Callable[[], object]) -> float:
        fn()
        times = []
        for _ in range(PROBE_RUNS):
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize(device)
            times.append((time.perf_counter() - start) * 1e3)
        return sorted(times)[len(times) // 2]

    return run


def rank_backends(
    candidates: dict[str, Callable[[], object]], timer: Timer
) -> tuple[tuple[str, ...], tuple[tuple[str, float], ...]]:
    """Backends that ran, fastest first, with their times; "math" always closes the list."""
    timings = []
    for name, fn in candidates.items():
        try:
            timings.append((name, timer(fn)))
        except RuntimeError:  # "No available kernel": this backend cannot run here
            continue
    timings.sort(key=lambda item: item[1])
    order = tuple(name for name, _ in timings)
    if "math" not in order:
        order += ("math",)
    return order, tuple(timings)


def choose_attention(
    device: torch.device, dtype: torch.dtype = torch.bfloat16, shape=PROBE_SHAPE
) -> AttentionChoice:
    """Rank the SDPA kernels on a CUDA device; elsewhere keep PyTorch's own choice."""
    if device.type != "cuda":
        return AttentionChoice()
    q, k, v = (torch.randn(shape, device=device, dtype=dtype) for _ in range(3))

    def call(backend: SDPBackend) -> Callable[[], object]:
        def run() -> object:
            with sdpa_kernel([backend]), torch.inference_mode():
                return F.scaled_dot_product_attention(q, k, v)

        return run

    probes = {name: call(b) for name, b in BACKENDS.items() if name != "math"}
    order, timings = rank_backends(probes, cuda_timer(device))
    return AttentionChoice(order, timings)
