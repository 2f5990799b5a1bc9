"""The CLI's side of `render --ray`: the `--ray [ADDRESS]` and `--actors N` flags, and the
hand-over to the driver (the only place that imports it, and with it Ray)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

LOCAL = "local"  # `--ray` without an address: start a Ray cluster on this machine
RECIPE_SUFFIXES = (".json", ".png")
INSTALL_HINT = (
    "Ray is not installed in this environment. Install it with "
    "`.venv/bin/python -m pip install -r requirements-ray.txt -c requirements.txt`."
)


def add_ray_flags(parser: argparse.ArgumentParser) -> None:
    """`--ray [ADDRESS]` and `--actors N` on the render command."""
    group = parser.add_argument_group("Ray cluster (see docs/ray.md)")
    group.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        default=None,
        metavar="ADDRESS",
        help="render on Ray actors that each keep a warm engine: without ADDRESS on a local "
        "cluster, else on the cluster at ADDRESS (host:port, ray://host:port or auto)",
    )
    group.add_argument(
        "--actors",
        type=_count,
        default=0,
        metavar="N",
        help="how many Ray actors (default: one per GPU in the cluster; without GPUs, 2)",
    )


def with_ray_address(argv: list[str]) -> list[str]:
    """`--ray a.json b.json` means a local cluster, not a cluster at "a.json": an address-less
    `--ray` (before a recipe, another flag or nothing) becomes `--ray=local` before parsing."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg != "--ray":
            continue
        following = out[i + 1] if i + 1 < len(out) else "-"
        if following.startswith("-") or Path(following).suffix.lower() in RECIPE_SUFFIXES:
            out[i] = f"--ray={LOCAL}"
    return out


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} actors: give 1 or more")
    return value


def render_on_ray(args: argparse.Namespace) -> int:
    """Run `render --ray` (engine.batch.driver); without Ray installed, say how to get it."""
    try:
        from engine.batch.driver import render_batch
    except ModuleNotFoundError as exc:
        if exc.name != "ray":
            raise
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    return render_batch(args)
