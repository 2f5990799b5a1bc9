"""One history entry: its fields, its file form, and the checks on what goes into it.

Stdlib + Pillow only (the studio uses the history without importing torch).
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, features

from engine.errors import InputError

FORMAT = "portrait-studio-history"
VERSION = 1
THUMB_SIZE = 256  # longest side of a stored thumbnail, in pixels
MAX_ENTRY_BYTES = 4 * 2**20  # an entry file larger than this is not ours: skipped unread
ID = re.compile(r"\d{8}-\d{6}-\d{6}-[0-9a-f]{8}")  # UTC date-time-microseconds-random
THUMB_EXTENSIONS = ("webp", "jpg")


@dataclass(frozen=True)
class HistoryEntry:
    """One kept result: its recipe, its PNG file(s) in outputs and a stored thumbnail."""

    id: str  # sortable and unique: UTC time + random suffix; safe as a file name
    created: float  # unix time
    updated: float  # unix time of the last in-place re-grade (== created if none)
    owner: str  # "" for a studio without logins; the login name otherwise
    recipe_json: str  # the rendered recipe as JSON text, exactly as given
    seed: int
    files: tuple[str, ...]  # absolute PNG paths in outputs
    report_line: str
    notes: tuple[str, ...]
    label: str  # short caption, e.g. "seed 42 · 1024×1024 · 28 steps"
    thumbnail: str  # absolute path of the stored thumbnail (WebP, or JPEG without WebP)


def entry_from_dict(data: Any, entry_id: str, folder: Path) -> HistoryEntry:
    """Validate a parsed entry file; ValueError/TypeError/KeyError if it is not ours."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not a Portrait Studio history entry")
    if data.get("version") != VERSION:
        raise ValueError(f"history entry version {data.get('version')!r} is not {VERSION}")
    if data["id"] != entry_id:
        raise ValueError(f"its id {data['id']!r} does not match its file name")
    thumbnail = data["thumbnail"]
    if thumbnail not in {f"{entry_id}.{ext}" for ext in THUMB_EXTENSIONS}:
        raise ValueError(f"thumbnail {thumbnail!r} is not this entry's")
    return HistoryEntry(
        id=entry_id,
        created=float(typed(data["created"], (int, float), "created")),
        updated=float(typed(data["updated"], (int, float), "updated")),
        owner=typed(data["owner"], str, "owner"),
        recipe_json=checked_recipe(data["recipe_json"]),
        seed=typed(data["seed"], int, "seed"),
        files=stored_files(data["files"]),
        report_line=typed(data["report_line"], str, "report_line"),
        notes=checked_notes(data["notes"]),
        label=typed(data["label"], str, "label"),
        thumbnail=str(folder / "thumbs" / thumbnail),
    )


def entry_to_dict(entry: HistoryEntry) -> dict[str, Any]:
    """The file form: the thumbnail by name only, so the data folder can move."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "id": entry.id,
        "created": entry.created,
        "updated": entry.updated,
        "owner": entry.owner,
        "seed": entry.seed,
        "label": entry.label,
        "files": list(entry.files),
        "report_line": entry.report_line,
        "notes": list(entry.notes),
        "thumbnail": Path(entry.thumbnail).name,
        "recipe_json": entry.recipe_json,
    }


def new_id(micros: int) -> str:
    seconds, fraction = divmod(micros, 10**6)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(seconds))
    return f"{stamp}-{fraction:06d}-{secrets.token_hex(4)}"


def check_id(entry_id: object) -> None:
    """Ids become file names: anything but our own format (e.g. "../x") is refused."""
    if not isinstance(entry_id, str) or not ID.fullmatch(entry_id):
        raise InputError(
            f"{str(entry_id)[:80]!r} is not a history entry id. Pick the entry from the "
            "history list again."
        )


def files_exist(entry: HistoryEntry) -> bool:
    return all(os.path.isfile(f) for f in entry.files)


def files_deleted(entry: HistoryEntry) -> bool:
    """A file is gone while its folder is still there: the person deleted it, so prune.

    A missing folder (an unmounted drive) only hides the entry until the folder is back.
    """
    return any(not os.path.isfile(f) and os.path.isdir(os.path.dirname(f)) for f in entry.files)


def checked_files(files: Sequence[str | Path]) -> tuple[str, ...]:
    """Absolute paths of existing PNG files (what the person keeps must exist now)."""
    checked = stored_files([str(f) for f in files])
    for f in checked:
        if not os.path.isfile(f):
            raise InputError(f"{Path(f).name} is not in the outputs folder; render it again.")
    return checked


def stored_files(files: Any) -> tuple[str, ...]:
    if not isinstance(files, list | tuple) or not files:
        raise ValueError("an entry needs at least one PNG file")
    for f in files:
        if not isinstance(f, str) or not os.path.isabs(f) or not f.lower().endswith(".png"):
            raise ValueError(f"{str(f)[:200]!r} is not an absolute .png path")
    return tuple(files)


def typed(value: Any, kind: type | tuple[type, ...], name: str) -> Any:
    """`value` if it is a `kind` (a bool is no number here), else a TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} has the wrong type ({type(value).__name__})")
    return value


def checked_notes(notes: Any) -> tuple[str, ...]:
    if isinstance(notes, str) or not isinstance(notes, Sequence):
        raise TypeError(f"notes must be a list of texts, not {type(notes).__name__}")
    return tuple(typed(n, str, "a note") for n in notes)


def checked_recipe(recipe_json: Any) -> str:
    """The recipe text as given, once it is known to be a JSON object."""
    if not isinstance(json.loads(typed(recipe_json, str, "recipe_json")), dict):
        raise ValueError("recipe_json must be a JSON object")
    return recipe_json


def thumbnail_bytes(image: Image.Image) -> tuple[bytes, str]:
    """(file bytes, extension): RGB, longest side THUMB_SIZE, WebP where Pillow has it."""
    thumb = flattened(image)
    thumb.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if features.check("webp"):
        thumb.save(buffer, format="WEBP", quality=85)
        return buffer.getvalue(), "webp"
    thumb.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue(), "jpg"


def flattened(image: Image.Image) -> Image.Image:
    """An RGB copy; transparency is composited on white, as a viewer shows it."""
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")
