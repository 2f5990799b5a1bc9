"""The Upscale tab's handlers: a control re-runs the result on screen from the upscale stage it
touches, the tier buttons set the final pass, the last caption becomes Upscale 1's prompt, an
uploaded photo is upscaled. After each of these (and after Generate) the tab shows the last
pass's tile grid, the 100 % crop before/after and the caption.

The final pass's LoRA rows are not bound controls: their stack is kept in the session's base
recipe (as the start image is), so Generate renders it too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr
from PIL import Image

from engine.errors import StudioError
from engine.recipe import Recipe
from engine.recipe_upscale import UPSCALE_TIERS, UsduParams, apply_tier
from engine.upscale.passes import UPSCALE_STAGES
from studio.bindings_upscale import PASS_TITLES
from studio.callbacks import MaybeRequest, StudioCallbacks, Updates
from studio.panels import results as res
from studio.panels.color import PREFIX as COLOR
from studio.panels.expression import PREFIX as EXPRESSION
from studio.panels.loras import lora_triggers
from studio.panels.refine import BEFORE_STAGES, REFINE_STAGES
from studio.panels.refine import PREFIX as REFINE
from studio.panels.upscale import (
    PREFIX,
    UpscalePanel,
    crop_window,
    draw_tiles,
    largest_face_centre,
    tile_boxes,
)
from studio.refine_callbacks import triggers_of
from studio.session import Session
from studio.tab_events import on_in_place

QUEUE = "upscale"  # this tab's own queue (studio/tab_events.py)
IDLE = "Upscale settings apply to the next image (or upload a photo below to upscale it)."
UPSCALED = "Upscaled · change {n}"
ALL_OFF = "Upscale is off: the image is shown at its rendered size · change {n}"
TIER_SET = "{tier} tier set on Upscale final: it applies to the next image."
COPIED = "The caption is Upscale 1's prompt now; it applies from the next change or Generate."
NO_CAPTION = "No caption yet: switch the captioner on and run first."
# The engine's upscale stages in the order they run (after refine, before color), and the
# stages whose image the first of them starts from, the latest first.
BEFORE_UPSCALE = (*reversed(REFINE_STAGES), *BEFORE_STAGES)


# -- what the passes of the result on screen worked on ---------------------------------------


@dataclass(frozen=True)
class Upscaled:
    """The batch image on screen before the first upscale stage and after the last."""

    before: Image.Image
    after: Image.Image
    params: UsduParams  # the last pass's settings
    title: str
    faces: list[dict]  # the face detailer's boxes on `before`


def upscaled(session: Session) -> Upscaled | None:
    """What the upscale passes of the result on screen worked on; None when none ran."""
    view = session.last
    if view is None:
        return None
    ran = [name for name in UPSCALE_STAGES if name in view.stages]
    before = next((name for name in BEFORE_UPSCALE if name in view.stages), None)
    if not ran or before is None or not view.stages[ran[-1]]:
        return None
    index = min(session.selected, len(view.stages[ran[-1]]) - 1)
    last = "final" if ran[-1].startswith("final") else "first"
    found = getattr(getattr(view.result, "report", None), "detections", None) or {}
    faces = found.get("refine_face") or [[]]
    return Upscaled(
        before=view.stages[before][min(index, len(view.stages[before]) - 1)],
        after=view.stages[ran[-1]][index],
        params=getattr(view.requested.upscale, last),
        title=PASS_TITLES[last],
        faces=list(faces[min(index, len(faces) - 1)]),
    )


def tiles_view(session: Session) -> dict[str, Any] | None:
    """The last pass's output with its jobs drawn on it, and a label that counts them."""
    found = upscaled(session)
    if found is None:
        return None
    try:
        boxes = tile_boxes(found.params, found.after.size)
    except ValueError:  # settings the tile planner refuses; the run's report says why
        return None
    seams = sum(tile.seam_fix for tile in boxes)
    label = (
        f"Tiles of {found.title}: {len(boxes) - seams} redraw (blue), {seams} seam fix "
        "(orange), numbered in the order they are sampled"
    )
    return {"value": draw_tiles(found.after, boxes), "label": label}


