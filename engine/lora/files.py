"""LoRA files: found only in <models>/loras, read with safetensors, trigger words from metadata.

Every path comes from outside (a recipe, a PNG, the API), so a name is checked before it
touches the disk: relative, no "..", a .safetensors file inside the loras folder after
symlinks are resolved. Pickled .pt/.ckpt files are refused: loading them can run code.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from engine.errors import InputError, StudioError
from engine.input_limits import (
    MAX_METADATA_JSON_BYTES,
    MAX_NAME_CHARS,
    check_text,
    parse_json_document,
)

SUFFIX = ".safetensors"
# Metadata keys that name the words a LoRA was trained on, most explicit first.
TRIGGER_KEYS = ("modelspec.trigger_phrase", "trigger_words", "ss_trigger_words", "trigger_phrase")
MAX_TAG_TRIGGERS = 3

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraHeader:
    """What a file's safetensors header says, read without loading any tensor."""

    keys: tuple[str, ...]
    metadata: dict[str, str] = field(default_factory=dict)


class LoraFiles:
    """The LoRA files of one loras/ folder; counts every full read in `reads`."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.reads: Counter[str] = Counter()
        self._headers: dict[str, LoraHeader] = {}  # identity -> header
        self._lock = threading.Lock()

    def list(self) -> list[str]:
        """Names (posix paths relative to loras/) of every .safetensors file, sorted."""
        if self.folder is None or not self.folder.is_dir():
            return []
        names, root = [], self.folder.resolve()
        for path in self.folder.rglob(f"*{SUFFIX}"):
            rel = path.relative_to(self.folder)
            hidden = any(part.startswith(".") for part in rel.parts)
            # A link out of the folder would be refused on use: do not offer it.
            if path.is_file() and not hidden and path.resolve().is_relative_to(root):
                names.append(rel.as_posix())
        return sorted(names, key=str.lower)

    def path(self, name: str) -> Path:
        """The checked path of `name`; InputError says which folder LoRAs must live in."""
        if self.folder is None:
            raise InputError(
                f"The LoRA {name!r} cannot be used: no models folder is configured. LoRAs are "
                "read from <models>/loras only; start the studio with a models folder."
            )
        where = f"LoRAs are read from {self.folder} (and its subfolders) only"
        rel = PurePosixPath(name.replace("\\", "/"))
        if not name or rel.is_absolute() or ".." in rel.parts or ":" in name:
            raise InputError(f"The LoRA name {name!r} is not a file name inside loras/. {where}.")
        if rel.suffix.lower() != SUFFIX:
            raise InputError(
                f"The LoRA {name!r} is not a .safetensors file. {where}; pickled .pt/.ckpt "
                "files are refused because loading them can run code."
            )
        root = self.folder.resolve()
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            raise InputError(f"The LoRA {name!r} points outside the loras folder. {where}.")
        if not path.is_file():
            raise InputError(f"The LoRA {name!r} was not found. {where}; put the file there.")
        return path

    def identity(self, name: str) -> str:
        """name:size:mtime_ns, so a changed file gets a new cache key (and is loaded again)."""
        stat = self.path(name).stat()
        return f"{name}:{stat.st_size}:{stat.st_mtime_ns}"

    def header(self, name: str) -> LoraHeader:
        """Keys and metadata of `name`, cached per identity (cheap: no tensor is read)."""
        identity = self.identity(name)
        with self._lock:
            cached = self._headers.get(identity)
        if cached is not None:
            return cached
        try:
            with safe_open(str(self.path(name)), framework="pt") as handle:
                header = LoraHeader(tuple(handle.keys()), dict(handle.metadata() or {}))
        except (SafetensorError, OSError) as exc:
            raise _unreadable(name, exc) from exc
        with self._lock:
            self._headers[identity] = header
        return header

    def read(self, name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """All tensors and the metadata of `name` (counted in `reads`)."""
        path = self.path(name)
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise _unreadable(name, exc) from exc
        with self._lock:
            self.reads[name] += 1
        return tensors, self.header(name).metadata


def _unreadable(name: str, exc: Exception) -> InputError:
    return InputError(
        f"The LoRA {name!r} cannot be read as safetensors ({exc}). The file may be damaged "
        "or still downloading: download it again into the loras folder."
    )


def metadata_triggers(metadata: dict[str, str]) -> list[str]:
    """Trigger words a file declares, or else its most frequent training tags.

    `ss_output_name` is not used: it is the training run's file name, not a word the model
    learned, and putting it in front of every prompt would only add noise. Metadata that is
    too large, too deep or not JSON gives no words (and a log line), never an error: a
    LoRA's odd metadata must not stop it from loading.
    """
    for key in TRIGGER_KEYS:
        words = _split_words(key, metadata.get(key, ""))
        if words:
            return words
    return _top_tags(metadata.get("ss_tag_frequency", ""))


def _metadata_json(key: str, raw: str) -> object:
    """The JSON value of one metadata entry within input_limits' limits, else None."""
    try:
        return parse_json_document(
            raw, f"The LoRA metadata {key!r}", max_bytes=MAX_METADATA_JSON_BYTES
        )
    except StudioError as exc:
        log.warning("%s No trigger words are taken from it.", exc)
        return None


def _split_words(key: str, raw: str) -> list[str]:
    raw = raw.strip()
    if not raw:
        return []
    if len(raw) > MAX_METADATA_JSON_BYTES:
        log.warning("The LoRA metadata %r is %d characters long: ignored.", key, len(raw))
        return []
    if raw.startswith("["):  # some trainers write a JSON list
        items = _metadata_json(key, raw)
        return _unique(str(item) for item in items) if isinstance(items, list) else []
    return _unique(raw.split(","))


def _top_tags(raw: str) -> list[str]:
    """Tags found in the most captions: a Kohya trigger token is in every caption."""
    folders = _metadata_json("ss_tag_frequency", raw) if raw.strip() else {}
    counts: Counter[str] = Counter()
    for tags in folders.values() if isinstance(folders, dict) else ():
        if isinstance(tags, dict):
            for tag, n in tags.items():
                if isinstance(n, int | float) and math.isfinite(n):
                    counts[tag.strip()] += int(n)
    counts.pop("", None)
    if not counts:
        return []
    top = max(counts.values())
    return sorted(tag for tag, n in counts.items() if n == top)[:MAX_TAG_TRIGGERS]


def _unique(words) -> list[str]:
    seen: dict[str, str] = {}
    for word in words:
        word = word.strip()
        if check_text(word, "trigger", MAX_NAME_CHARS):
            continue  # a control character or an endless "word": not for a prompt
        if word and word.lower() not in seen:
            seen[word.lower()] = word
    return list(seen.values())
