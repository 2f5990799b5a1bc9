"""Before a render: refuse it when its estimate is over the budget. During it: turn an
out-of-memory into a message that says what to lower, with the memory handed back.
After it: teach the device profile the speed it measured."""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from engine.budget import (
    DeviceProfile,
    RunBudget,
    RunEstimate,
    Workload,
    cheaper_variants,
    estimate,
)
from engine.budget_finish import finishing_passes, finishing_variants
from engine.budget_identity import identity_parts, pulid_finishing_parts
from engine.budget_upscale import upscale_passes, upscale_variants
from engine.device_profile import device_profile, flux_shape, resident_gb, runtime_factors
from engine.errors import StudioError
from engine.recipe import Recipe
from engine.recipe_refine import REFINE_REGIONS
from engine.runtypes import RunReport
from engine.upscale.passes import UPSCALE_STAGES

log = logging.getLogger(__name__)
FLUX_STAGES = ("base", "latent", "decode")
FINISHING_STAGES = (*(f"refine_{r}" for r in REFINE_REGIONS), "refine_chin", *UPSCALE_STAGES)
HEAVY_STAGES = FLUX_STAGES + FINISHING_STAGES


class OverBudget(StudioError):
    """A render whose estimate is over the studio's run budget."""


class OutOfMemory(StudioError):
    """The device ran out of memory during a render; its memory was handed back."""


class RunGuard:
    """The run budget and out-of-memory recovery of one Engine."""

    def __init__(self, budget: RunBudget, device: torch.device) -> None:
        self.budget = budget
        self.device = device
        self._profile: DeviceProfile | None = None
        self._lock = threading.Lock()

    def profile(self, attention: str = "") -> DeviceProfile:
        with self._lock:
            if self._profile is None:
                self._profile = device_profile(self.device, attention)
                if self.budget.max_gb is None:  # the default budget: what the machine has
                    self.budget = RunBudget(self.budget.max_seconds, self._profile.memory_gb)
            return self._profile

    def estimate(self, recipe: Recipe, bundle: Any, work: Workload) -> RunEstimate:
        """The cost of the passes in `work` with the warm `bundle`'s models."""
        shape = flux_shape(bundle.transformer, bundle.vae, bundle.t5_max_length)
        runtime = bundle.runtime
        profile = self.profile(runtime.attention.name)
        linear, attention = runtime_factors(bundle.files.precision, runtime.compile)
        scaled = dataclasses.replace(profile, linear_factor=linear, attention_factor=attention)
        modules = [bundle.transformer, bundle.vae, bundle.clip, bundle.t5]
        weights = resident_gb(modules, self.device)
        work = dataclasses.replace(work, tiled_vae=runtime.memory.tiled_vae)
        found = estimate(recipe, shape, scaled, weights, work)
        finishing = finishing_passes(recipe, work.finishing, shape, scaled)
        finishing += upscale_passes(recipe, work.finishing, shape, scaled, work.tiled_vae)
        if work.base:
            finishing += identity_parts(recipe, shape, scaled)
        finishing += pulid_finishing_parts(recipe, work, shape, scaled)
        return dataclasses.replace(found, parts=found.parts + tuple(finishing))

    def check(self, recipe: Recipe, bundle: Any, pending: set[str]) -> RunEstimate:
        """Raise OverBudget when the stages about to run would not fit the budget."""
        work = Workload(
            *(name in pending for name in FLUX_STAGES),
            finishing=frozenset(pending & set(FINISHING_STAGES)),
        )
        found = self.estimate(recipe, bundle, work)
        problems = self.budget.problems(found)
        if problems:
            raise OverBudget(self._refusal(recipe, bundle, work, found, problems))
        return found

    def observe(self, found: RunEstimate | None, report: RunReport, loaded: bool) -> None:
        """Fold the measured pass times into the device's throughput (not after a load,
        whose time is not the device's speed)."""
        if found is None or loaded:
            return
        ran = dict(report.ran)
        for part in found.parts:
            if part.stage in ran and part.flops > 0:  # the transformer passes
                self.profile().observe(part.flops, ran[part.stage] / 1000)

    def _refusal(
        self, recipe: Recipe, bundle: Any, work: Workload, found: RunEstimate, problems: list
    ) -> str:
        fits = self._fitting(recipe, bundle, work)
        advice = (
            "It would fit with: " + "; or ".join(fits) + "."
            if fits
            else "Lower the size, the batch, the steps, the latent upscale or the Upscale passes."
        )
        return (
            f"This render is over the studio's run budget ({', '.join(problems)}). "
            f"Estimate: {found.describe()}. {advice} The budget is set with "
            "--max-render-seconds and --max-render-gb."
        )

    def _fitting(self, recipe: Recipe, bundle: Any, work: Workload) -> list[str]:
        """Each single change that fits; if none does, the changes together, in order,
        up to the first combination that fits."""
        fits = []
        for phrase, cheaper in all_variants(recipe):
            other = self.estimate(cheaper, bundle, work)
            if not self.budget.problems(other):
                fits.append(f"{phrase} ({other.short()})")
        if fits:
            return fits
        phrases: list[str] = []
        while variants := all_variants(recipe):
            phrase, recipe = variants[0]
            phrases.append(phrase)
            other = self.estimate(recipe, bundle, work)
            if not self.budget.problems(other):
                return [f"{' + '.join(phrases)} ({other.short()})"]
        return []

    @contextmanager
    def out_of_memory_recovery(self, recipe: Recipe) -> Iterator[None]:
        """Turn an out-of-memory error into OutOfMemory after handing the memory back."""
        try:
            yield
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_out_of_memory(exc):
                raise
            detail = _first_sentences(str(exc))
            del exc  # its traceback holds the frames, and they hold the tensors
            free_memory(self.device)
            raise OutOfMemory(_oom_message(recipe, self.device, detail)) from None


def all_variants(recipe: Recipe) -> list[tuple[str, Recipe]]:
    """Every single change that lowers the cost: the Flux passes', the Refine passes', then
    the Upscale passes'."""
    return cheaper_variants(recipe) + finishing_variants(recipe) + upscale_variants(recipe)


def free_memory(device: torch.device) -> None:
    """Drop unreachable tensors and hand cached GPU blocks back to the driver."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def _first_sentences(text: str, count: int = 2) -> str:
    """'CUDA out of memory. Tried to allocate 64.00 MiB.' from torch's long message."""
    sentences = text.splitlines()[0].split(". ") if text else [""]
    return ". ".join(sentences[:count]).rstrip(".")[:300] + "."


def _oom_message(recipe: Recipe, device: torch.device, detail: str) -> str:
    lower = [phrase for phrase, _ in all_variants(recipe)]
    what = ", ".join(lower) if lower else "a smaller size"
    where = "The GPU" if device.type == "cuda" else "The machine"
    return (
        f"{where} ran out of memory during this render ({detail}). The memory "
        f"was handed back and the studio keeps serving; the earlier results are kept. Try "
        f"{what}, or start the studio with --memory budget."
    )
