"""Recipes grouped by what they share in an engine's cache, so each group runs on one actor.

Two recipes that differ only in their finishing sections (expression, refine, upscale, colour)
share every artifact up to the decoded image: on the same warm engine the second one re-runs
only the stages it changes (a colour-only variant runs only `color`). Groups with the same
model and prompt also share the text encoding, so an actor prefers those next.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from engine.recipe import Recipe
from engine.recipe_json import canonical_json

# Sections read only by the stages after decode: they do not change what the cache shares.
FINISHING_SECTIONS = ("expression", "refine", "upscale", "color")
# Sections the conditioning (text encoding, Redux) reads.
PROMPT_SECTIONS = ("model", "prompt", "redux", "regions")


@dataclass(frozen=True)
class Job:
    """One recipe of the batch: its place on the command line, its file and its recipe."""

    index: int
    path: Path
    recipe: Recipe


@dataclass
class Group:
    """Recipes that share the cache up to the decoded image, in command-line order."""

    key: str
    prompt_key: str
    jobs: list[Job] = field(default_factory=list)


def _digest(value: object) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]


def group_key(recipe: Recipe) -> str:
    """The recipe without its finishing sections: equal keys share the decoded image."""
    defaults = Recipe()
    shared = dataclasses.replace(
        recipe, **{name: getattr(defaults, name) for name in FINISHING_SECTIONS}
    )
    return _digest(shared)


def prompt_key(recipe: Recipe) -> str:
    """Model, prompt, Redux references and regions: equal keys share the conditioning."""
    return _digest({name: getattr(recipe, name) for name in PROMPT_SECTIONS})


def group_jobs(jobs: list[Job]) -> list[Group]:
    """Jobs grouped by `group_key`, groups in the order of their first job."""
    groups: dict[str, Group] = {}
    for job in jobs:
        key = group_key(job.recipe)
        if key not in groups:
            groups[key] = Group(key, prompt_key(job.recipe))
        groups[key].jobs.append(job)
    return list(groups.values())


def next_group(queue: list[Group], warm_prompts: set[str]) -> Group | None:
    """Take the first queued group whose conditioning the actor already holds, else the first
    one: idle actors take work as they free up, which balances uneven render times."""
    if not queue:
        return None
    for i, group in enumerate(queue):
        if group.prompt_key in warm_prompts:
            return queue.pop(i)
    return queue.pop(0)
