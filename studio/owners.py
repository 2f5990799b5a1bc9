"""Whose files are whose: with logins, each person's PNGs go to their own outputs subfolder.

Without logins ("" as the owner) the outputs folder stays flat, as it always was. The same
mapping decides which folder a logged-in person may fetch files from (studio/auth_guard.py).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

# A login name used as it is: lower case letters, digits, '.', '_' and '-', not hidden.
_PLAIN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_UNSAFE = re.compile(r"[^a-z0-9._-]+")


def owner_folder_name(owner: str) -> str:
    """A folder name for a login name: the name itself when it is plain, else a readable slug
    plus a hash of the exact name (so 'Ann', 'ann' and 'a/nn' never share a folder)."""
    if not owner:
        raise ValueError("an owner folder needs a login name; without logins use the root")
    if _PLAIN.fullmatch(owner) and owner not in (".", ".."):
        return owner
    slug = _UNSAFE.sub("_", owner.lower()).strip("._-")[:40] or "user"
    digest = hashlib.sha256(owner.encode("utf-8")).hexdigest()[:12]
    return f"{slug}-{digest}"


def owner_outputs(engine_outputs: Path, owner: str) -> Path:
    """Where `owner`'s PNGs go: `<outputs>/<folder>` with logins, `<outputs>` without."""
    return Path(engine_outputs) / owner_folder_name(owner) if owner else Path(engine_outputs)
