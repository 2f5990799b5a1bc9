"""How the engine runs on the device: fp8 compute, compiled blocks, memory plan, warm-up.

Torch-free, so app.py and the CLI can define their flags without importing torch.
"""

from __future__ import annotations

import argparse

from engine.budget import RunBudget

FP8_COMPUTE_MODES = ("auto", "on", "off")
COMPILE_MODES = ("auto", "on", "off")
MEMORY_MODES = ("auto", "resident", "budget")
STUDIO_MAX_RENDER_SECONDS = 1200.0  # a shared studio: one render may not hold the queue longer


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    """ValueError naming the setting and its choices when `value` is not one of them."""
    if value not in choices:
        raise ValueError(f"{what} must be one of {choices}, not {value!r}")


HELP = {
    "fp8_compute": "fp8 weights multiply in fp8 (auto: on GPUs with fp8 tensor cores, Ada and "
    "Hopper; off: fp8 only stores the weights)",
    "compile": "compile the transformer's repeated blocks with torch.compile (auto: on CUDA)",
    "memory": "resident: every model stays on the GPU; budget: text encoders visit the GPU "
    "only to encode, tiled VAE (auto: budget below 30 GB of GPU memory)",
    "warmup": "load and compile in the background at start, so the first Generate is fast "
    "(default: on CUDA)",
}


def add_speed_flags(parser: argparse.ArgumentParser, warmup: bool = True) -> None:
    """--fp8-compute, --compile, --memory, the run budget and (for the studio)
    --warmup/--no-warmup; the studio's renders have a default time limit, the CLI's none."""
    group = parser.add_argument_group("speed and memory")
    group.add_argument("--fp8-compute", choices=FP8_COMPUTE_MODES, default="auto",
                       help=HELP["fp8_compute"])  # fmt: skip
    group.add_argument("--compile", choices=COMPILE_MODES, default="auto", help=HELP["compile"])
    group.add_argument("--memory", choices=MEMORY_MODES, default="auto", help=HELP["memory"])
    if warmup:
        group.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None,
                           help=HELP["warmup"])  # fmt: skip
    seconds = STUDIO_MAX_RENDER_SECONDS if warmup else 0.0
    group.add_argument("--max-render-seconds", type=float, default=seconds, metavar="S",
                       help=f"refuse a render estimated to take longer (0: no limit; "
                       f"default {seconds:g})")  # fmt: skip
    group.add_argument("--max-render-gb", type=float, default=0.0, metavar="GB",
                       help="refuse a render estimated to need more memory at its peak "
                       "(0: what the device has)")  # fmt: skip


def speed_settings(args: argparse.Namespace) -> dict[str, str]:
    """The ModelConfig fields the speed flags set."""
    return {"fp8_compute": args.fp8_compute, "compile": args.compile, "memory": args.memory}


def run_budget(args: argparse.Namespace) -> RunBudget:
    """The RunBudget the budget flags set (0 means no limit, or the device's memory)."""
    return RunBudget(args.max_render_seconds or None, args.max_render_gb or None)
