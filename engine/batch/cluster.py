"""Connecting to Ray: a local cluster for `--ray`, an existing one for `--ray ADDRESS`, and
how many actors of which kind the cluster can hold."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import ray

from engine.batch.flags import LOCAL

DEFAULT_CPU_ACTORS = 2


@dataclass(frozen=True)
class ActorPlan:
    """How many actors, and what each reserves: one GPU each, or a share of the CPUs."""

    count: int
    num_gpus: int
    num_cpus: int

    def describe(self) -> str:
        kind = "GPU" if self.num_gpus else f"CPU ({self.num_cpus} CPU each)"
        return f"{self.count} {kind} actor{'s' * (self.count != 1)}"


def connect(address: str, actors: int) -> bool:
    """Join the cluster at `address`, or start a local one (quiet, no dashboard) for LOCAL;
    True when this call started Ray (so the caller shuts it down)."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address == LOCAL:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
        cpus = max(os.cpu_count() or 1, actors or DEFAULT_CPU_ACTORS)
        ray.init(num_cpus=cpus, include_dashboard=False, **quiet)
    else:
        ray.init(address=address, **quiet)
    return True


def plan_actors(requested: int, device: str = "auto") -> ActorPlan:
    """One actor per GPU (at most `requested`); without GPUs (or with `--device cpu`),
    `requested` (default 2) CPU actors that split the cluster's CPUs between them."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if gpus and device != "cpu":
        return ActorPlan(min(requested or gpus, gpus), num_gpus=1, num_cpus=1)
    count = max(1, min(requested or DEFAULT_CPU_ACTORS, cpus))
    return ActorPlan(count, num_gpus=0, num_cpus=max(1, cpus // count))
