"""What one browser session remembers (held in gr.State, never in module globals).

The history of kept results lives on disk (engine.history, under the data folder); the
session only knows which result is on screen and which entries its gallery shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.recipe import Recipe

LORA_ROWS_SHOWN = 4  # LoRA slot rows on show before "Add slot" (the suite's loader has 4)


@dataclass
class RunView:
    """The result on screen, as the results panel shows it."""

    requested: Recipe  # what the studio asked for: the base of colour re-grades
    rendered: Recipe  # the recipe as the engine rendered it (rounded sizes, ...)
    finals: list[Any]  # images (PIL) or saved PNG paths, one per batch image
    stages: Mapping[str, list[Any]]  # stage name -> images, for the A/B slider
    report_line: str
    notes: list[str]
    files: list[str] = field(default_factory=list)  # its PNGs in outputs (a re-grade rewrites)
    entry_id: str = ""  # its history entry ("" when it has none)
    result: Any = None  # the engine's RunResult ("Keep as new" saves it)


@dataclass
class Session:
    """Per-session state: the recipe the tabs started from, the result on screen, choices."""

    base: Recipe  # fields no control shows (start image, Redux digests) come from here
    last: RunView | None = None
    previous_finals: list[Any] | None = None
    runs: int = 0
    grades: int = 0  # re-grades of results in place (the status line counts them)
    selected: int = 0  # the batch image shown large and in the A/B slider
    compare: tuple[str, str] | None = None
    ab_open: bool = False  # the A/B panel is open: re-grades refresh its slider too
    history_ids: list[str] = field(default_factory=list)  # the history gallery, in order
    kept: dict[str, str] = field(default_factory=dict)  # A/B name -> PNG of a kept result
    history_pick: str = ""  # the history entry last clicked (Delete acts on it)
    cancel: Any = None  # the CancelToken of the render in progress
    last_seed: int | None = None  # the seed of the last Generate started ("use last")
    lora_rows: int = LORA_ROWS_SHOWN  # LoRA slot rows on show

    def remember(self, view: RunView) -> None:
        """Make `view` the result on screen; the one before becomes "previous" for A/B."""
        if self.last is not None:
            self.previous_finals = self.last.finals
        self.last = view
        self.runs += 1
        self.selected = min(self.selected, len(view.finals) - 1) if view.finals else 0

    def regraded(self, view: RunView) -> None:
        """Replace the result on screen by its re-grade: same files and history entry."""
        assert self.last is not None
        view.files, view.entry_id = self.last.files, self.last.entry_id
        self.last = view
        self.grades += 1

    def current_image(self) -> Any:
        """The batch image on screen (None before the first result)."""
        if self.last is None or not self.last.finals:
            return None
        return self.last.finals[min(self.selected, len(self.last.finals) - 1)]
