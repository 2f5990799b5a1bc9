"""Flags for where else to find model files and whether downloads are allowed, shared by
app.py and `python -m engine` (torch-free, so parsing flags stays cheap)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_model_place_flags(parser: argparse._ActionsContainer) -> None:
    """--extra-model-paths FILE and --offline, on a parser or an argument group."""
    parser.add_argument(
        "--extra-model-paths",
        type=Path,
        metavar="FILE",
        help="a ComfyUI extra_model_paths.yaml: the tokenizers come from the ComfyUI (or Forge) "
        "install it belongs to or names",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="never download, not even the small CLIP and T5 tokenizer files "
        "(HF_HUB_OFFLINE=1 does the same)",
    )


def model_place_settings(args: argparse.Namespace) -> dict[str, Any]:
    """ModelConfig keyword arguments from those flags (absent flags: the defaults)."""
    return {
        "extra_model_paths": getattr(args, "extra_model_paths", None),
        "offline": bool(getattr(args, "offline", False)),
    }
