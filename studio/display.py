"""Images as the browser shows them: JPEG files written once, named by their content.

Gradio would encode a PIL image itself (PNG: slow at 1024²; its JPEG: quality 75 with 4:2:0
chroma, which smears the colour edges a grade is judged on). A 4:4:4 JPEG at quality 95 is
fast to write and to decode and keeps colour detail; the PNG with the recipe stays the file
people download.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

QUALITY = 95
KEEP_FILES = 400  # display files kept on disk before the oldest are removed
TRIM_EVERY = 50  # new display files between two looks at the folder
_written = itertools.count(1)
FOLDER_NAME = "portrait-studio-display"


def display_folder() -> Path:
    folder = Path(tempfile.gettempdir()) / FOLDER_NAME
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def as_pil(image: Any) -> Image.Image:
    """A PIL image from a PIL image or a file path."""
    if isinstance(image, Image.Image):
        return image
    with Image.open(image) as opened:
        return opened.convert("RGB")


def display_file(image: Any) -> str:
    """A JPEG of `image` (PIL or path) for the page; the same pixels give the same file."""
    picture = as_pil(image).convert("RGB")
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=QUALITY, subsampling=0)
    data = buffer.getvalue()
    path = display_folder() / f"{hashlib.sha256(data).hexdigest()[:24]}.jpg"
    if not path.exists():
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        if next(_written) % TRIM_EVERY == 0:
            _trim(path.parent)
    return str(path)


def _trim(folder: Path) -> None:
    files = sorted(folder.glob("*.jpg"), key=lambda p: p.stat().st_mtime)
    for old in files[:-KEEP_FILES]:
        old.unlink(missing_ok=True)
