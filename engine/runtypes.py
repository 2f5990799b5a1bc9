"""Run-level types shared by the engine and the studio: progress, cancel, the report.

Torch-free on purpose: the studio imports these without loading the engine's models.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Progress:
    """One progress event: a stage's step out of total, with an optional preview image."""

    stage: str
    step: int
    total: int
    message: str = ""
    preview: Any = None


ProgressFn = Callable[[Progress], None]


class CancelToken:
    """Set by the person (Stop); stages check it between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class RunReport:
    """What one run did: stages that ran (with milliseconds), stages served from cache."""

    ran: list[tuple[str, float]] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    off: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    total_ms: float = 0.0
    # Refine stage -> per batch image -> {"label", "box": [x1, y1, x2, y2], "score"}
    detections: dict[str, list[list[dict]]] = field(default_factory=dict)
    caption: str = ""  # the captioner's text, one paragraph per batch image ("" when off)
    # similarity of each image's face to the identity references (None: no face); empty
    # without references
    identity: list[float | None] = field(default_factory=list)
    identity_backend: str = ""

    @property
    def ran_names(self) -> list[str]:
        return [name for name, _ in self.ran]

    def identity_fields(self) -> list[dict[str, str]]:
        """Each image's identity score as a PNG 'parameters' field (empty without one)."""
        return [
            {"Identity": f"{score:.3f} ({self.identity_backend})"} if score is not None else {}
            for score in self.identity
        ]

    def line(self) -> str:
        """One line for the UI, e.g. 'ran: color 12 ms · cached: text, base, decode'."""
        ran = ", ".join(f"{name} {ms:.0f} ms" for name, ms in self.ran) or "nothing"
        parts = [f"ran: {ran}"]
        if self.cached:
            parts.append("cached: " + ", ".join(self.cached))
        if self.off:
            parts.append("off: " + ", ".join(self.off))
        parts += [f"{name}: {count}" for name, count in self.counters.items()]
        return " · ".join(parts)

    def to_dict(self) -> dict:
        return {
            "ran": [{"stage": name, "ms": round(ms, 3)} for name, ms in self.ran],
            "cached": list(self.cached),
            "off": list(self.off),
            "notes": list(self.notes),
            "counters": dict(self.counters),
            "detections": dict(self.detections),
            "caption": self.caption,
            "identity": list(self.identity),
            "identity_backend": self.identity_backend,
            "total_ms": round(self.total_ms, 3),
        }
