"""Field helpers for the recipe: ranges and choices live next to the default they bound."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from engine.input_limits import MAX_NAME_CHARS, NAME_KINDS


@dataclass(frozen=True)
class Bounds:
    """Inclusive numeric range of a recipe field; `step` is a UI hint only."""

    lo: float
    hi: float
    step: float | None = None


def bounded(default: float, lo: float, hi: float, step: float | None = None) -> Any:
    """A numeric field with an inclusive range that loading enforces."""
    return dataclasses.field(default=default, metadata={"bounds": Bounds(lo, hi, step)})


def choice(default: str, options: tuple[str, ...]) -> Any:
    """A string field restricted to stable ids (never UI labels)."""
    assert default in options
    return dataclasses.field(default=default, metadata={"choices": options})


def text(default: str, max_length: int) -> Any:
    """A free-text string field (a prompt) with its own length limit; others get MAX_NAME_CHARS."""
    return dataclasses.field(default=default, metadata={"max_length": max_length})


def file_ref(kind: str) -> Any:
    """A string field naming an image or a file (input_limits.NAME_KINDS), empty by default.

    Loading checks the name even while its section is off, so nothing unsafe reaches a PNG.
    """
    assert kind in NAME_KINDS
    return dataclasses.field(default="", metadata={"name_kind": kind})


def file_refs(kind: str, max_items: int) -> Any:
    """A tuple of names of images or files (input_limits.NAME_KINDS), each checked as file_ref
    checks one, empty by default."""
    assert kind in NAME_KINDS
    return dataclasses.field(
        default_factory=tuple, metadata={"name_kind": kind, "max_items": max_items}
    )


def items(factory: Any = tuple, max_items: int = 16) -> Any:
    """A tuple-of-dataclasses field (for example the LoRA stack)."""
    return dataclasses.field(default_factory=factory, metadata={"max_items": max_items})


def bounds_of(f: dataclasses.Field) -> Bounds | None:
    return f.metadata.get("bounds")


def choices_of(f: dataclasses.Field) -> tuple[str, ...] | None:
    return f.metadata.get("choices")


def max_length_of(f: dataclasses.Field) -> int:
    """The most characters a string field (or each string of a tuple field) may hold."""
    return f.metadata.get("max_length", MAX_NAME_CHARS)


def name_kind_of(f: dataclasses.Field) -> str | None:
    return f.metadata.get("name_kind")
