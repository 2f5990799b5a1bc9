"""`app.py --space`: the studio as a Hugging Face Space runs it, settings from the Space's
environment. Pure and cheap (no gradio, no torch), so app.py resolves it before any import.

On a Space (SPACE_ID set, or --space anywhere) the environment fills in what the flags
left unset:

- STUDIO_REPO: the weights repo id (default black-forest-labs/FLUX.1-dev);
  STUDIO_TINY=1 runs the tiny demo models instead;
- STUDIO_AUTH: logins, "user:password,user2:password2" (a Space secret);
  STUDIO_OPEN=1: accept an open studio without logins;
- outputs and data under /data when the Space has persistent storage (and the Hugging Face
  cache there too, so weights are downloaded once), else beside the app.

Only on a Space itself does it listen on 0.0.0.0; `--space` elsewhere stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_REPO = "black-forest-labs/FLUX.1-dev"
PERSISTENT = Path("/data")
DEFAULT_OUTPUTS, DEFAULT_DATA = Path("outputs"), Path("data")
DEFAULT_GPU_SECONDS = 120


@dataclass(frozen=True)
class SpacePlan:
    """The flags as the Space runs them, and environment variables to set before imports."""

    args: argparse.Namespace
    env: dict[str, str] = field(default_factory=dict)
    gpu_seconds: int = DEFAULT_GPU_SECONDS


def on_space(env: Mapping[str, str]) -> bool:
    return bool(env.get("SPACE_ID"))


def flag_on(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def space_logins(text: str) -> list[str]:
    """STUDIO_AUTH's "user:password,user2:password2" as --auth values (commas separate
    logins, so a password must not hold one)."""
    return [pair.strip() for pair in text.split(",") if pair.strip()]


def writable_folder(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def space_plan(
    args: argparse.Namespace, env: Mapping[str, str], persistent: Path = PERSISTENT
) -> SpacePlan:
    """The flags with the Space's settings filled in where the flags left them unset."""
    out = argparse.Namespace(**vars(args))
    if on_space(env) and out.listen == "127.0.0.1":
        out.listen = "0.0.0.0"
    if not (out.tiny or out.models or out.diffusers or out.repo):
        if flag_on(env, "STUDIO_TINY"):
            out.tiny = True
        else:
            out.repo = env.get("STUDIO_REPO", "").strip() or DEFAULT_REPO
    out.auth = [*out.auth, *space_logins(env.get("STUDIO_AUTH", ""))]
    out.open_studio = out.open_studio or flag_on(env, "STUDIO_OPEN")
    updates: dict[str, str] = {}
    if writable_folder(persistent):
        if out.outputs == DEFAULT_OUTPUTS:
            out.outputs = persistent / "outputs"
        if out.data == DEFAULT_DATA:
            out.data = persistent / "studio"
        updates["HF_HOME"] = str(persistent / ".huggingface")
    seconds = env.get("STUDIO_GPU_SECONDS", "").strip()
    gpu_seconds = int(seconds) if seconds.isdigit() and int(seconds) > 0 else DEFAULT_GPU_SECONDS
    return SpacePlan(out, updates, gpu_seconds)
