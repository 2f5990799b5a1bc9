"""Golden seeds: named seeds that reliably frame a face well, kept across restarts.

One JSON file in the engine's data folder, shared by every session of the studio (that is
the point: a team builds one list). Every read goes to the file, so another session's save
shows up at once; every write replaces the file atomically. A file that cannot be read is
reported and never overwritten, so a hand edit gone wrong loses nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import StudioError
from engine.recipe import MAX_SEED

FILE_NAME = "golden_seeds.json"
FORMAT_VERSION = 1
MAX_NAME = 80
MAX_NOTE = 300


class GoldenSeedsError(StudioError):
    """The golden seeds file or a request about it cannot be used as given."""


@dataclass(frozen=True)
class GoldenSeed:
    name: str
    seed: int
    note: str = ""

    def label(self) -> str:
        """What a dropdown shows: the name and the seed."""
        return f"{self.name} · {self.seed}"


class GoldenSeeds:
    """The golden seeds in `path` (data_dir / "golden_seeds.json")."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # sessions of one studio write one at a time

    def list_seeds(self) -> list[GoldenSeed]:
        """Every saved seed, sorted by name; GoldenSeedsError if the file is unreadable."""
        return sorted(self._read(), key=lambda g: g.name.casefold())

    def get(self, name: str) -> GoldenSeed:
        for entry in self._read():
            if entry.name == name:
                return entry
        raise GoldenSeedsError(f"There is no golden seed called {name!r} (deleted elsewhere?).")

    def save(self, name: str, seed: Any, note: str = "") -> GoldenSeed:
        """Save (or update) `seed` under `name`; returns the stored entry."""
        entry = _checked(name, seed, note)
        with self._lock:
            entries = [e for e in self._read() if e.name != entry.name] + [entry]
            self._write(entries)
        return entry

    def delete(self, name: str) -> None:
        """Remove the entry called `name`."""
        with self._lock:
            entries = self._read()
            kept = [e for e in entries if e.name != name]
            if len(kept) == len(entries):
                raise GoldenSeedsError(f"There is no golden seed called {name!r} to delete.")
            self._write(kept)

    def _read(self) -> list[GoldenSeed]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._broken(f"cannot be read ({exc.strerror})") from exc
        try:
            data = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._broken(f"is not valid JSON ({exc})") from exc
        seeds = data.get("seeds") if isinstance(data, dict) else None
        if not isinstance(seeds, list):
            raise self._broken('needs an object with a "seeds" list')
        entries = []
        for index, raw in enumerate(seeds):
            if not isinstance(raw, dict):
                raise self._broken(f"entry {index} is not an object")
            try:
                entries.append(_checked(raw.get("name"), raw.get("seed"), raw.get("note", "")))
            except GoldenSeedsError as exc:
                raise self._broken(f"entry {index}: {exc}") from exc
        return entries

    def _write(self, entries: list[GoldenSeed]) -> None:
        document = {"schema_version": FORMAT_VERSION, "seeds": [asdict(e) for e in entries]}
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".golden-", suffix=".part")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _broken(self, why: str) -> GoldenSeedsError:
        return GoldenSeedsError(
            f"The golden seeds file {self.path} {why}. Fix it or move it away; the studio "
            "will not overwrite it until it reads cleanly."
        )


def _checked(name: Any, seed: Any, note: Any) -> GoldenSeed:
    if not isinstance(name, str) or not name.strip():
        raise GoldenSeedsError("A golden seed needs a name.")
    name = " ".join(name.split())
    if len(name) > MAX_NAME:
        raise GoldenSeedsError(f"A golden seed name has at most {MAX_NAME} characters.")
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise GoldenSeedsError(f"A seed is a whole number from 0 to {MAX_SEED}, not {seed!r}.")
    if note is None:
        note = ""
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise GoldenSeedsError(f"A golden seed note is text of at most {MAX_NOTE} characters.")
    return GoldenSeed(name, seed, note.strip())
