"""What a Ray actor holds: one warm Engine that renders recipes and hands back the pixels.

Plain Python (no Ray import): `engine.batch.pool` makes it an actor. The actor does not write
files; the driver saves each image with the same `save_outputs` as a render without Ray, so
the PNGs are byte for byte the same.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from engine.errors import Cancelled, StudioError
from engine.images import ImageStore
from engine.input_limits import is_image_digest
from engine.recipe import Recipe
from engine.recipe_json import to_dict

# The CLI's engine flags whose values are folders (made absolute on the driver).
PATH_FLAGS = ("models", "diffusers", "outputs", "data")


@dataclass
class Outcome:
    """One recipe's result from an actor: the report, or the error the engine raised."""

    ok: bool
    actor: str
    error: str = ""
    images: list[Image.Image] = field(default_factory=list)
    model_label: str = ""
    extras: list[dict[str, str]] = field(default_factory=list)
    report: dict = field(default_factory=dict)
    line: str = ""


def engine_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed CLI flags an actor builds its Engine from, with folders made absolute (a
    worker's working folder is not the driver's)."""
    flags = dict(vars(args))
    flags.pop("recipes", None)
    for name in PATH_FLAGS:
        if flags.get(name) is not None:
            flags[name] = Path(flags[name]).expanduser().absolute()
    flags["luts"] = [Path(p).expanduser().absolute() for p in flags.get("luts") or []]
    return flags


def code_version() -> str:
    """A digest of the engine's source files: actors on other machines must run this code."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def referenced_images(recipe: Recipe, data_dir: Path) -> dict[str, bytes]:
    """The stored uploads the recipe names by digest that this machine's store has, so an
    actor on another machine gets them with the recipe."""
    store, found = ImageStore(data_dir / "images"), {}
    for value in _strings(to_dict(recipe)):
        if is_image_digest(value) and value not in found:
            path = store.folder / f"{value.removeprefix('sha256:')}.png"
            if path.is_file():
                found[value] = path.read_bytes()
    return found


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


class RenderWorker:
    """A warm Engine built from the CLI's flags; `render` runs one recipe."""

    def __init__(self, flags: dict[str, Any], name: str) -> None:
        from engine.cli import engine_from_args  # the CLI's own construction, flag for flag

        self.name = name
        self.engine = engine_from_args(argparse.Namespace(**flags))

    def ready(self) -> dict[str, Any]:
        """Who this actor is (answering at all means the Engine was built)."""
        device = str(self.engine.device)
        return {"actor": self.name, "pid": os.getpid(), "device": device, "code": code_version()}

    def render(self, recipe: Recipe, images: dict[str, bytes]) -> Outcome:
        """Render without saving; engine errors come back as an Outcome, not an exception."""
        try:
            for data in images.values():
                self.engine.store_image(data)
            result = self.engine.run(recipe, save=False)
        except (StudioError, Cancelled) as exc:
            return Outcome(ok=False, actor=self.name, error=str(exc))
        return Outcome(
            ok=True,
            actor=self.name,
            images=list(result.images),
            model_label=result.model_label,
            extras=result.report.identity_fields(),
            report=result.report.to_dict(),
            line=result.report.line(),
        )
