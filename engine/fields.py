"""Field helpers for the recipe: ranges and choices live next to the default they bound."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


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


def items(factory: Any = tuple, max_items: int = 16) -> Any:
    """A tuple-of-dataclasses field (for example the LoRA stack)."""
    return dataclasses.field(default_factory=factory, metadata={"max_items": max_items})


def bounds_of(f: dataclasses.Field) -> Bounds | None:
    return f.metadata.get("bounds")


def choices_of(f: dataclasses.Field) -> tuple[str, ...] | None:
    return f.metadata.get("choices")
