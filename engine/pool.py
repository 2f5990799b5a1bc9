"""Several engines on one machine, one per GPU: each render goes to the engine that already
holds the most of it (a colour re-grade to the one that rendered the image), else to a free
one; the queue lines say which device runs what.

Everything but `run` (uploads, file lists, status lines) is served by the first engine: the
engines share the models folder, the image store and the outputs folder.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from engine.engine import Engine, EngineConfig, RunResult, RunScope
from engine.errors import StudioError
from engine.recipe import Recipe
from engine.stage_list import FINAL_STAGE

LIGHT_STAGES = frozenset({FINAL_STAGE})  # a colour re-grade never waits behind a render


@dataclass
class _Slot:
    engine: Engine
    lock: threading.Lock
    job: str = ""  # what it renders now ("" when free)
    since: float = 0.0
    promised: int = 0  # renders sent to it that have not started yet

    @property
    def busy(self) -> bool:
        return self.lock.locked() or self.promised > 0


class EnginePool:
    """Engines on the given devices, sharing their folders, behind one Engine-like face."""

    def __init__(self, engines: list[Engine]) -> None:
        if not engines:
            raise ValueError("an engine pool needs at least one engine")
        self.engines = engines
        self._slots = [_Slot(e, threading.Lock()) for e in engines]
        self._choose = threading.Lock()

    @classmethod
    def on_devices(cls, config: EngineConfig, devices: list[str]) -> EnginePool:
        """One engine per device ("cuda:0", "cuda:1", or "cpu" twice in tests)."""
        engines = [
            Engine(replace(config, models=replace(config.models, device=device)))
            for device in devices
        ]
        return cls(engines)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engines[0], name)

    @property
    def size(self) -> int:
        return len(self.engines)

    def run(self, recipe: Recipe, *args: Any, **kwargs: Any) -> RunResult:
        """Render on the engine that needs to run the least of `recipe`, waiting for it when
        every engine is busy; a colour re-grade runs at once on the engine holding the
        image, as it does beside a render on a single engine. The report says which device
        rendered it."""
        slot, light = self._pick(recipe)
        if light:
            result = slot.engine.run(recipe, *args, **kwargs)
        else:
            result = self._locked_run(slot, recipe, *args, **kwargs)
        index = self._slots.index(slot)
        result.report.notes.append(f"Rendered on engine {index + 1} ({_device(slot.engine)}).")
        return result

    def start_warm_up(self) -> None:
        for engine in self.engines:
            engine.start_warm_up()

    def _locked_run(self, slot: _Slot, recipe: Recipe, *args: Any, **kwargs: Any) -> RunResult:
        with slot.lock:
            slot.promised -= 1
            slot.job, slot.since = _label(recipe), time.monotonic()
            try:
                return slot.engine.run(recipe, *args, **kwargs)
            finally:
                slot.job = ""

    def queue_lines(self) -> list[str]:
        """One line per engine: its device and what it renders now."""
        lines = []
        for number, slot in enumerate(self._slots, 1):
            job = slot.job
            state = f"rendering {job} ({time.monotonic() - slot.since:.0f} s)" if job else "free"
            lines.append(f"Engine {number} · {_device(slot.engine)} · {state}")
        return lines

    def _pick(self, recipe: Recipe) -> tuple[_Slot, bool]:
        """Fewest stages to run first (a cached image wins), then a free engine; and
        whether the run is light (colour only)."""
        with self._choose:
            work = {id(s): _work(s.engine, recipe) for s in self._slots}
            ranked = sorted(
                self._slots,
                key=lambda s: (len(work[id(s)] or ()), s.busy, self._slots.index(s)),
            )
            best = ranked[0]
            light = work[id(best)] is not None and work[id(best)] <= LIGHT_STAGES
            if not light:
                best.promised += 1
            return best, light


def _work(engine: Engine, recipe: Recipe) -> set[str] | None:
    """The stages `engine` would run for `recipe` (its cache holds the rest); None when the
    recipe cannot be planned (the render itself will say what is wrong)."""
    try:
        return engine.graph.pending(recipe, RunScope(engine, recipe.model), FINAL_STAGE)
    except StudioError:
        return None


def _device(engine: Engine) -> str:
    return str(engine.device)


def _label(recipe: Recipe) -> str:
    prompt = " ".join(recipe.prompt.prompt.split())
    return f"“{prompt[:40]}…”" if len(prompt) > 40 else f"“{prompt}”"
