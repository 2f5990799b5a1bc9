"""The stage graph: content-addressed stage keys, lazy cached execution and the RunReport."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from engine.cache import ArtifactCache
from engine.errors import Cancelled
from engine.recipe import Recipe
from engine.recipe_json import canonical_json
from engine.runtypes import CancelToken, Progress, ProgressFn, RunReport


@dataclass
class StageContext:
    """What a running stage may use: engine services, progress, cancel, the report."""

    services: Any
    report: RunReport
    progress: ProgressFn | None = None
    cancel: CancelToken | None = None

    def step(self, stage: str, step: int, total: int, message: str = "", preview: Any = None):
        """Report progress and stop here if the person pressed Stop."""
        if self.cancel is not None and self.cancel.cancelled:
            raise Cancelled(f"Stopped during {stage} at step {step} of {total}.")
        if self.progress is not None:
            self.progress(Progress(stage, step, total, message, preview))

    def note(self, text: str) -> None:
        if text not in self.report.notes:
            self.report.notes.append(text)

    def count(self, name: str, n: int = 1) -> None:
        self.report.counters[name] = self.report.counters.get(name, 0) + n


class Stage(Protocol):
    """One step of the pipeline. `select` picks the recipe slice that can change its output."""

    name: str
    version: int
    uses_models: bool

    def inputs(self, recipe: Recipe) -> tuple[str, ...]: ...

    def enabled(self, recipe: Recipe) -> bool: ...

    def select(self, recipe: Recipe, env: Any) -> Any: ...

    def run(self, ctx: StageContext, params: Any, upstream: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class PlannedStage:
    stage: Stage
    params: Any
    key: str
    inputs: tuple[str, ...]


def stage_key(stage: Stage, params: Any, upstream_keys: list[str]) -> str:
    """sha256 over (name, version, canonical params, upstream keys)."""
    try:
        payload = canonical_json([stage.name, stage.version, params, upstream_keys])
    except TypeError as exc:  # an unhashable parameter is a bug, never a silent cache miss
        raise TypeError(f"stage {stage.name}: parameters cannot be hashed: {exc}") from exc
    return hashlib.sha256(payload.encode()).hexdigest()


class StageGraph:
    """Stages by name; plans a recipe into keyed stages and runs only what is not cached."""

    def __init__(self, stages: list[Stage], cache: ArtifactCache) -> None:
        self.stages = {s.name: s for s in stages}
        self.cache = cache
        self.model_lock = threading.RLock()

    def plan(
        self, recipe: Recipe, env: Any, final: str
    ) -> tuple[dict[str, PlannedStage], str, list[str]]:
        """Keyed stages needed for `final`; disabled stages forward their first input."""
        planned: dict[str, PlannedStage] = {}
        off: list[str] = []

        def visit(name: str) -> str:
            stage = self.stages[name]
            if not stage.enabled(recipe):
                off.append(name)
                return visit(stage.inputs(recipe)[0])
            if name not in planned:
                inputs = tuple(visit(u) for u in stage.inputs(recipe))
                params = stage.select(recipe, env)
                key = stage_key(stage, params, [planned[u].key for u in inputs])
                planned[name] = PlannedStage(stage, params, key, inputs)
            return name

        last = visit(final)
        order = list(self.stages)  # the pipeline's order reads better than the visit's
        return planned, last, sorted(set(off), key=order.index)

    def pending(self, recipe: Recipe, env: Any, final: str) -> set[str]:
        """The stages a run for `final` would execute: those whose result is not cached."""
        planned, _, _ = self.plan(recipe, env, final)
        return {name for name, item in planned.items() if item.key not in self.cache}

    def run(self, recipe: Recipe, env: Any, ctx: StageContext, final: str) -> dict[str, Any]:
        """Run what `final` needs; returns the artifacts of every planned stage still cached."""
        start = time.perf_counter()
        planned, last, ctx.report.off = self.plan(recipe, env, final)
        produced: dict[str, Any] = {}

        def get(name: str) -> Any:
            if name in produced:
                return produced[name]
            item = planned[name]
            value = self.cache.get(item.key)
            if value is None:
                upstream = {u: get(u) for u in item.inputs}
                value = self._run_stage(item, ctx, upstream)
            produced[name] = value
            return value

        get(last)
        ran = set(ctx.report.ran_names)
        ctx.report.cached = [n for n in planned if n not in ran]
        for name, item in planned.items():
            if name not in produced:
                cached = self.cache.get(item.key)
                if cached is not None:
                    produced[name] = cached
        ctx.report.total_ms = (time.perf_counter() - start) * 1000
        produced["__final__"] = produced[last]
        return produced

    def _run_stage(self, item: PlannedStage, ctx: StageContext, upstream: dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        if item.stage.uses_models:
            with self.model_lock:
                value = item.stage.run(ctx, item.params, upstream)
        else:
            value = item.stage.run(ctx, item.params, upstream)
        ctx.report.ran.append((item.stage.name, (time.perf_counter() - t0) * 1000))
        self.cache.put(item.key, value)
        return value
