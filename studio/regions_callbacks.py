"""The Regions accordion's handlers: the mask preview follows the layout, the masks, the
region count and the canvas size (and each new image, drawn under it); the count shows as
many region groups, the painted layout shows the paint boxes, and a painted mask is checked
and stored like any upload, its digest kept in the region's hidden box for the next Generate.

The regions act from the next Generate: nothing here re-runs the result on screen. An error
while rendering them (a painted layout without a mask, a LoKr file in a region) is the
usual failed-run message and toast, from Generate itself.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from engine.errors import StudioError
from engine.recipe import Recipe
from studio.callbacks import StudioCallbacks, Updates, failure_message
from studio.panels.regions import PREVIEW_NOTE, PREVIEW_OFF, RegionsPanel
from studio.region_rows import RegionRow, blank_canvas
from studio.session import Session
from studio.tab_events import on_in_place
from studio.uploads import store_upload, stored_image

QUEUE = "regions"  # the preview's own queue: never behind a render
CANVAS = ("prompt.width", "prompt.height", "prompt.resolution")
LAYOUT = ("regions.enabled", "regions.layout", "regions.gradient", "regions.blur")


def picture_of(image: Any) -> Image.Image | None:
    """The image on screen as a picture (results keep PIL images or saved PNG paths)."""
    if image is None or isinstance(image, Image.Image):
        return image
    try:
        with Image.open(Path(image)) as opened:
            return opened.convert("RGB")
    except OSError:
        return None


def alpha_of(picture: Image.Image) -> Image.Image | None:
    """The alpha channel of a picture with a non-opaque one; None for an opaque picture."""
    if not picture.has_transparency_data:
        return None
    alpha = picture.convert("RGBA").getchannel("A")
    return alpha if alpha.getextrema()[0] < 255 else None


def store_mask(engine: Any, path: str, name: str) -> str:
    """Check and store a painted or uploaded mask; "" when nothing is painted.

    The engine reads a mask's alpha channel when it has a non-opaque one, else its
    luminance (engine/regions/masks.py); the image store keeps RGB with transparency
    flattened on white, so a mask drawn in its alpha channel is stored as those grey values.
    """
    digest = store_upload(engine, path, name)  # checked like every upload
    with Image.open(path) as picture:
        alpha = alpha_of(picture)
        values = picture.convert("L") if alpha is None else alpha
    if values.getextrema()[1] == 0:
        return ""  # all black: no region painted yet
    if alpha is None:
        return digest
    grey = io.BytesIO()
    alpha.save(grey, format="PNG")
    return engine.store_image(grey.getvalue(), name)


class RegionsCallbacks:
    """Handlers of the Regions accordion; per-session data stays in the studio's state."""

    def __init__(self, studio: StudioCallbacks, panel: RegionsPanel) -> None:
        self.studio = studio
        self.panel = panel
        studio.restore_listeners.append(self)

    def restored(self, recipe: Recipe) -> Updates:
        """A restored recipe's painted masks in the paint boxes (the rows are bound)."""
        regions = recipe.regions.regions
        engine = self.studio.engine
        stored = [stored_image(engine, region.mask) for region in regions]
        return {
            row.mask: (stored[n] if n < len(stored) else None) or blank_canvas()
            for n, row in enumerate(self.rows)
        }

    def restore_outputs(self) -> list[gr.Component]:
        return [row.mask for row in self.rows]

    def preview_inputs(self) -> set[gr.Component]:
        controls = self.studio.controls
        canvas = {controls[path] for path in CANVAS if path in controls.by_path}
        return {self.studio.state, *canvas, *controls.components("regions.")}

    def preview(self, data: Mapping[gr.Component, Any]) -> Updates:
        """Each region's share of the canvas in its colour over the image on screen (or
        grey); what is wrong with the regions instead of a picture when they cannot be drawn."""
        session: Session = data[self.studio.state]
        panel = self.panel
        try:
            recipe = self.studio.controls.recipe(session.base, data)
        except StudioError as exc:
            return {panel.preview: None, panel.note: f"⚠ {exc}"}
        if not recipe.regions.active():
            return {panel.preview: None, panel.note: PREVIEW_OFF}
        try:
            image = self.studio.engine.region_preview(recipe, picture_of(session.current_image()))
        except Exception as exc:  # a preview never fails the page: it says why
            return {panel.preview: None, panel.note: f"⚠ {failure_message(exc)}"}
        return {panel.preview: image, panel.note: PREVIEW_NOTE}

    def show_count(self, count: float | None) -> Updates:
        """Region groups 1..`count` on show, the rest hidden (their values are kept)."""
        shown = int(count or 1)
        return {row.group: gr.update(visible=n < shown) for n, row in enumerate(self.rows)}

    def show_layout(self, layout: str | None) -> Updates:
        """The paint boxes on show for the painted layout only."""
        painted = layout == "painted"
        return {row.mask: gr.update(visible=painted) for row in self.rows}

    @property
    def rows(self) -> list[RegionRow]:
        return self.panel.rows.regions

    def store_mask(self, index: int) -> Callable[[Mapping[gr.Component, Any]], Updates]:
        """The handler of region `index`'s paint box: its picture (the white paint over the
        black canvas or an uploaded mask) is checked and stored, and the digest goes in the
        region's hidden box; a picture still on its way (None) changes nothing."""
        row = self.rows[index]

        def handler(data: Mapping[gr.Component, Any]) -> Updates:
            value = data.get(row.mask)
            path = value.get("composite") if isinstance(value, Mapping) else value
            if not path:
                return {}
            try:
                digest = store_mask(self.studio.engine, path, f"Region {index + 1}'s mask")
            except StudioError as exc:
                return self.studio.fail(exc, "Mask not stored.")
            return {row.digest: digest}

        return handler

    def clear_mask(self, index: int) -> Callable[[], Updates]:
        """The handler of a paint box's clear button: a black canvas again, and no mask."""
        row = self.rows[index]
        return lambda: {row.mask: blank_canvas(), row.digest: ""}

    def wire(self, after_render: Any = None) -> None:
        """Connect the accordion's events (inside the Blocks context); after `after_render`
        (the Generate event) the preview is drawn over the new image."""
        controls, panel = self.studio.controls, self.panel
        quick: dict[str, Any] = {"concurrency_limit": None, "api_visibility": "private"}
        count = panel.rows.count
        count.change(self.show_count, inputs=[count], outputs=[r.group for r in self.rows], **quick)
        layout = controls["regions.layout"]
        masks = [row.mask for row in self.rows]
        layout.change(self.show_layout, inputs=[layout], outputs=masks, **quick)
        status = [self.studio.panel.status, self.studio.panel.error]
        for index, row in enumerate(self.rows):
            # Gradio 6 sends a stroke's picture with `input` (or `change`, on a box that had
            # no value), an upload's with `upload`; the others come without one (skipped).
            triggers = [row.mask.input, row.mask.change, row.mask.upload]
            on_in_place(QUEUE, triggers, self.store_mask(index), {row.mask}, [row.digest, *status])
            row.mask.clear(self.clear_mask(index), outputs=[row.mask, row.digest], **quick)
        watched = [controls[p] for p in (*CANVAS, *LAYOUT) if p in controls.by_path]
        triggers = [c.change for c in [*watched, count, *(row.digest for row in self.rows)]]
        inputs, outputs = self.preview_inputs(), [panel.preview, panel.note]
        on_in_place(QUEUE, triggers, self.preview, inputs, outputs)
        if after_render is not None:
            after_render.then(
                self.preview, inputs=inputs, outputs=outputs, show_progress="hidden", **quick
            )
