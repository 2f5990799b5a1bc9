"""Render history: kept results that survive reloads and restarts, one JSON file per entry.

The outputs folder stays the source of truth for images: an entry points at its PNG files
there, and an entry whose PNG the person deleted is no longer listed (and is pruned).
Stdlib + Pillow only, so the studio can use it without importing torch.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image, features

from engine.errors import InputError
from engine.files import atomic_write

log = logging.getLogger(__name__)

FORMAT = "portrait-studio-history"
VERSION = 1
THUMB_SIZE = 256  # longest side of a stored thumbnail, in pixels
MAX_ENTRY_BYTES = 4 * 2**20  # an entry file larger than this is not ours: skipped unread
_ID = re.compile(r"\d{8}-\d{6}-\d{6}-[0-9a-f]{8}")  # UTC date-time-microseconds-random
_THUMB_EXTENSIONS = ("webp", "jpg")


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


EntryList = list[HistoryEntry]  # `HistoryStore.list` shadows the builtin inside the class


@dataclass(frozen=True)
class _Cached:
    """An entry file as last read: its (mtime_ns, size) and the entry, None if skipped."""

    signature: tuple[int, int]
    entry: HistoryEntry | None


class HistoryStore:
    """History entries under one folder; thread-safe; `limit` entries are kept per owner.

    Files: `<folder>/<id>.json` and `<folder>/thumbs/<id>.webp`, each written atomically.
    An in-memory index is refreshed from file signatures, so a second store on the same
    folder (another process, or after a restart) sees the same entries.
    """

    def __init__(self, folder: Path, limit: int = 500) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.folder = Path(folder)
        self.limit = limit
        self._lock = threading.RLock()
        self._index: dict[str, _Cached] = {}
        self._skipped_names: set[str] = set()  # foreign file names already logged

    def add(
        self,
        *,
        recipe_json: str,
        seed: int,
        files: Sequence[str | Path],
        report_line: str,
        notes: Sequence[str],
        label: str,
        image: Image.Image,
        owner: str = "",
    ) -> HistoryEntry:
        """Keep a new result; prunes this owner's oldest entries beyond `limit`."""
        checked_files = _checked_files(files)
        with self._lock:
            self._refresh()
            micros = self._next_micros()
            entry_id = _new_id(micros)
            entry = HistoryEntry(
                id=entry_id,
                created=micros / 1e6,
                updated=micros / 1e6,
                owner=_typed(owner, str, "owner"),
                recipe_json=_checked_recipe(recipe_json),
                seed=_typed(seed, int, "seed"),
                files=checked_files,
                report_line=_typed(report_line, str, "report_line"),
                notes=_checked_notes(notes),
                label=_typed(label, str, "label"),
                thumbnail=str(self._write_thumbnail(entry_id, image)),
            )
            self._write(entry)
            self._prune_over_limit(entry.owner)
        return entry

    def update(
        self,
        entry_id: str,
        *,
        recipe_json: str,
        report_line: str,
        notes: Sequence[str],
        label: str,
        image: Image.Image,
        files: Sequence[str | Path] | None = None,
        owner: str = "",
    ) -> HistoryEntry:
        """Re-grade an entry in place: same id and created time, new recipe and thumbnail."""
        changes = {
            "recipe_json": _checked_recipe(recipe_json),
            "report_line": _typed(report_line, str, "report_line"),
            "notes": _checked_notes(notes),
            "label": _typed(label, str, "label"),
        }
        if files is not None:
            changes["files"] = _checked_files(files)
        with self._lock:
            old = self._require(entry_id, owner)
            thumbnail = str(self._write_thumbnail(old.id, image))
            if old.thumbnail != thumbnail:  # Pillow lost or gained WebP since the entry
                Path(old.thumbnail).unlink(missing_ok=True)
            entry = replace(
                old, updated=max(time.time(), old.updated), thumbnail=thumbnail, **changes
            )
            self._write(entry)
        return entry

    def list(self, owner: str = "") -> EntryList:
        """This owner's entries whose files all exist, newest first."""
        with self._lock:
            self._refresh()
            alive = []
            for cached in list(self._index.values()):
                entry = cached.entry
                if entry is None or entry.owner != owner:
                    continue
                if _files_exist(entry):
                    alive.append(entry)
                elif _files_deleted(entry):
                    self._remove(entry)
        return sorted(alive, key=lambda e: (e.created, e.id), reverse=True)

    def get(self, entry_id: str, owner: str = "") -> HistoryEntry:
        """The entry, or an InputError if it is unknown, another owner's, or its PNG is gone."""
        with self._lock:
            return self._require(entry_id, owner)

    def delete(self, entry_id: str, owner: str = "") -> HistoryEntry:
        """Forget an entry and its thumbnail; its PNG in outputs is never touched."""
        with self._lock:
            entry = self._find(entry_id, owner)
            self._remove(entry)
        return entry

    # -- lookup ------------------------------------------------------------------------

    def _find(self, entry_id: str, owner: str) -> HistoryEntry:
        """The entry from its file (re-read if it changed); unknown and foreign look alike."""
        _check_id(entry_id)
        cached = self._refresh_one(entry_id)
        if cached is None or cached.entry is None or cached.entry.owner != owner:
            raise InputError(
                f"There is no history entry {entry_id}: it was deleted, or it belongs to "
                "another login. Refresh the history list."
            )
        return cached.entry

    def _require(self, entry_id: str, owner: str) -> HistoryEntry:
        """`_find`, and every file of the entry must still exist in outputs."""
        entry = self._find(entry_id, owner)
        missing = [f for f in entry.files if not os.path.isfile(f)]
        if missing:
            if _files_deleted(entry):
                self._remove(entry)
            raise InputError(
                f"The image of history entry {entry.label or entry.id} is gone from the "
                f"outputs folder ({Path(missing[0]).name}), so it cannot be restored; the "
                "entry was taken out of the history."
            )
        return entry

    # -- the index ---------------------------------------------------------------------

    def _refresh(self) -> None:
        """Re-read entry files that are new or changed since the last look; drop the gone."""
        fresh: dict[str, _Cached] = {}
        try:
            scan = os.scandir(self.folder)
        except FileNotFoundError:
            self._index = {}
            return
        with scan:
            for item in scan:
                entry_id = self._entry_id_of(item.name)
                if entry_id is None:
                    continue
                try:
                    stat = item.stat()
                except OSError:  # removed between listing and stat
                    continue
                fresh[entry_id] = self._cached(entry_id, stat)
        self._index = fresh

    def _refresh_one(self, entry_id: str) -> _Cached | None:
        try:
            stat = self._json_path(entry_id).stat()
        except OSError:
            self._index.pop(entry_id, None)
            return None
        self._index[entry_id] = self._cached(entry_id, stat)
        return self._index[entry_id]

    def _cached(self, entry_id: str, stat: os.stat_result) -> _Cached:
        signature = (stat.st_mtime_ns, stat.st_size)
        cached = self._index.get(entry_id)
        if cached is not None and cached.signature == signature:
            return cached
        return _Cached(signature, self._load(entry_id, stat.st_size))

    def _entry_id_of(self, name: str) -> str | None:
        """The id an entry file name carries; other JSON files are logged once and skipped."""
        stem, _, extension = name.rpartition(".")
        if extension != "json" or name.startswith(".tmp-"):
            return None
        if _ID.fullmatch(stem):
            return stem
        if name not in self._skipped_names:
            self._skipped_names.add(name)
            log.warning("History: skipping %s in %s (not a history entry).", name, self.folder)
        return None

    def _load(self, entry_id: str, size: int) -> HistoryEntry | None:
        """The entry in its file, or None (logged; the index remembers it until it changes)."""
        path = self._json_path(entry_id)
        try:
            if size > MAX_ENTRY_BYTES:
                raise ValueError(f"{size} bytes is too large for a history entry")
            data = json.loads(path.read_text(encoding="utf-8"))
            return self._entry_from_dict(data, entry_id)
        except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
            log.warning("History: skipping %s (%s).", path, exc)
            return None

    def _next_micros(self) -> int:
        """Now in microseconds, after every known entry: ids and times sort as added."""
        newest = max(
            (round(c.entry.created * 1e6) for c in self._index.values() if c.entry),
            default=0,
        )
        return max(time.time_ns() // 1000, newest + 1)

    # -- files -------------------------------------------------------------------------

    def _json_path(self, entry_id: str) -> Path:
        return self.folder / f"{entry_id}.json"

    def _write(self, entry: HistoryEntry) -> None:
        path = self._json_path(entry.id)
        text = json.dumps(_entry_to_dict(entry), ensure_ascii=False, indent=1)
        atomic_write(path, text.encode("utf-8"))
        stat = path.stat()
        self._index[entry.id] = _Cached((stat.st_mtime_ns, stat.st_size), entry)

    def _write_thumbnail(self, entry_id: str, image: Image.Image) -> Path:
        data, extension = _thumbnail_bytes(image)
        path = self.folder / "thumbs" / f"{entry_id}.{extension}"
        atomic_write(path, data)
        return path

    def _remove(self, entry: HistoryEntry) -> None:
        """Delete the entry file first (so it can never show without a thumbnail)."""
        self._json_path(entry.id).unlink(missing_ok=True)
        Path(entry.thumbnail).unlink(missing_ok=True)
        self._index.pop(entry.id, None)

    def _prune_over_limit(self, owner: str) -> None:
        own = [c.entry for c in self._index.values() if c.entry and c.entry.owner == owner]
        own.sort(key=lambda e: (e.created, e.id), reverse=True)
        for entry in own[self.limit :]:
            self._remove(entry)

    # -- (de)serialisation -------------------------------------------------------------

    def _entry_from_dict(self, data: Any, entry_id: str) -> HistoryEntry:
        """Validate a parsed entry file; ValueError/TypeError/KeyError if it is not ours."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not a Portrait Studio history entry")
        if data.get("version") != VERSION:
            raise ValueError(f"history entry version {data.get('version')!r} is not {VERSION}")
        if data["id"] != entry_id:
            raise ValueError(f"its id {data['id']!r} does not match its file name")
        thumbnail = data["thumbnail"]
        if thumbnail not in {f"{entry_id}.{ext}" for ext in _THUMB_EXTENSIONS}:
            raise ValueError(f"thumbnail {thumbnail!r} is not this entry's")
        return HistoryEntry(
            id=entry_id,
            created=float(_typed(data["created"], (int, float), "created")),
            updated=float(_typed(data["updated"], (int, float), "updated")),
            owner=_typed(data["owner"], str, "owner"),
            recipe_json=_checked_recipe(data["recipe_json"]),
            seed=_typed(data["seed"], int, "seed"),
            files=_stored_files(data["files"]),
            report_line=_typed(data["report_line"], str, "report_line"),
            notes=_checked_notes(data["notes"]),
            label=_typed(data["label"], str, "label"),
            thumbnail=str(self.folder / "thumbs" / thumbnail),
        )


def _entry_to_dict(entry: HistoryEntry) -> dict[str, Any]:
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


def _new_id(micros: int) -> str:
    seconds, fraction = divmod(micros, 10**6)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(seconds))
    return f"{stamp}-{fraction:06d}-{secrets.token_hex(4)}"


def _check_id(entry_id: object) -> None:
    """Ids become file names: anything but our own format (e.g. "../x") is refused."""
    if not isinstance(entry_id, str) or not _ID.fullmatch(entry_id):
        raise InputError(
            f"{str(entry_id)[:80]!r} is not a history entry id. Pick the entry from the "
            "history list again."
        )


def _files_exist(entry: HistoryEntry) -> bool:
    return all(os.path.isfile(f) for f in entry.files)


def _files_deleted(entry: HistoryEntry) -> bool:
    """A file is gone while its folder is still there: the person deleted it, so prune.

    A missing folder (an unmounted drive) only hides the entry until the folder is back.
    """
    return any(not os.path.isfile(f) and os.path.isdir(os.path.dirname(f)) for f in entry.files)


def _checked_files(files: Sequence[str | Path]) -> tuple[str, ...]:
    """Absolute paths of existing PNG files (what the person keeps must exist now)."""
    checked = _stored_files([str(f) for f in files])
    for f in checked:
        if not os.path.isfile(f):
            raise InputError(f"{Path(f).name} is not in the outputs folder; render it again.")
    return checked


def _stored_files(files: Any) -> tuple[str, ...]:
    if not isinstance(files, list | tuple) or not files:
        raise ValueError("an entry needs at least one PNG file")
    for f in files:
        if not isinstance(f, str) or not os.path.isabs(f) or not f.lower().endswith(".png"):
            raise ValueError(f"{str(f)[:200]!r} is not an absolute .png path")
    return tuple(files)


def _typed(value: Any, kind: type | tuple[type, ...], name: str) -> Any:
    """`value` if it is a `kind` (a bool is no number here), else a TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} has the wrong type ({type(value).__name__})")
    return value


def _checked_notes(notes: Any) -> tuple[str, ...]:
    if isinstance(notes, str) or not isinstance(notes, Sequence):
        raise TypeError(f"notes must be a list of texts, not {type(notes).__name__}")
    return tuple(_typed(n, str, "a note") for n in notes)


def _checked_recipe(recipe_json: Any) -> str:
    """The recipe text as given, once it is known to be a JSON object."""
    if not isinstance(json.loads(_typed(recipe_json, str, "recipe_json")), dict):
        raise ValueError("recipe_json must be a JSON object")
    return recipe_json


def _thumbnail_bytes(image: Image.Image) -> tuple[bytes, str]:
    """(file bytes, extension): RGB, longest side THUMB_SIZE, WebP where Pillow has it."""
    thumb = _flattened(image)
    thumb.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if features.check("webp"):
        thumb.save(buffer, format="WEBP", quality=85)
        return buffer.getvalue(), "webp"
    thumb.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue(), "jpg"


def _flattened(image: Image.Image) -> Image.Image:
    """An RGB copy; transparency is composited on white, as a viewer shows it."""
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")
