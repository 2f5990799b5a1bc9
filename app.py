"""Portrait Studio: flags -> Engine -> studio.build_ui(engine) -> launch.

Nothing heavy happens at import; run `python app.py --help` for the flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import app_space
import app_zerogpu
from app_sharing import OPEN_STUDIO_FLAG, sharing_refusal
from engine.files import empty_folder, remove_stale_temp_files
from engine.models.place_flags import add_model_place_flags, model_place_settings
from engine.quiet_console import quiet_console
from engine.speed_options import add_speed_flags, run_budget, speed_settings

GRADIO_TEMP = "gradio-tmp"  # Gradio's upload cache, inside the data folder

# Keep the server, the page and the hub client from calling home.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Portrait Studio: a FLUX.1 portrait studio.")
    weights = parser.add_argument_group("weights")
    weights.add_argument("--models", type=Path, metavar="DIR", help="a ComfyUI models folder")
    weights.add_argument("--diffusers", type=Path, metavar="DIR", help="a diffusers Flux folder")
    weights.add_argument("--repo", metavar="ID", help="a Hugging Face repo id (downloaded once)")
    weights.add_argument(
        "--tiny", action="store_true", help="demo mode: tiny random models, not real Flux"
    )
    add_model_place_flags(weights)
    serve = parser.add_argument_group("server")
    serve.add_argument("--listen", default="127.0.0.1", metavar="ADDR", help="bind address")
    serve.add_argument("--port", type=int, default=7860, metavar="N")
    serve.add_argument("--share", action="store_true", help="a temporary public gradio.live link")
    serve.add_argument(
        "--auth",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="require a login (repeat for more people)",
    )
    serve.add_argument(
        OPEN_STUDIO_FLAG,
        action="store_true",
        help="accept that, without --auth, anyone who can reach the studio (--share, or a "
        "--listen address other machines reach) can render and read its outputs",
    )
    serve.add_argument(
        "--space",
        action="store_true",
        help="run as a Hugging Face Space does (settings from STUDIO_* variables; docs/space.md)",
    )
    files = parser.add_argument_group("files")
    files.add_argument("--outputs", type=Path, default=Path("outputs"), metavar="DIR")
    files.add_argument(
        "--data", type=Path, default=Path("data"), metavar="DIR", help="uploads and caches"
    )
    add_speed_flags(parser)
    parser.add_argument(
        "--devices",
        metavar="LIST",
        help="one warm engine per device, e.g. cuda:0,cuda:1: renders go to a free GPU, "
        "re-grades to the one holding the image",
    )
    return parser.parse_args(argv)


def parse_auth(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """'user:password' strings -> (user, password) pairs; the password may hold ':'."""
    out = []
    for pair in pairs:
        user, sep, password = pair.partition(":")
        if not sep or not user or not password:
            raise SystemExit(f"--auth expects USER:PASSWORD, got {pair!r}")
        out.append((user, password))
    return out


def models_dir_for(args: argparse.Namespace) -> Path | None:
    """The models folder: --models, or for --tiny alone <data>/demo-models, whose loras/
    then holds the tiny demo LoRA files (written at start, unchanged if already there)."""
    if not args.tiny or args.models is not None:
        return args.models
    from engine.models.demo_loras import write_demo_loras  # imports torch: not at import

    folder = args.data / "demo-models"
    paths = write_demo_loras(folder / "loras")
    logging.info(
        "Demo mode: %d tiny demo LoRA files in %s; models folder %s.",
        len(paths),
        folder / "loras",
        folder,
    )
    return folder


def space_args(args: argparse.Namespace) -> tuple[argparse.Namespace, int]:
    """The flags with a Space's settings filled in (with --space, or on a Space), and the
    ZeroGPU duration for a render (0: not a Space); sets the Space's environment."""
    if not (args.space or app_space.on_space(os.environ)):
        return args, 0
    plan = app_space.space_plan(args, os.environ)
    for name, value in plan.env.items():
        os.environ.setdefault(name, value)
    return plan.args, plan.gpu_seconds


