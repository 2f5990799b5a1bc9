"""`python -m engine identity-report`: seed 002's comparison of four configurations on a fixed
prompt list (base Flux; + LoRA; + LoRA + PuLID; + LoRA + PuLID + pose ControlNet on the
full-body prompts only), each render scored against the reference photos by the engine's own
identity stage, summarised as mean, median, standard deviation and no-face rate.

The standard deviation is the population one (numpy's default, ddof=0). Renders without a
face count towards the no-face rate and are left out of the other figures.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import Cancelled, StudioError
from engine.recipe import Recipe
from engine.recipe_json import recipe_from_dict

STD_KIND = "population"
TINY_SIZE, TINY_STEPS = (64, 64), 2
FULL_BODY_MARK = "full-body:"


@dataclass(frozen=True)
class Prompt:
    """One prompt of the list; the pose ControlNet acts only on the full-body ones."""

    text: str
    full_body: bool = False


# Seed 002's nine: six portraits and three full-body scenes (the ControlNet's).
DEFAULT_PROMPTS = (
    Prompt("close-up portrait photograph of ohwx man, soft window light, 85mm lens"),
    Prompt("portrait of ohwx man in a dark studio, rim light, black background"),
    Prompt("ohwx man smiling in a sunny cafe, shallow depth of field"),
    Prompt("head and shoulders photo of ohwx man in a business suit, office background"),
    Prompt("ohwx man reading a book in a library, warm lamp light, medium shot"),
    Prompt("ohwx man on a city street at night, neon reflections, portrait"),
    Prompt("full-body photo of ohwx man hiking a forest trail, backpack, daylight", True),
    Prompt("full-body photo of ohwx man on a snowy mountain ridge, winter jacket", True),
    Prompt("full-body photo of ohwx man standing in the desert at sunset", True),
)


@dataclass(frozen=True)
class Config:
    """Which pieces a configuration adds to base Flux."""

    name: str
    lora: bool = False
    pulid: bool = False
    pose: bool = False


CONFIGS = (
    Config("base Flux"),
    Config("+ LoRA", lora=True),
    Config("+ LoRA + PuLID", lora=True, pulid=True),
    Config("+ LoRA + PuLID + CN", lora=True, pulid=True, pose=True),
)


@dataclass(frozen=True)
class Setup:
    """What the command was given: stored reference and pose digests, the LoRA, the size."""

    references: tuple[str, ...]
    lora: tuple[str, float] | None
    pose: str
    size: tuple[int, int] | None
    steps: int | None


@dataclass(frozen=True)
class Stats:
    """Seed 002's figures over one configuration's scores (None: no face)."""

    mean: float | None
    median: float | None
    std: float | None
    no_face_rate: float
    n: int


@dataclass(frozen=True)
class Outcome:
    """One configuration's scores, or why it was skipped."""

    config: Config
    scores: tuple[float | None, ...] = ()
    skipped: str = ""


def summarize(scores: Sequence[float | None]) -> Stats:
    """Mean, median and population std of the faces found; no-face rate over all renders."""
    found = [s for s in scores if s is not None]
    n = len(scores)
    rate = (n - len(found)) / n if n else 0.0
    if not found:
        return Stats(None, None, None, rate, n)
    values = np.asarray(found, dtype=np.float64)
    return Stats(float(values.mean()), float(np.median(values)), float(values.std()), rate, n)


def figure(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def table(outcomes: Sequence[Outcome]) -> str:
    """Seed 002's table: one row per configuration that ran."""
    header = ("Configuration", "Mean", "Median", f"Std ({STD_KIND})", "No-face rate", "n")
    rows = [header]
    for outcome in outcomes:
        if outcome.skipped:
            continue
        s = summarize(outcome.scores)
        rate = f"{100 * s.no_face_rate:.1f} %"
        rows.append((outcome.config.name, figure(s.mean), figure(s.median), figure(s.std), rate,
                     str(s.n)))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    )  # fmt: skip


def read_prompts(path: Path) -> tuple[Prompt, ...]:
    """One prompt a line; `full-body:` in front marks a full-body one; `#` lines are notes."""
    prompts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        full = line.lower().startswith(FULL_BODY_MARK)
        text = line[len(FULL_BODY_MARK) :].strip() if full else line
        prompts.append(Prompt(text, full))
    return tuple(prompts)


def parse_lora(value: str) -> tuple[str, float]:
    """`name.safetensors[:strength]` (a name under <models>/loras) -> (name, strength)."""
    name, sep, tail = value.rpartition(":")
    if sep:
        try:
            return name, float(tail)
        except ValueError:
            pass
    return value, 1.0


