"""The driver of `render --ray`: reads the recipes, hands groups to actors as they free up,
saves each result itself and prints the same JSON lines as a render without Ray."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray.exceptions import RayActorError, RayError

from engine.batch.cluster import connect, plan_actors
from engine.batch.grouping import Group, Job, group_jobs, next_group
from engine.batch.pool import Slot, WorkerPool
from engine.batch.worker import Outcome, code_version, engine_flags, referenced_images
from engine.cli import error_line, ok_line
from engine.errors import StudioError
from engine.metadata import read_recipe_file
from engine.outputs import save_outputs

Emit = Callable[[dict], None]
AfterResult = Callable[[Slot, Job, dict], None]  # called once the slot has its next job


@dataclass
class BatchSummary:
    """What a batch did: its JSON lines in the order they finished, and its wall time."""

    lines: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> int:
        return sum(not line["ok"] for line in self.lines)


@dataclass
class Batch:
    """The jobs of one batch and where their results go."""

    jobs: list[Job]
    outputs: Path | None  # None: --no-save
    data_dir: Path
    emit: Emit
    after: AfterResult | None = None
    queue: list[Group] = field(default_factory=list)
    deaths: dict[int, int] = field(default_factory=dict)
    done: int = 0
    start: float = field(default_factory=time.perf_counter)


def render_batch(args: argparse.Namespace, after: AfterResult | None = None) -> int:
    """`render --ray`: every recipe through a pool of warm actors; 1 if any recipe failed.
    `after` sees each result once its actor has its next job (tests kill actors there)."""
    jobs, lines = read_jobs(args.recipes)
    for line in lines:
        print_line(line)
    if not jobs:
        return 1
    started = connect(args.ray, args.actors)
    try:
        plan = plan_actors(args.actors, args.device)
        where = "a local Ray cluster" if started and args.ray == "local" else f"Ray at {args.ray}"
        print(f"Starting {plan.describe()} on {where}...", file=sys.stderr, flush=True)
        pool = WorkerPool(engine_flags(args), plan)
        try:
            _check_code(pool.wait_ready())
            outputs = None if args.no_save else args.outputs
            summary = run_jobs(pool, Batch(jobs, outputs, args.data, print_line, after))
        except RayActorError as exc:  # an actor could not build its Engine
            print(f"The Ray actors could not start: {exc}", file=sys.stderr)
            return 1
        finally:
            pool.close()
    finally:
        if started:
            ray.shutdown()
    return 1 if lines or summary.failures else 0


def _check_code(ready: list[dict]) -> None:
    """Say so when an actor runs other engine code than this checkout (another commit)."""
    here = code_version()
    for actor in ready:
        if actor["code"] != here:
            print(
                f"Warning: {actor['actor']} runs different engine code ({actor['code']}, here "
                f"{here}): its renders may differ. Check out the same commit on every machine.",
                file=sys.stderr,
            )


def read_jobs(paths: list[Path]) -> tuple[list[Job], list[dict]]:
    """The recipes read on the driver, and an error line for each file that is not one."""
    jobs, errors = [], []
    for index, path in enumerate(paths):
        try:
            jobs.append(Job(index, path, read_recipe_file(path)))
        except StudioError as exc:
            errors.append(error_line(path, str(exc)))
    return jobs, errors


def print_line(line: dict) -> None:
    print(json.dumps(line), flush=True)
    if not line["ok"]:
        print(f"{line['recipe']}: {line['error']}", file=sys.stderr, flush=True)


def run_jobs(pool: WorkerPool, batch: Batch) -> BatchSummary:
    """Feed each idle actor the rest of its group or the next group; gather results as they
    finish. A dead actor's job is retried once on a new actor; a second death is reported."""
    summary = BatchSummary()
    batch.start = time.perf_counter()
    batch.queue = group_jobs(batch.jobs)
    for slot in pool.slots:
        _feed(pool, slot, batch, summary)
    while running := {slot.in_flight[0]: slot for slot in pool.slots if slot.in_flight}:
        ready, _ = ray.wait(list(running), num_returns=1)
        slot = running[ready[0]]
        ref, job = slot.in_flight
        slot.in_flight = None
        got = _collect(pool, slot, ref, job, batch)
        _feed(pool, slot, batch, summary)  # the actor renders on while we save
        if got is None:
            continue
        line = got if isinstance(got, dict) else _line(job, got, batch)
        _finish(line, job, batch, summary)
        if batch.after is not None:
            batch.after(slot, job, line)
    summary.seconds = time.perf_counter() - batch.start
    return summary


def _feed(pool: WorkerPool, slot: Slot, batch: Batch, summary: BatchSummary) -> None:
    """Give an idle slot its next job; with no actor left, its jobs are reported as lost."""
    if not slot.pending:
        group = next_group(batch.queue, slot.warm_prompts)
        if group is None:
            return
        slot.pending.extend(group.jobs)
        slot.warm_prompts.add(group.prompt_key)
    actor = pool.actor_for(slot)
    if actor is None:
        while slot.pending:
            job = slot.pending.popleft()
            lost = error_line(job.path, "No Ray actor is left to render this recipe.")
            _finish(lost, job, batch, summary)
        return
    job = slot.pending.popleft()
    uploads = referenced_images(job.recipe, batch.data_dir)  # read when sent, not all at once
    slot.in_flight = (actor.render.remote(job.recipe, uploads), job)


def _collect(
    pool: WorkerPool, slot: Slot, ref: object, job: Job, batch: Batch
) -> Outcome | dict | None:
    """The actor's Outcome, an error line when the job failed outside the engine, or None
    when its actor died and the job goes round again."""
    actor = slot.name
    try:
        outcome: Outcome = ray.get(ref)
    except RayActorError as exc:
        pool.lose(slot)
        deaths = batch.deaths[job.index] = batch.deaths.get(job.index, 0) + 1
        if deaths < 2:
            slot.pending.appendleft(job)  # first in line on the new actor
            return None
        message = f"The Ray actor died twice while rendering this recipe: {exc}"
        return {**error_line(job.path, message), "actor": actor, "retried": 1}
    except RayError as exc:  # a bug in the render, not a StudioError: this recipe fails
        return {**error_line(job.path, f"The render failed on {actor}: {exc}"), "actor": actor}
    return outcome


def _line(job: Job, outcome: Outcome, batch: Batch) -> dict:
    """Save the images here (as the CLI without Ray does) and build the JSON line."""
    retried = {"retried": batch.deaths[job.index]} if job.index in batch.deaths else {}
    if not outcome.ok:
        return {**error_line(job.path, outcome.error), "actor": outcome.actor, **retried}
    saved = []
    if batch.outputs is not None:
        saved = save_outputs(
            outcome.images, job.recipe, batch.outputs, outcome.model_label, outcome.extras
        )
    line = ok_line(job.path, outcome.report, outcome.line, saved)
    return {**line, "actor": outcome.actor, **retried}


def _finish(line: dict, job: Job, batch: Batch, summary: BatchSummary) -> None:
    batch.done += 1
    summary.lines.append(line)
    batch.emit(line)
    status = "ok" if line["ok"] else "failed"
    print(
        f"[{batch.done}/{len(batch.jobs)}] {job.path.name} {status} on "
        f"{line.get('actor', '-')} · {time.perf_counter() - batch.start:.1f} s",
        file=sys.stderr,
        flush=True,
    )
