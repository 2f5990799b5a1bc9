"""The actors: one warm RenderWorker each, in slots that keep their place in the batch when
an actor dies and a new one takes over."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import ray

from engine.batch.cluster import ActorPlan
from engine.batch.grouping import Job
from engine.batch.worker import RenderWorker


@dataclass
class Slot:
    """One actor's place: its current group's remaining jobs and the job it is rendering."""

    actor: Any  # a Ray actor handle, None after the actor died until it is needed again
    name: str
    pending: deque[Job] = field(default_factory=deque)
    warm_prompts: set[str] = field(default_factory=set)
    in_flight: tuple[Any, Job] | None = None  # (ObjectRef, job)


class WorkerPool:
    """`plan.count` actors built from the CLI's engine flags; a dead one is replaced on demand,
    at most `2 * plan.count` times in a batch (an actor that cannot start must not loop)."""

    def __init__(self, flags: dict[str, Any], plan: ActorPlan) -> None:
        self.flags = flags
        self.plan = plan
        self.remote = ray.remote(num_gpus=plan.num_gpus, num_cpus=plan.num_cpus)(RenderWorker)
        self.spawned = 0
        self.replacements_left = 2 * plan.count
        self.slots = [Slot(*self._spawn()) for _ in range(plan.count)]

    def _spawn(self) -> tuple[Any, str]:
        self.spawned += 1
        name = f"actor-{self.spawned}"
        return self.remote.remote(self.flags, name), name

    def wait_ready(self) -> list[dict[str, Any]]:
        """Block until every actor has built its Engine (raises the actor's error if not)."""
        return ray.get([slot.actor.ready.remote() for slot in self.slots])

    def lose(self, slot: Slot) -> None:
        """The slot's actor died: forget it (kill it in case it only stopped answering)."""
        if slot.actor is not None:
            ray.kill(slot.actor)
        slot.actor = None
        slot.warm_prompts.clear()  # a new actor starts with an empty cache

    def actor_for(self, slot: Slot) -> Any | None:
        """The slot's actor, a new one if it died, or None when no replacement is left."""
        if slot.actor is None and self.replacements_left > 0:
            self.replacements_left -= 1
            slot.actor, slot.name = self._spawn()
        return slot.actor

    def close(self) -> None:
        for slot in self.slots:
            if slot.actor is not None:
                ray.kill(slot.actor)
                slot.actor = None
