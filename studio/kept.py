"""Kept results: every finished result goes into the persistent history (engine.history);
a re-grade updates its entry and its PNGs once the grade settles; "Keep as new" forks one.

The PNGs in outputs stay the source of truth for images; an entry points at them.
"""

from __future__ import annotations

from typing import Any

from engine.history import HistoryEntry, HistoryStore
from engine.recipe import Recipe
from engine.recipe_json import recipe_to_json
from studio.display import as_pil
from studio.owners import owner_outputs
from studio.panels.compare import kept_choices
from studio.session import RunView, Session

HISTORY_FOLDER = "history"


def entry_label(recipe: Recipe, images: int) -> str:
    """A short caption: seed and size (and the batch count when there are several)."""
    size = f"{recipe.prompt.width}×{recipe.prompt.height}"
    label = f"seed {recipe.settings.seed} · {size}"
    if recipe.source.kind == "image":
        label = f"graded upload · {size}"
    return label + (f" · ×{images}" if images > 1 else "")


class KeptResults:
    """The history store seen through the studio's RunViews."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.store = HistoryStore(engine.config.data_dir / HISTORY_FOLDER)

    def add(self, view: RunView, owner: str) -> None:
        """Put a new result (already saved as PNGs) into the history."""
        if not view.files:
            return
        entry = self.store.add(**self._fields(view), files=view.files, owner=owner)
        view.entry_id = entry.id

    def regraded(self, view: RunView, owner: str) -> None:
        """Rewrite the result's PNGs and update its entry once the grade settles."""
        if not view.files or view.result is None:
            return

        def update_entry() -> None:  # off the slider's path: the thumbnail and JSON wait
            if view.entry_id:
                fields = self._fields(view)
                fields.pop("seed")
                self.store.update(view.entry_id, **fields, owner=owner)

        key = view.entry_id or view.files[0]
        self.engine.save_settled(key, view.result, view.files, then=update_entry)

    def keep_as_new(self, view: RunView, owner: str) -> RunView:
        """Write the result on screen as new PNGs and a new entry; later re-grades go there."""
        if view.result is None:
            raise ValueError("only a result rendered in this session can be kept as new")
        folder = owner_outputs(self.engine.config.outputs_dir, owner)
        files = [str(p) for p in self.engine.save_as_new(view.result, outputs_dir=folder)]
        fork = RunView(**{**view.__dict__, "files": files, "entry_id": ""})
        self.add(fork, owner)
        return fork

    def entries(self, owner: str) -> list[HistoryEntry]:
        return self.store.list(owner)

    def show(self, session: Session, owner: str) -> list[tuple[str, str]]:
        """The history gallery as it is on disk now; the session learns which entry each
        thumbnail is and which kept results the A/B slider offers."""
        entries = self.entries(owner)
        session.history_ids = [e.id for e in entries]
        session.kept = kept_choices(entries)
        return gallery_value(entries)

    def get(self, entry_id: str, owner: str) -> HistoryEntry:
        return self.store.get(entry_id, owner)

    def delete(self, entry_id: str, owner: str) -> HistoryEntry:
        return self.store.delete(entry_id, owner)

    def _fields(self, view: RunView) -> dict[str, Any]:
        recipe = view.rendered
        return {
            "recipe_json": recipe_to_json(recipe),
            "seed": recipe.settings.seed,
            "report_line": view.report_line,
            "notes": view.notes,
            "label": entry_label(recipe, len(view.finals)),
            "image": as_pil(view.finals[0]),
        }


def gallery_value(entries: list[HistoryEntry]) -> list[tuple[str, str]]:
    """(thumbnail, caption) pairs for the history gallery."""
    return [(e.thumbnail, e.label) for e in entries]
