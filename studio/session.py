"""What one browser session remembers (held in gr.State, never in module globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.recipe import Recipe

HISTORY_LIMIT = 60
LORA_ROWS_SHOWN = 4  # LoRA slot rows on show before "Add slot" (the suite's loader has 4)


@dataclass
class RunView:
    """The last successful run as the results panel shows it."""

    requested: Recipe  # what the studio asked for: the base of colour re-grades
    rendered: Recipe  # the recipe as the engine rendered it (rounded sizes, ...)
    finals: list[Any]  # saved PNG paths (with metadata), or images when nothing was saved
    stages: dict[str, list[Any]]  # stage name -> images, for the A/B slider
    report_line: str
    notes: list[str]


@dataclass
class Session:
    """Per-session state: the recipe the tabs started from, the runs, the A/B choice."""

    base: Recipe  # fields no control shows (start image, Redux digests) come from here
    last: RunView | None = None
    previous_finals: list[Any] | None = None
    history: list[tuple[Any, str]] = field(default_factory=list)
    runs: int = 0
    selected: int = 0  # the batch image the A/B slider shows
    compare: tuple[str, str] | None = None
    cancel: Any = None  # the CancelToken of the render in progress
    last_seed: int | None = None  # the seed of the last Generate started ("use last")
    lora_rows: int = LORA_ROWS_SHOWN  # LoRA slot rows on show

    def remember(self, view: RunView) -> None:
        """Make `view` the last run; the one before becomes "previous" for A/B."""
        if self.last is not None:
            self.previous_finals = self.last.finals
        self.last = view
        self.runs += 1
        seed = view.rendered.settings.seed
        captions = [f"#{self.runs} · seed {seed}" for _ in view.finals]
        self.history[:0] = list(zip(view.finals, captions, strict=True))
        del self.history[HISTORY_LIMIT:]
        self.selected = min(self.selected, len(view.finals) - 1) if view.finals else 0
