"""Render history: kept results that survive reloads and restarts, one JSON file per entry.

The outputs folder stays the source of truth for images: an entry points at its PNG files
there, and an entry whose PNG the person deleted is no longer listed (and is pruned).
Stdlib + Pillow only, so the studio can use it without importing torch.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from engine.errors import InputError
from engine.files import atomic_write
from engine.history_entry import (
    ID,
    MAX_ENTRY_BYTES,
    HistoryEntry,
    check_id,
    checked_files,
    checked_notes,
    checked_recipe,
    entry_from_dict,
    entry_to_dict,
    files_deleted,
    files_exist,
    new_id,
    thumbnail_bytes,
    typed,
)

log = logging.getLogger(__name__)

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
        kept_files = checked_files(files)
        with self._lock:
            self._refresh()
            micros = self._next_micros()
            entry_id = new_id(micros)
            entry = HistoryEntry(
                id=entry_id,
                created=micros / 1e6,
                updated=micros / 1e6,
                owner=typed(owner, str, "owner"),
                recipe_json=checked_recipe(recipe_json),
                seed=typed(seed, int, "seed"),
                files=kept_files,
                report_line=typed(report_line, str, "report_line"),
                notes=checked_notes(notes),
                label=typed(label, str, "label"),
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
            "recipe_json": checked_recipe(recipe_json),
            "report_line": typed(report_line, str, "report_line"),
            "notes": checked_notes(notes),
            "label": typed(label, str, "label"),
        }
        if files is not None:
            changes["files"] = checked_files(files)
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
                if files_exist(entry):
                    alive.append(entry)
                elif files_deleted(entry):
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
        check_id(entry_id)
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
            if files_deleted(entry):
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
        if ID.fullmatch(stem):
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
            return entry_from_dict(data, entry_id, self.folder)
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
        text = json.dumps(entry_to_dict(entry), ensure_ascii=False, indent=1)
        atomic_write(path, text.encode("utf-8"))
        stat = path.stat()
        self._index[entry.id] = _Cached((stat.st_mtime_ns, stat.st_size), entry)

    def _write_thumbnail(self, entry_id: str, image: Image.Image) -> Path:
        data, extension = thumbnail_bytes(image)
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
