"""Warm-up at start: load the Flux models, rank the attention kernels and compile the blocks
in the background, so the person's first Generate is not the slow one."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from engine.errors import StudioError
from engine.recipe import Recipe

WARMUP_STEPS = 2  # compiles the blocks and, with the first-block cache on, both its paths
log = logging.getLogger(__name__)


def warm_up_recipe(recipe: Recipe) -> Recipe:
    """The studio's starting recipe cut to WARMUP_STEPS steps: same size, same code paths."""
    settings = dataclasses.replace(recipe.settings, steps=WARMUP_STEPS)
    return dataclasses.replace(recipe, settings=settings)


@dataclass
class WarmUp:
    """One background warm-up and what became of it."""

    state: str = "not started"  # "not started" | "running" | "ready" | "skipped" | "failed"
    detail: str = ""
    seconds: float | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self, engine: Any) -> None:
        """Render the warm-up recipe on a daemon thread (once)."""
        if self._thread is not None:
            return
        self.state = "running"
        self._thread = threading.Thread(target=self._run, args=(engine,), daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, engine: Any) -> None:
        start = time.perf_counter()
        if not engine.has_diffusion():
            self.state, self.detail = "skipped", "no Flux weights found"
            return
        try:
            result = engine.run(warm_up_recipe(engine.default_recipe()), save=False)
        except StudioError as exc:  # bad or missing files: the studio shows the same at Generate
            self.state, self.detail = "failed", str(exc)
            log.warning("Warm-up failed: %s", exc)
            return
        self.seconds = time.perf_counter() - start
        self.state, self.detail = "ready", result.report.line()
        log.info("Warm-up done in %.1f s (%s)", self.seconds, self.detail)

    def describe(self) -> str:
        """One line for the models panel ("" before any warm-up was asked for)."""
        if self.state == "ready":
            return f"Warm-up: ready in {self.seconds:.1f} s."
        if self.state == "running":
            return "Warm-up: loading and compiling in the background; a Generate now waits for it."
        if self.state in ("skipped", "failed"):
            return f"Warm-up {self.state}: {self.detail}"
        return ""
