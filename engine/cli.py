"""Command line: `python -m engine render a.json b.png ...` renders recipes in one process.

The recipes share the engine's cache, so a second recipe that differs only in colour re-runs
only the colour stage. Each run prints one JSON line with its RunReport.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.batch.flags import add_ray_flags, render_on_ray, with_ray_address
from engine.engine import Engine, EngineConfig
from engine.errors import Cancelled, StudioError
from engine.identity_report import add_report_flags
from engine.identity_report import main as identity_report
from engine.models.manager import ModelConfig
from engine.models.place_flags import add_model_place_flags, model_place_settings
from engine.speed_options import add_speed_flags, run_budget, speed_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="render recipe files (.json or studio .png)")
    render.add_argument("recipes", nargs="+", type=Path, help="recipe .json or studio .png files")
    add_engine_flags(render)
    render.add_argument("--no-save", action="store_true", help="do not write PNGs")
    add_ray_flags(render)
    models = sub.add_parser("models", help="say which model files were found and where")
    add_engine_flags(models)
    report = sub.add_parser("identity-report", help="seed 002's identity table over 4 setups")
    add_report_flags(report)
    add_engine_flags(report)
    return parser


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by the CLI and the studio for finding models and folders."""
    parser.add_argument("--models", type=Path, help="a ComfyUI-style models folder")
    parser.add_argument("--diffusers", type=Path, help="a diffusers FLUX folder")
    parser.add_argument("--repo", help="a Hugging Face repo id, downloaded on first use")
    parser.add_argument("--tiny", action="store_true", help="tiny random demo models")
    add_model_place_flags(parser)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), help="output folder")
    parser.add_argument("--data", type=Path, default=Path("data"), help="uploads and state")
    parser.add_argument(
        "--luts",
        type=Path,
        action="append",
        default=[],
        help="an extra folder of .cube LUTs (repeatable)",
    )
    add_speed_flags(parser, warmup=False)


def engine_from_args(args: argparse.Namespace) -> Engine:
    models = ModelConfig(
        models_dir=args.models,
        diffusers_dir=args.diffusers,
        repo_id=args.repo,
        tiny=args.tiny,
        device=args.device,
        **speed_settings(args),
        **model_place_settings(args),
    )
    config = EngineConfig(
        models=models,
        outputs_dir=args.outputs,
        data_dir=args.data,
        lut_folders=tuple(args.luts),
        budget=run_budget(args),
    )
    return Engine(config)


def render_one(engine: Engine, path: Path, save: bool) -> dict:
    """Render one recipe file; errors become a JSON line with the message, never a traceback."""
    try:
        recipe = engine.read_recipe_file(path)
        result = engine.run(recipe, save=save)
    except (StudioError, Cancelled) as exc:
        return error_line(path, str(exc))
    return ok_line(path, result.report.to_dict(), result.report.line(), result.saved)


def ok_line(path: Path, report: dict, line: str, saved: list[Path]) -> dict:
    """The JSON line of a render (the same with and without `--ray`)."""
    return {
        "recipe": str(path),
        "ok": True,
        "report": report,
        "line": line,
        "saved": [str(p) for p in saved],
    }


def error_line(path: Path, error: str) -> dict:
    return {"recipe": str(path), "ok": False, "error": error}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(with_ray_address(sys.argv[1:] if argv is None else argv))
    if args.command == "render" and args.ray:
        return render_on_ray(args)  # the only way Ray gets imported
    engine = engine_from_args(args)
    if args.command == "models":
        print(engine.models_status())
        return 0
    if args.command == "identity-report":
        return identity_report(engine, args)
    failures = 0
    for path in args.recipes:
        line = render_one(engine, path, save=not args.no_save)
        failures += not line["ok"]
        print(json.dumps(line), flush=True)
        if not line["ok"]:
            print(f"{path}: {line['error']}", file=sys.stderr)
    return 1 if failures else 0
