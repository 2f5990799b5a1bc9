"""The A/B slider's choices and images: this result's stages, the previous result, and
kept results from the history; any two sizes are fitted into one frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from studio.ab_pair import fit_pair
from studio.display import as_pil, display_file
from studio.session import Session

PREVIOUS = "previous result (final)"
FINAL = "final"
HISTORY_PREFIX = "kept: "


def compare_choices(session: Session) -> list[str]:
    """Every image the A/B slider can show: stages, the previous result, kept results."""
    if session.last is None:
        return list(session.kept)
    names = list(session.last.stages)
    if session.previous_finals:
        names.append(PREVIOUS)
    return names + list(session.kept)


def default_pair(session: Session, names: list[str]) -> tuple[str, str] | None:
    """The person's choice while still valid; else before vs after the grade."""
    if not names:
        return None
    if session.compare and all(n in names for n in session.compare):
        return session.compare
    stages = [n for n in names if n != PREVIOUS and not n.startswith(HISTORY_PREFIX)]
    if not stages:
        return None
    first = PREVIOUS if len(stages) == 1 and PREVIOUS in names else stages[0]
    return first, stages[-1]


def image_named(session: Session, name: str) -> Any:
    """The image called `name` for the batch image on screen (None when unknown or gone)."""
    if name in session.kept:
        path = session.kept[name]
        return path if Path(path).is_file() else None
    if session.last is None:
        return None
    images = session.previous_finals if name == PREVIOUS else session.last.stages.get(name)
    if not images:
        return None
    return images[min(session.selected, len(images) - 1)]


def slider_updates(
    slider: gr.ImageSlider, note: gr.Markdown, session: Session
) -> dict[gr.Component, Any]:
    """The slider's two images fitted into one frame, and the line that says how."""
    pair = default_pair(session, compare_choices(session))
    images = [image_named(session, n) for n in pair] if pair else [None, None]
    if any(image is None for image in images):
        return {slider: None, note: ""}
    fitted = fit_pair(as_pil(images[0]), as_pil(images[1]))
    return {slider: (display_file(fitted.a), display_file(fitted.b)), note: fitted.note}


def kept_choices(entries: list[Any], limit: int = 12) -> dict[str, str]:
    """A/B names for the newest kept results -> their first PNG."""
    return {f"{HISTORY_PREFIX}{e.label} ({e.id[-8:]})": e.files[0] for e in entries[:limit]}