def parse_size(value: str) -> tuple[int, int]:
    """`WxH` -> (width, height)."""
    try:
        width, height = (int(part) for part in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not WxH, e.g. 896x1216") from None
    return width, height


def add_report_flags(parser: argparse.ArgumentParser) -> None:
    """The identity-report's own flags (the engine flags are added beside them)."""
    parser.add_argument("--reference", type=Path, action="append", required=True,
                        help="a photo of the person (repeatable, up to 4)")  # fmt: skip
    parser.add_argument("--lora", type=parse_lora, help="NAME.safetensors[:strength] in loras/")
    parser.add_argument("--pose", type=Path, help="an OpenPose picture for the full-body prompts")
    parser.add_argument("--prompts", type=Path, help="one prompt a line ('full-body:' marks)")
    parser.add_argument("--steps", type=int, help="sampling steps (tiny: 2)")
    parser.add_argument("--size", type=parse_size, help="WxH (tiny: 64x64)")


def skip_reason(config: Config, setup: Setup, prompts: Sequence[Prompt]) -> str:
    """Why a configuration cannot run with what was given ("" when it can)."""
    if config.lora and setup.lora is None:
        return "no --lora given"
    if config.pose and not setup.pose:
        return "no --pose picture given"
    if config.pose and not any(p.full_body for p in prompts):
        return "no prompt is marked full-body"
    return ""


def recipe_for(base: Recipe, config: Config, setup: Setup, prompt: Prompt, seed: int) -> Recipe:
    """The render of one prompt in one configuration (checked like any recipe)."""
    loras = [] if not config.lora or setup.lora is None else [
        {"file": setup.lora[0], "strength_model": setup.lora[1], "strength_clip": setup.lora[1]}
    ]  # fmt: skip
    pose = config.pose and prompt.full_body
    document: dict[str, Any] = {
        "prompt": {"prompt": prompt.text, "loras": loras, "batch_size": 1},
        "settings": {"seed": seed},
        "identity": {
            "references": list(setup.references),
            "pulid": {"enabled": config.pulid, "weight": 0.4, "start": 0.15, "end": 0.9},
            "pose": {"enabled": pose, "image": setup.pose if pose else "", "strength": 0.85,
                     "start": 0.0, "end": 0.8},
        },
    }  # fmt: skip
    if setup.size:
        document["prompt"].update(width=setup.size[0], height=setup.size[1])
    if setup.steps:
        document["settings"]["steps"] = setup.steps
    return recipe_from_dict(document, base=base)


def run_config(engine: Any, config: Config, setup: Setup, prompts: Sequence[Prompt],
               outputs: Path | None) -> Outcome:  # fmt: skip
    """Render every prompt in one configuration; an engine error skips it with its message."""
    reason = skip_reason(config, setup, prompts)
    if reason:
        return Outcome(config, skipped=reason)
    scores: list[float | None] = []
    try:
        for seed, prompt in enumerate(prompts):
            recipe = recipe_for(engine.default_recipe(), config, setup, prompt, seed)
            result = engine.run(recipe, save=outputs is not None, outputs_dir=outputs)
            scores.extend(result.report.identity)
    except (StudioError, Cancelled) as exc:
        return Outcome(config, skipped=str(exc))
    return Outcome(config, tuple(scores))


def store(engine: Any, path: Path, what: str) -> str:
    """Store a picture given on the command line; its digest."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StudioError(f"{what} {path} cannot be read ({exc.strerror}).") from exc
    return engine.store_image(data, f"{what} {path.name}")


def setup_from_args(engine: Any, args: argparse.Namespace) -> Setup:
    references = tuple(store(engine, p, "The reference") for p in args.reference)
    pose = store(engine, args.pose, "The pose picture") if args.pose else ""
    tiny = bool(getattr(args, "tiny", False))
    size = args.size or (TINY_SIZE if tiny else None)
    steps = args.steps or (TINY_STEPS if tiny else None)
    return Setup(references, args.lora, pose, size, steps)


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    if outcome.skipped:
        return {"configuration": outcome.config.name, "skipped": outcome.skipped}
    s = summarize(outcome.scores)
    return {"configuration": outcome.config.name, "mean": s.mean, "median": s.median,
            "std": s.std, "no_face_rate": s.no_face_rate, "n": s.n,
            "scores": list(outcome.scores)}  # fmt: skip


def main(engine: Any, args: argparse.Namespace) -> int:
    """Run the four configurations, print skips as they happen, then the table and JSON."""
    try:
        prompts = read_prompts(args.prompts) if args.prompts else DEFAULT_PROMPTS
        if not prompts:
            raise StudioError(f"The prompt file {args.prompts} has no prompt.")
        setup = setup_from_args(engine, args)
    except (StudioError, OSError) as exc:
        print(json.dumps({"ok": False, "error": str(exc)}), flush=True)
        return 1
    outcomes = []
    for config in CONFIGS:
        folder = args.outputs / "identity-report" / slug(config.name) if args.outputs else None
        outcome = run_config(engine, config, setup, prompts, folder)
        if outcome.skipped:
            print(f"skipped {config.name}: {outcome.skipped}", flush=True)
        outcomes.append(outcome)
    print(table(outcomes))
    ran = any(not o.skipped for o in outcomes)
    line = {"ok": ran, "std": STD_KIND, "prompts": len(prompts),
            "configurations": [outcome_json(o) for o in outcomes]}  # fmt: skip
    print(json.dumps(line), flush=True)
    return 0 if ran else 1


def slug(name: str) -> str:
    """A folder name for a configuration: 'base Flux' -> 'base-flux'."""
    words = "".join(c if c.isalnum() else " " for c in name.lower()).split()
    return "-".join(words)
