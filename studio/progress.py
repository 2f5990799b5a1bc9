"""The progress bar over the current image: stage, step/total, elapsed and time left."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ProgressClock:
    """Times one render; `remaining` extrapolates the current stage's pace."""

    started: float = field(default_factory=time.monotonic)
    stage: str = ""
    stage_started: float = 0.0
    last_event: float | None = None  # a new stage began when the previous event came

    def view(self, progress: Any, now: float | None = None) -> ProgressView:
        """The bar for one engine Progress event (stage, step, total, message)."""
        now = time.monotonic() if now is None else now
        if progress.stage != self.stage:
            began = self.started if self.last_event is None else self.last_event
            self.stage, self.stage_started = progress.stage, began
        self.last_event = now
        fraction = progress.step / progress.total if progress.total else 0.0
        remaining = None
        if progress.total and progress.step:
            per_step = (now - self.stage_started) / progress.step
            remaining = per_step * (progress.total - progress.step)
        return ProgressView(
            stage=progress.stage,
            step=progress.step,
            total=progress.total,
            elapsed=now - self.started,
            remaining=remaining,
            fraction=min(max(fraction, 0.0), 1.0),
            message=progress.message,
        )


@dataclass(frozen=True)
class ProgressView:
    stage: str
    step: int
    total: int
    elapsed: float
    remaining: float | None
    fraction: float
    message: str = ""

    def text(self) -> str:
        parts = [self.stage]
        if self.total:
            parts.append(f"step {self.step}/{self.total}")
        parts.append(f"{self.elapsed:.1f} s elapsed")
        if self.remaining is not None:
            parts.append(f"~{self.remaining:.1f} s left")
        if self.message:
            parts.append(self.message)
        return " · ".join(parts)


def bar_html(fraction: float, text: str, state: str = "running") -> str:
    """A progress bar (role=progressbar, so screen readers and tests can read it)."""
    percent = round(fraction * 100)
    return (
        f'<div class="ps-progress ps-progress-{state}" role="progressbar" '
        f'aria-valuemin="0" aria-valuemax="100" aria-valuenow="{percent}">'
        f'<div class="ps-progress-fill" style="width:{percent}%"></div>'
        f'<span class="ps-progress-text">{html.escape(text)}</span></div>'
    )


def running_html(view: ProgressView) -> str:
    return bar_html(view.fraction, view.text())


def idle_html(text: str = "") -> str:
    return bar_html(0.0, text, "idle") if text else ""


def finished_html(seconds: float) -> str:
    return bar_html(1.0, f"rendered in {seconds:.1f} s", "done")
