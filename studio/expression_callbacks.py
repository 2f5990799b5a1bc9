"""The Expression tab's handlers: a slider re-edits the result on screen, a preset sets the
sliders (and re-edits), a driving photo is stored and used, an uploaded photo is edited
without diffusion. The engine's cache keeps the face crop and features: only the
expression stage and what follows it run."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import gradio as gr

from engine.errors import StudioError
from engine.expression.presets import ExpressionPreset, node_values
from engine.recipe import Recipe
from studio.callbacks import MaybeRequest, StudioCallbacks, Updates
from studio.panels import results as res
from studio.panels.color import PREFIX as COLOR
from studio.panels.expression import PREFIX, ExpressionPanel, before_after
from studio.session import Session
from studio.tab_events import on_in_place
from studio.uploads import stored_image

QUEUE = "expression"  # this tab's own queue (studio/tab_events.py)
IDLE = "Expression settings apply to the next image (or upload a photo below to edit it)."
EDITED = "Expression edited · change {n}"
SAMPLE = "expression.sample_image"


class ExpressionCallbacks:
    """Handlers of the Expression tab; per-session data stays in the studio's state."""

    def __init__(
        self, studio: StudioCallbacks, panel: ExpressionPanel, presets: list[ExpressionPreset]
    ) -> None:
        self.studio = studio
        self.panel = panel
        self.presets = {preset.label: preset for preset in presets}
        studio.restore_listeners.append(self)

    def restored(self, recipe: Recipe) -> Updates:
        """A restored recipe's driving photo in the tab (or none)."""
        digest = recipe.expression.sample_image
        return {self.panel.driving_preview: stored_image(self.studio.engine, digest)}

    def restore_outputs(self) -> list[gr.Component]:
        return [self.panel.driving_preview]

    @property
    def controls(self) -> list[gr.Component]:
        return self.studio.controls.components(PREFIX)

    def outputs(self) -> list[gr.Component]:
        return [*res.regrade_outputs(self.studio.panel), self.panel.ab]

    def reedit(self, data: Mapping[gr.Component, Any], request: MaybeRequest = None) -> Updates:
        """Re-edit the result on screen with the tab's settings."""
        updates = self.studio.rerun(data, request, PREFIX, IDLE, notice=EDITED)
        return self._with_ab(data, updates)

    def apply_preset(
        self, data: Mapping[gr.Component, Any], request: MaybeRequest = None
    ) -> Updates:
        """Set the sliders to a preset and re-edit the result on screen with them."""
        label = data[self.panel.preset]
        preset = self.presets.get(label)
        if preset is None:
            return {self.panel.preset_note: "Choose one of the presets first."}
        values = node_values(preset)
        sliders = {self.studio.controls[PREFIX + name]: value for name, value in values.items()}
        enabled = self.studio.controls["expression.enabled"]
        moved = {**data, **sliders, enabled: True}
        updates = self.studio.rerun(moved, request, PREFIX, IDLE, notice=f"{label} · {{n}}")
        note = f"**{label}**: {preset.note}. " + ", ".join(
            f"{name.replace('rotate_', '')} {value:g}" for name, value in values.items() if value
        )
        return {
            **self._with_ab(data, updates),
            **sliders,
            enabled: True,
            self.panel.preset_note: note,
        }

    def preset_outputs(self) -> list[gr.Component]:
        return [*self.outputs(), *self.controls, self.panel.preset_note]

    def upload_driving(
        self, data: Mapping[gr.Component, Any], request: MaybeRequest = None
    ) -> Updates:
        """Store a driving photo, use it from now on, and re-edit the result on screen."""
        try:
            digest = self.studio.store_photo(data[self.panel.driving], "The driving photo")
        except StudioError as exc:
            return self.studio.fail(exc, "Driving photo not stored.")
        return self._use_driving(data, digest, request)

    def _use_driving(self, data: Mapping[gr.Component, Any], digest: str, request: Any) -> Updates:
        stored = "Driving photo stored: it applies to the next image."
        updates = self.studio.use_photo(data, request, SAMPLE, digest, PREFIX, IDLE, EDITED, stored)
        preview = {self.panel.driving_preview: stored_image(self.studio.engine, digest)}
        return {**self._with_ab(data, updates), **preview}

    def clear_driving(
        self, data: Mapping[gr.Component, Any], request: MaybeRequest = None
    ) -> Updates:
        return self._use_driving(data, "", request)

    def driving_outputs(self) -> list[gr.Component]:
        return [*self.outputs(), self.panel.driving_preview]

    def edit_upload(
        self, data: Mapping[gr.Component, Any], request: MaybeRequest = None
    ) -> Updates:
        """Edit (and grade) an uploaded photo: no Flux weights needed."""
        updates = self.studio.upload_post(
            data, data[self.panel.upload], "", request, failed="Not edited."
        )
        return self._with_ab(data, updates)

    def _with_ab(self, data: Mapping[gr.Component, Any], updates: Updates) -> Updates:
        session: Session = data[self.studio.state]
        pair = before_after(session)
        return {**updates, self.panel.ab: pair}

    def refresh_ab(self, session: Session) -> Updates:
        """The tab's before/after for the result on screen (after a render)."""
        return {self.panel.ab: before_after(session)}

    def wire(self, after_render: Any = None) -> None:
        """Connect the tab's events (inside the Blocks context); `after_render` is the
        Generate event, after which the tab's before/after follows the new result."""
        on = partial(on_in_place, QUEUE)
        cb, panel = self.studio, self.panel
        if after_render is not None:
            after_render.then(
                self.refresh_ab, inputs=[cb.state], outputs=[panel.ab], api_visibility="private"
            )
        for component in self.controls:
            triggers = [component.input]
            if isinstance(component, gr.Slider):
                triggers.append(component.release)
            on(triggers, self.reedit, {cb.state, *self.controls}, self.outputs())
        on(
            [panel.apply.click],
            self.apply_preset,
            {cb.state, panel.preset, *self.controls},
            self.preset_outputs(),
        )
        driving = {cb.state, panel.driving, *self.controls}
        on_in_place(
            QUEUE, [panel.driving.upload], self.upload_driving, driving, self.driving_outputs()
        )
        on_in_place(
            QUEUE, [panel.driving.clear], self.clear_driving, driving, self.driving_outputs()
        )
        everything = {cb.state, panel.upload, *self.controls, *cb.controls.components(COLOR)}
        outputs = [*res.run_outputs(cb.panel), panel.ab]
        on([panel.upload.upload], self.edit_upload, everything, outputs)
