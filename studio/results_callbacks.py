"""Handlers of the results column beyond rendering: the batch, the A/B slider, Keep as new,
and the persistent history (load, click to restore, delete)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from engine.errors import StudioError
from engine.recipe_json import recipe_from_json
from studio.callbacks import MaybeRequest, StudioCallbacks, owner_of
from studio.panels import compare
from studio.panels import results as res
from studio.session import RunView, Session
from studio.toasts import inform, warn

Updates = dict[gr.Component, Any]
QUICK: dict[str, Any] = {"concurrency_limit": None, "api_visibility": "private"}


class ResultsCallbacks:
    """The results column's own events; `cb` renders and restores."""

    def __init__(self, cb: StudioCallbacks) -> None:
        self.cb = cb
        self.panel = cb.panel
        self.kept = cb.kept

    def _slider(self, session: Session) -> Updates:
        return compare.slider_updates(self.panel.slider, self.panel.ab_note, session)

    def compare(self, session: Session, a: str | None, b: str | None) -> Updates:
        if a and b:
            session.compare = (a, b)
        return self._slider(session)

    def ab_opened(self, session: Session) -> Updates:
        session.ab_open = True
        return self._slider(session)

    def ab_closed(self, session: Session) -> Updates:
        session.ab_open = False
        return {self.panel.ab_note: gr.skip()}

    def select(self, session: Session, evt: gr.SelectData) -> Updates:
        """Show the clicked batch image large (and in the A/B slider)."""
        session.selected = int(evt.index) if isinstance(evt.index, int) else 0
        return {**res.show_current(self.panel, session), **self._slider(session)}

    def keep_as_new(self, session: Session, request: MaybeRequest = None) -> Updates:
        """Fork the result on screen: new PNGs and a new history entry; re-grades go there."""
        owner = owner_of(request)
        if session.last is None or session.last.result is None:
            return res.show_status(self.panel, "Render or re-grade an image first.")
        try:
            session.last = self.kept.keep_as_new(session.last, owner)
        except (StudioError, OSError) as exc:
            warn(f"Not kept: {exc}")
            return res.show_error(self.panel, str(exc), "Not kept.")
        name = ", ".join(p.rsplit("/", 1)[-1] for p in session.last.files)
        inform(f"Kept as a new result: {name}")
        kept = res.show_notice(self.panel, f"Kept as new: {name}")
        return {**kept, **self.history(session, request)}

    # -- history -------------------------------------------------------------------

    def history(self, session: Session, request: MaybeRequest) -> Updates:
        """The history gallery as it is on disk now."""
        return {self.panel.history: self.kept.show(session, owner_of(request))}

    def load(self, session: Session, request: MaybeRequest = None) -> Updates:
        """Page load: this person's history from earlier visits and server runs."""
        return self.history(session, request)

    def pick(self, session: Session, evt: gr.SelectData, request: MaybeRequest = None) -> Updates:
        """One click on a history entry: every tab takes its recipe, its image shows large."""
        index = evt.index if isinstance(evt.index, int) else -1
        if not 0 <= index < len(session.history_ids):
            return res.show_status(self.panel, "That history entry is no longer listed.")
        owner = owner_of(request)
        try:
            entry = self.kept.get(session.history_ids[index], owner)
            recipe = recipe_from_json(entry.recipe_json)
        except StudioError as exc:
            failed = res.show_error(self.panel, str(exc), "Not restored.")
            return {**failed, **self.history(session, request)}
        session.history_pick = entry.id
        view = RunView(
            requested=recipe,
            rendered=recipe,
            finals=list(entry.files),
            stages={res.FINAL: list(entry.files)},
            report_line=entry.report_line,
            notes=list(entry.notes),
            files=list(entry.files),
            entry_id=entry.id,
        )
        session.remember(view)
        updates = self.cb.restored(session, recipe, f"Restored {entry.label} from the history.")
        updates.update(res.show_current(self.panel, session))
        updates[self.panel.report] = res.report_markdown(view)
        updates[self.panel.gallery] = gr.update(value=view.files, visible=len(view.files) > 1)
        return updates

    def pick_outputs(self) -> list[gr.Component]:
        p = self.panel
        extra = [p.current, p.report, p.gallery, p.history]
        return [*self.cb.controls.components(), p.status, *self.cb.restore_outputs(), *extra]

    def delete(self, session: Session, request: MaybeRequest = None) -> Updates:
        """Remove the entry last clicked from the history (its PNG stays in outputs)."""
        if not session.history_pick:
            return res.show_status(self.panel, "Click a history entry first, then Delete.")
        try:
            entry = self.kept.delete(session.history_pick, owner_of(request))
        except StudioError as exc:
            failed = res.show_error(self.panel, str(exc), "Not deleted.")
            return {**failed, **self.history(session, request)}
        session.history_pick = ""
        text = f"Deleted {entry.label} from the history; its PNG stays in the outputs folder."
        return {**res.show_notice(self.panel, text), **self.history(session, request)}

    # -- wiring --------------------------------------------------------------------

    def wire(self, demo: gr.Blocks) -> None:
        p, state = self.panel, self.cb.state
        history_out = [p.status, p.error, p.history]
        demo.load(self.load, inputs=[state], outputs=[p.history], **QUICK)
        p.history.select(self.pick, inputs=[state], outputs=self.pick_outputs(), **QUICK)
        p.history_delete.click(self.delete, inputs=[state], outputs=history_out, **QUICK)
        p.keep.click(self.keep_as_new, inputs=[state], outputs=history_out, **QUICK)
        slider_out = [p.slider, p.ab_note]
        gr.on(
            [p.compare_a.input, p.compare_b.input],
            self.compare,
            inputs=[state, p.compare_a, p.compare_b],
            outputs=slider_out,
            **QUICK,
        )
        p.ab.expand(self.ab_opened, inputs=[state], outputs=slider_out, **QUICK)
        p.ab.collapse(self.ab_closed, inputs=[state], outputs=[p.ab_note], **QUICK)
        p.gallery.select(self.select, inputs=[state], outputs=[p.current, *slider_out], **QUICK)
