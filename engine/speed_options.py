"""How the engine runs on the device: fp8 compute, compiled blocks, memory plan, warm-up.

Torch-free, so app.py and the CLI can define their flags without importing torch.
"""

from __future__ import annotations

import argparse

FP8_COMPUTE_MODES = ("auto", "on", "off")
COMPILE_MODES = ("auto", "on", "off")
MEMORY_MODES = ("auto", "resident", "budget")


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
    """--fp8-compute, --compile, --memory and (for the studio) --warmup/--no-warmup."""
    group = parser.add_argument_group("speed and memory")
    group.add_argument("--fp8-compute", choices=FP8_COMPUTE_MODES, default="auto",
                       help=HELP["fp8_compute"])  # fmt: skip
    group.add_argument("--compile", choices=COMPILE_MODES, default="auto", help=HELP["compile"])
    group.add_argument("--memory", choices=MEMORY_MODES, default="auto", help=HELP["memory"])
    if warmup:
        group.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None,
                           help=HELP["warmup"])  # fmt: skip


def speed_settings(args: argparse.Namespace) -> dict[str, str]:
    """The ModelConfig fields the speed flags set."""
    return {"fp8_compute": args.fp8_compute, "compile": args.compile, "memory": args.memory}