def crops(session: Session) -> tuple[Image.Image, Image.Image] | None:
    """The same window at 1:1 of the image before upscaling (enlarged with LANCZOS) and
    after, around the largest face the face detailer found (else the middle)."""
    found = upscaled(session)
    if found is None:
        return None
    after = found.after.convert("RGB")
    before = found.before.convert("RGB").resize(after.size, Image.Resampling.LANCZOS)
    centre = largest_face_centre(found.faces, after.width / found.before.width)
    window = crop_window(after.size, centre)
    return before.crop(window), after.crop(window)


def last_caption(session: Session) -> str:
    """The caption of the result on screen ("" when its run had none)."""
    result = session.last.result if session.last is not None else None
    return str(getattr(getattr(result, "report", None), "caption", "") or "")


# -- handlers ---------------------------------------------------------------------------------


class UpscaleCallbacks:
    """Handlers of the Upscale tab; per-session data stays in the studio's state."""

    def __init__(self, studio: StudioCallbacks, panel: UpscalePanel) -> None:
        self.studio = studio
        self.panel = panel
        studio.restore_listeners.append(self)

    def restored(self, recipe: Recipe) -> Updates:
        """A restored recipe's final LoRA stack in the rows."""
        return self.panel.final_loras.show(recipe)

    def restore_outputs(self) -> list[gr.Component]:
        return self.panel.final_loras.components()

    @property
    def controls(self) -> list[gr.Component]:
        return self.studio.controls.components(PREFIX)

    def inputs(self) -> set[gr.Component]:
        return {self.studio.state, *self.controls, *self.panel.final_loras.components()}

    def outputs(self) -> list[gr.Component]:
        views = [self.panel.tiles, self.panel.ab, self.panel.caption]
        return [*res.regrade_outputs(self.studio.panel), *views]

    def upscale(self, data: Mapping[gr.Component, Any], request: MaybeRequest = None) -> Updates:
        """Re-run the result on screen with the tab's settings (only the stages they touch);
        the final LoRA stack is kept for the next Generate too."""
        session: Session = data[self.studio.state]
        rows = self.panel.final_loras
        try:
            session.base = rows.read(session.base, data)
            base = rows.read(session.last.requested, data) if session.last else None
        except StudioError as exc:
            return self.studio.fail(exc, "Not changed.")
        notice = self._notice(data, session, base)
        updates = self.studio.rerun(data, request, PREFIX, IDLE, base=base, notice=notice)
        return self._with_views(session, updates)

    def _notice(self, data: Mapping[gr.Component, Any], session: Session, base: Any) -> str:
        """The status line of a re-run: whether any upscale pass is on after it."""
        if session.last is None:
            return UPSCALED
        try:
            recipe = self.studio.controls.recipe(base, data, prefix=PREFIX)
        except StudioError:  # `rerun` reports it
            return UPSCALED
        return UPSCALED if recipe.upscale.active_passes() else ALL_OFF

    def tier(self, name: str) -> Callable[..., Updates]:
        """The handler of a tier button: seed 003's tier on the final pass (`apply_tier`),
        shown in the tab and re-run on the result on screen."""

        def handler(data: Mapping[gr.Component, Any], request: MaybeRequest = None) -> Updates:
            session: Session = data[self.studio.state]
            try:
                recipe = self.studio.controls.recipe(session.base, data, prefix=PREFIX)
                recipe = self.panel.final_loras.read(recipe, data)
            except StudioError as exc:
                return self.studio.fail(exc, "Tier not set.")
            tiered = dataclasses.replace(recipe, upscale=apply_tier(recipe.upscale, name))
            shown = self.shown(tiered)
            updates = self.upscale({**data, **shown}, request)
            if session.last is None:
                updates = res.show_notice(self.studio.panel, TIER_SET.format(tier=name.title()))
            return {**updates, **shown}

        return handler

    def shown(self, recipe: Recipe) -> Updates:
        """The tab's controls and final LoRA rows showing `recipe`."""
        values = self.studio.controls.updates(recipe)
        own = {component: values[component] for component in self.controls}
        return {**own, **self.panel.final_loras.show(recipe)}

    def use_caption(self, caption: str | None) -> Updates:
        """The last caption copied into Upscale 1's prompt."""
        if not (caption or "").strip():
            return res.show_status(self.studio.panel, NO_CAPTION)
        prompt = self.studio.controls["upscale.first.prompt"]
        return {prompt: caption, **res.show_notice(self.studio.panel, COPIED)}

    def pick_lora(self, row: int) -> Callable[..., Updates]:
        """A file picked in final slot `row` brings its trigger words, then re-runs."""
        fields = self.panel.final_loras.rows[row]

        def handler(data: Mapping[gr.Component, Any], request: MaybeRequest = None) -> Updates:
            words = ", ".join(lora_triggers(self.studio.engine, data.get(fields["file"]) or ""))
            updates = self.upscale({**data, fields["trigger"]: words}, request)
            return {**updates, fields["trigger"]: words}

        return handler

    def edit_upload(
        self, data: Mapping[gr.Component, Any], request: MaybeRequest = None
    ) -> Updates:
        """Upscale (with the Expression, Refine and Color tabs' settings) an uploaded photo."""
        session: Session = data[self.studio.state]
        try:
            session.base = self.panel.final_loras.read(session.base, data)
        except StudioError as exc:
            return self.studio.fail(exc, "Not upscaled.")
        updates = self.studio.upload_post(
            data, data[self.panel.upload], "", request, failed="Not upscaled."
        )
        return self._with_views(session, updates)

    def upload_outputs(self) -> list[gr.Component]:
        views = [self.panel.tiles, self.panel.ab, self.panel.caption]
        return [*res.run_outputs(self.studio.panel), *views]

    def _with_views(self, session: Session, updates: Updates) -> Updates:
        """`updates` and the tab's views of the result on screen."""
        if self.studio.panel.status in updates and len(updates) == 1:
            return updates  # nothing ran (no result yet, or nothing changed)
        return {**updates, **self.refresh(session)}

    def refresh(self, session: Session) -> Updates:
        """The tile grid, the 100 % crop and the caption of the result on screen."""
        tiles = tiles_view(session) or {"value": None, "label": "Tiles"}
        caption = last_caption(session)
        return {
            self.panel.tiles: gr.update(**tiles),
            self.panel.ab: crops(session),
            self.panel.caption: caption if caption else gr.skip(),
        }

    def wire(self, after_render: Any = None) -> None:
        """Connect the tab's events (inside the Blocks context); `after_render` is the
        Generate event, after which the tab follows the new result."""
        on = partial(on_in_place, QUEUE)
        cb, panel, rows = self.studio, self.panel, self.panel.final_loras
        views = [panel.tiles, panel.ab, panel.caption]
        if after_render is not None:
            after_render.then(
                self.refresh, inputs=[cb.state], outputs=views, api_visibility="private"
            )
        inputs, outputs = self.inputs(), self.outputs()
        files = [fields["file"] for fields in rows.rows]
        for component in [*self.controls, *rows.components()]:
            if component not in files:
                on(triggers_of(component), self.upscale, inputs, outputs)
        for row, fields in enumerate(rows.rows):
            on([fields["file"].input], self.pick_lora(row), inputs, [*outputs, fields["trigger"]])
        tiered = [*outputs, *self.controls, *rows.components()]
        for name in UPSCALE_TIERS:
            on([panel.tiers[name].click], self.tier(name), inputs, tiered)
        panel.use_caption.click(
            self.use_caption,
            inputs=[panel.caption],
            outputs=[cb.controls["upscale.first.prompt"], cb.panel.status, cb.panel.error],
            concurrency_limit=None,
            api_visibility="private",
        )
        post = {c for tab in (EXPRESSION, REFINE, COLOR) for c in cb.controls.components(tab)}
        upload = {*inputs, panel.upload, *post}
        on([panel.upload.upload], self.edit_upload, upload, self.upload_outputs())
