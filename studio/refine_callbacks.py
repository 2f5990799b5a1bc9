"""The Refine tab's handlers: a control re-runs the result on screen from the refine stage it
touches, a reference photo for the identity guard is stored and used, an uploaded photo is
refined. After each of these (and after Generate) the tab shows before/after and the boxes
the detailers found."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import gradio as gr

from engine.errors import StudioError
from engine.recipe import Recipe
from studio.callbacks import MaybeRequest, StudioCallbacks, Updates
from studio.panels import results as res
from studio.panels.color import PREFIX as COLOR
from studio.panels.expression import PREFIX as EXPRESSION
from studio.panels.refine import PREFIX, RefinePanel, before_after, detections_image
from studio.session import Session
from studio.tab_events import on_in_place
from studio.uploads import stored_image

QUEUE = "refine"  # this tab's own queue (studio/tab_events.py)
IDLE = "Refine settings apply to the next image (or upload a photo below to refine it)."
REFINED = "Refined · change {n}"
ALL_OFF = "No refine region is on: the image is shown unrefined · change {n}"
REFERENCE = "refine.identity.reference"


def refines(recipe: Recipe) -> bool:
    """Whether the recipe has a refine pass switched on (a region or the chin)."""
    refine = recipe.refine
    return bool(refine.active_regions()) or (refine.enabled and refine.chin.enabled)


class RefineCallbacks:
    """Handlers of the Refine tab; per-session data stays in the studio's state."""

    def __init__(self, studio: StudioCallbacks, panel: RefinePanel) -> None:
        self.studio = studio
        self.panel = panel
        studio.restore_listeners.append(self)

    def restored(self, recipe: Recipe) -> Updates:
        """A restored recipe's reference photo in the tab (or none)."""
        digest = recipe.refine.identity.reference
        return {self.panel.reference_preview: stored_image(self.studio.engine, digest)}

    def restore_outputs(self) -> list[gr.Component]:
        return [self.panel.reference_preview]

    @property
    def controls(self) -> list[gr.Component]:
        return self.studio.controls.components(PREFIX)

    def outputs(self) -> list[gr.Component]:
        return [*res.regrade_outputs(self.studio.panel), self.panel.ab, self.panel.boxes]

    def refine(self, data: Mapping[gr.Component, Any], request: MaybeRequest = None) -> Updates:
        """Re-run the result on screen with the tab's settings (only the stages they touch)."""
        session: Session = data[self.studio.state]
        notice = self._notice(data, session)
        updates = self.studio.rerun(data, request, PREFIX, IDLE, notice=notice)
        return self._with_views(session, updates)

    def _notice(self, data: Mapping[gr.Component, Any], session: Session) -> str:
        """The status line of a re-run: whether any refine pass is on after it."""
        if session.last is None:
            return REFINED
        try:
            recipe = self.studio.controls.recipe(session.last.requested, data, prefix=PREFIX)
        except StudioError:  # `rerun` reports it
            return REFINED
        return REFINED if refines(recipe) else ALL_OFF

    def upload_reference(
        self, data: Mapping[gr.Component, Any], request: MaybeRequest = None
    ) -> Updates:
        """Store a reference photo for the identity guard and re-run the result on screen."""
        try:
            digest = self.studio.store_photo(data[self.panel.reference], "The reference photo")
        except StudioError as exc:
            return self.studio.fail(exc, "Reference photo not stored.")
        return self._use_reference(data, digest, request)

    def clear_reference(
        self, data: Mapping[gr.Component, Any], request: MaybeRequest = None
    ) -> Updates:
        """Forget the reference photo: the guard compares each face with itself only."""
        return self._use_reference(data, "", request)

    def _use_reference(
        self, data: Mapping[gr.Component, Any], digest: str, request: Any
    ) -> Updates:
        session: Session = data[self.studio.state]
        stored = "Reference photo stored: the identity guard uses it from the next image."
        notice = self._notice(data, session)
        updates = self.studio.use_photo(
            data, request, REFERENCE, digest, PREFIX, IDLE, notice, stored
        )
        preview = {self.panel.reference_preview: stored_image(self.studio.engine, digest)}
        return {**self._with_views(session, updates), **preview}

    def reference_outputs(self) -> list[gr.Component]:
        return [*self.outputs(), self.panel.reference_preview]

    def edit_upload(
        self, data: Mapping[gr.Component, Any], request: MaybeRequest = None
    ) -> Updates:
        """Refine (with the Expression and Color tabs' settings) an uploaded photo."""
        session: Session = data[self.studio.state]
        updates = self.studio.upload_post(
            data, data[self.panel.upload], "", request, failed="Not refined."
        )
        return self._with_views(session, updates)

    def upload_outputs(self) -> list[gr.Component]:
        return [*res.run_outputs(self.studio.panel), self.panel.ab, self.panel.boxes]

    def _with_views(self, session: Session, updates: Updates) -> Updates:
        """`updates` and the tab's before/after and detections for the result on screen."""
        if self.studio.panel.status in updates and len(updates) == 1:
            return updates  # nothing ran (no result yet, or nothing changed)
        return {**updates, **self.refresh(session)}

    def refresh(self, session: Session) -> Updates:
        """The tab's before/after and detections for the result on screen (after a render)."""
        return {self.panel.ab: before_after(session), self.panel.boxes: detections_image(session)}

    def wire(self, after_render: Any = None) -> None:
        """Connect the tab's events (inside the Blocks context); `after_render` is the
        Generate event, after which the tab follows the new result."""
        on = partial(on_in_place, QUEUE)
        cb, panel = self.studio, self.panel
        if after_render is not None:
            after_render.then(
                self.refresh,
                inputs=[cb.state],
                outputs=[panel.ab, panel.boxes],
                api_visibility="private",
            )
        inputs = {cb.state, *self.controls}
        for component in self.controls:
            on(triggers_of(component), self.refine, inputs, self.outputs())
        reference = {cb.state, panel.reference, *self.controls}
        on_in_place(
            QUEUE,
            [panel.reference.upload],
            self.upload_reference,
            reference,
            self.reference_outputs(),
        )
        on_in_place(
            QUEUE,
            [panel.reference.clear],
            self.clear_reference,
            reference,
            self.reference_outputs(),
        )
        post = (*self.controls, *cb.controls.components(EXPRESSION), *cb.controls.components(COLOR))
        on(
            [panel.upload.upload],
            self.edit_upload,
            {cb.state, panel.upload, *post},
            self.upload_outputs(),
        )


def triggers_of(component: gr.Component) -> list[Any]:
    """When a refine control re-runs: a detailer pass takes seconds, so a slider when it is
    let go (or its number typed), a text or number box on Enter or leaving it, a tick box,
    dropdown or radio at once. Never on `change`: restoring a recipe must not re-run."""
    if isinstance(component, gr.Slider):
        return [component.release]
    if isinstance(component, gr.Textbox | gr.Number):
        return [component.submit, component.blur]
    return [component.input]
