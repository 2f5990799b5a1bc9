"""Pictures from the page into the engine's image store, and back out for previews.

Every upload box (start image, Redux references, colour grading, the API) goes through
`store_upload`, so the engine checks each file the same way and names it in its message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import StudioError


def store_upload(engine: Any, path: str, name: str | None = None) -> str:
    """Check and store an uploaded file; returns its digest (StudioError says what is wrong).

    `name` is how a message calls the picture ("Reference 1"); the engine's own by default.
    """
    data = Path(path).read_bytes()
    return engine.store_image(data) if name is None else engine.store_image(data, name)


def store_pose_json(engine: Any, path: str, recipe: Any) -> str:
    """Draw an uploaded OpenPose keypoint JSON at `recipe`'s render size and store the
    picture; returns its digest (StudioError says what is wrong with the JSON)."""
    return engine.store_pose_json(Path(path).read_bytes(), recipe)


def stored_image(engine: Any, digest: str) -> Any:
    """A stored picture for a preview, or None when there is none or the store lacks it."""
    if not digest:
        return None
    try:
        return engine.load_image(digest)
    except StudioError:
        return None