def refuse_open_studio(args: argparse.Namespace, logins: int) -> None:
    """Exit with status 2, saying why, when the studio would be open to others unasked."""
    space = args.space or app_space.on_space(os.environ)
    message = sharing_refusal(
        listen=args.listen,
        share=args.share,
        logins=logins,
        open_studio=args.open_studio,
        space=space,
    )
    if message is not None:
        print(f"app.py: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def clean_at_start(outputs: Path, data: Path) -> int:
    """Remove the half-written temporary files a crash left in the outputs (and each login's
    subfolder) and in the history and image stores; returns how many."""
    folders = [outputs, data / "history", data / "images"]
    removed = sum(remove_stale_temp_files(folder) for folder in folders)
    if removed:
        logging.info("Removed %d unfinished temporary files left by an earlier crash.", removed)
    return removed


def use_gradio_temp(data: Path) -> None:
    """Gradio's upload cache in <data>/gradio-tmp, emptied at start, instead of the machine's
    shared temp folder. A GRADIO_TEMP_DIR the person set is used as it is, never emptied."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        return
    folder = data / GRADIO_TEMP
    empty_folder(folder)
    os.environ["GRADIO_TEMP_DIR"] = str(folder)


def served_folders(outputs: Path, data: Path) -> list[str]:
    """Folders whose files the handlers hand to the page (PNGs, history thumbnails); Gradio
    serves copies from its cache, and the guard keeps direct paths per login."""
    return [str(outputs), str(data / "history" / "thumbs")]


def build_engine(config: Any, devices: str | None) -> Any:
    """One Engine, or with several --devices an EnginePool of one engine per device."""
    from engine.engine import Engine

    names = [d.strip() for d in (devices or "").split(",") if d.strip()]
    if len(names) <= 1:
        if names:
            config = dataclasses.replace(
                config, models=dataclasses.replace(config.models, device=names[0])
            )
        return Engine(config)
    from engine.pool import EnginePool

    return EnginePool.on_devices(config, names)


def main(argv: Sequence[str] | None = None) -> None:
    args, gpu_seconds = space_args(parse_args(argv))
    auth = parse_auth(args.auth)
    refuse_open_studio(args, len(auth))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.outputs, args.data = args.outputs.resolve(), args.data.resolve()
    clean_at_start(args.outputs, args.data)
    use_gradio_temp(args.data)  # before gradio is first imported
    gpu = app_zerogpu.zero_gpu(gpu_seconds) if gpu_seconds else None  # before torch
    quiet_console()  # library noise filtered once; real warnings and errors still log
    if gpu is not None and args.warmup is None:
        args.warmup = False  # ZeroGPU lends the GPU only inside a render

    # Imported here: these pull in torch, and importing app.py must stay cheap.
    import studio
    from engine.engine import EngineConfig
    from engine.models.manager import ModelConfig
    from studio.auth_guard import guard_app_kwargs

    models = ModelConfig(
        models_dir=models_dir_for(args),
        diffusers_dir=args.diffusers,
        repo_id=args.repo,
        tiny=args.tiny,
        **model_place_settings(args),
        **speed_settings(args),
    )
    config = EngineConfig(
        models=models, outputs_dir=args.outputs, data_dir=args.data, budget=run_budget(args)
    )
    engine = build_engine(config, args.devices)
    if args.warmup or (args.warmup is None and engine.device.type == "cuda"):
        engine.start_warm_up()
    demo = studio.build_ui(app_zerogpu.on_zero_gpu(engine, gpu))
    demo.launch(
        server_name=args.listen,
        server_port=args.port,
        share=args.share,
        auth=auth or None,
        allowed_paths=served_folders(args.outputs, args.data),
        app_kwargs=guard_app_kwargs(args.outputs, private_dirs=[args.data]),
        ssr_mode=False,  # the page comes from Python, where the guard strips the login page
        mcp_server=False,  # Gradio's MCP routes skip the login (GRADIO_MCP_SERVER=true)
        **studio.launch_options(),
    )


if __name__ == "__main__":
    main()
