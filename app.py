"""Portrait Studio: flags -> Engine -> studio.build_ui(engine) -> launch.

Nothing heavy happens at import; run `python app.py --help` for the flags.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from engine.speed_options import add_speed_flags, speed_settings

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
    files = parser.add_argument_group("files")
    files.add_argument("--outputs", type=Path, default=Path("outputs"), metavar="DIR")
    files.add_argument(
        "--data", type=Path, default=Path("data"), metavar="DIR", help="uploads and caches"
    )
    add_speed_flags(parser)
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


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    auth = parse_auth(args.auth)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.listen not in ("127.0.0.1", "localhost", "::1") and not auth:
        logging.warning(
            "Listening on %s without --auth: anyone on the network can render.", args.listen
        )

    # Imported here: these pull in torch, and importing app.py must stay cheap.
    import studio
    from engine.engine import Engine, EngineConfig
    from engine.models.manager import ModelConfig

    models = ModelConfig(
        models_dir=models_dir_for(args),
        diffusers_dir=args.diffusers,
        repo_id=args.repo,
        tiny=args.tiny,
        **speed_settings(args),
    )
    engine = Engine(EngineConfig(models=models, outputs_dir=args.outputs, data_dir=args.data))
    if args.warmup or (args.warmup is None and engine.device.type == "cuda"):
        engine.start_warm_up()
    demo = studio.build_ui(engine)
    demo.launch(
        server_name=args.listen,
        server_port=args.port,
        share=args.share,
        auth=auth or None,
        allowed_paths=[str(args.outputs.resolve())],
        **studio.launch_options(),
    )


if __name__ == "__main__":
    main()
