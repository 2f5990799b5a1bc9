"""File writing shared by torch-free and torch modules alike."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

TEMP_PREFIX = ".tmp-"  # what atomic_write names its temporary files


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, then rename: never a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temp_files(folder: Path, min_age_s: float = 60.0) -> int:
    """Remove the temporary files a crashed atomic_write left in `folder` and its direct
    subfolders (older than `min_age_s`, so a write in progress elsewhere is left alone);
    returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    cutoff = time.time() - min_age_s
    removed = 0
    for path in [*folder.glob(TEMP_PREFIX + "*"), *folder.glob(f"*/{TEMP_PREFIX}*")]:
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_mtime <= cutoff:
                path.unlink()
                removed += 1
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            continue
    return removed


def empty_folder(folder: Path) -> int:
    """Remove everything inside `folder` (created if missing); returns how many entries."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    removed = 0
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed
