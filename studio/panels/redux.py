"""Tab "Redux blend" (suite group 1, seed 000 §3): two reference portraits blended into the
conditioning, their strengths (and, in a closed accordion each, ReduxAdvanced's settings and
an attention bias), the blend mode and the prompt balance.

The uploads are file boxes, like the img2img start image: the engine checks and stores each
picture and says what is wrong with a bad one, and the stored digest goes into the recipe
(redux.image1 / image2, kept in the session's base recipe). Under each preview: advice on
the reference against the suite's image guidelines (`engine.redux.reference_hints`, which
imports only Pillow).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine.errors import StudioError
from engine.recipe import Recipe
from engine.recipe_json import set_path
from engine.redux import reference_hints
from studio.controls import Controls
from studio.panels import results as res
from studio.session import Session
from studio.toasts import warn
from studio.uploads import store_upload, stored_image

TITLE = "Redux blend"
REFERENCES = (1, 2)
ADVANCED_FIELDS = (
    "downsampling_factor",
    "downsampling_function",
    "weight",
    "image_mode",
    "attention_bias",
)
# Seed 000 §5.4: "0.45-0.55 retains identity for img2img Redux workflows".
IDENTITY_DENOISE = 0.5
GUIDELINES = (
    "**Image guidelines** (seed 000 §3.3): shoulders-up framing, neutral light, little "
    "occlusion; align gaze and head tilt across both references; ≥ 2048 px square "
    "recommended (at least 1024 px). Only rights-cleared pictures for commercial work."
)
START_INFO = (
    "Sets the img2img start image (Size / LoRA / Prompt > Start image) to reference 1. "
    "**Settings > Denoise** then decides how much of it is repainted: 0.45–0.55 keeps the "
    "identity, 0.3–0.4 the texture too, 1.0 ignores the picture."
)

Updates = dict[gr.Component, Any]


@dataclass
class ReferenceBox:
    """One reference's upload, stored preview and advice."""

    upload: gr.File
    preview: gr.Image
    hints: gr.Markdown


@dataclass
class ReduxPanel:
    """The tab's components that are not recipe fields."""

    references: dict[int, ReferenceBox]
    advanced: dict[int, gr.Accordion]  # each reference's ReduxAdvanced settings, closed
    start: gr.Button
    start_info: gr.Markdown


def build_redux_tab(controls: Controls, recipe: Recipe) -> ReduxPanel:
    """Lay out the tab's controls (inside the current Tab context)."""
    gr.Markdown(GUIDELINES, elem_classes=["ps-hint"], elem_id="ps-redux-guidelines")
    controls.add("redux.enabled", recipe)
    boxes, advanced = {}, {}
    with gr.Row(equal_height=False):
        for n in REFERENCES:
            with gr.Column(min_width=220):
                boxes[n] = _reference_box(n)
                controls.add(f"redux.strength{n}", recipe)
                advanced[n] = _advanced_accordion(n, controls, recipe)
    controls.add("redux.mode", recipe)
    controls.add("redux.prompt_balance", recipe)
    with gr.Group(elem_id="ps-redux-start-group"):
        start = gr.Button("Start from reference 1 (img2img)", elem_id="ps-redux-start", size="sm")
        start_info = gr.Markdown(
            START_INFO, elem_id="ps-redux-start-info", elem_classes=["ps-hint"]
        )
    return ReduxPanel(boxes, advanced, start, start_info)


def _advanced_accordion(n: int, controls: Controls, recipe: Recipe) -> gr.Accordion:
    with gr.Accordion(
        "Advanced (ReduxAdvanced)", open=False, elem_id=f"ps-redux-advanced-{n}"
    ) as accordion:
        for name in ADVANCED_FIELDS:
            controls.add(f"redux.advanced{n}.{name}", recipe)
    return accordion


def _reference_box(n: int) -> ReferenceBox:
    # A file box, not gr.Image: the engine checks the upload and says what is wrong, where
    # gr.Image would fail inside Gradio on a corrupt or oversized picture.
    upload = gr.File(
        label=f"Reference {n}",
        file_types=["image"],
        file_count="single",
        elem_id=f"ps-redux-upload-{n}",
        height=110,
    )
    preview = gr.Image(
        label=f"Stored reference {n}",
        interactive=False,
        format="png",
        height=200,
        elem_id=f"ps-redux-preview-{n}",
    )
    hints = gr.Markdown("", elem_id=f"ps-redux-hints-{n}", elem_classes=["ps-hint", "ps-warn"])
    return ReferenceBox(upload, preview, hints)


def hints_markdown(image: Any) -> str:
    """The suite's advice on one reference, one line each ("" when it meets the guidelines)."""
    return "\n\n".join(f"⚠ {hint}" for hint in reference_hints(image))


# -- handlers --------------------------------------------------------------------------------


@dataclass(eq=False)
class ReduxCallbacks:
    """Uploads, clears and "start from this reference"; no per-session data lives here."""

    engine: Any
    controls: Controls
    panel: ReduxPanel
    state: gr.State
    results: res.ResultsPanel
    fail: Callable[[BaseException], Updates]
    source_preview: gr.Image | None = None

    def upload(self, n: int) -> Callable[[Session, str | None], Updates]:
        """The handler for reference `n`'s upload: check, store, preview, advise."""

        def handler(session: Session, path: str | None) -> Updates:
            if not path:
                return {}
            box = self.panel.references[n]
            try:
                digest = store_upload(self.engine, path, f"Reference {n}")
                image = self.engine.load_image(digest)
            except StudioError as exc:
                return self.fail(exc)  # the earlier reference stays in the recipe
            session.base = set_path(session.base, f"redux.image{n}", digest)
            hints = hints_markdown(image)
            text = f"Reference {n} stored ({image.width}×{image.height}); Redux is on."
            return {
                **res.show_notice(self.results, text),
                self.controls["redux.enabled"]: True,
                box.preview: image,
                box.hints: hints,
            }

        return handler

    def clear(self, n: int) -> Callable[[Session], Updates]:
        """The handler for reference `n`'s clear: forget it; Redux goes off with none left."""

        def handler(session: Session) -> Updates:
            box = self.panel.references[n]
            session.base = set_path(session.base, f"redux.image{n}", "")
            redux = session.base.redux
            updates: Updates = {box.preview: None, box.hints: ""}
            if not (redux.image1 or redux.image2):
                updates[self.controls["redux.enabled"]] = False
                text = f"Reference {n} removed; with no reference left Redux is off."
            else:
                text = f"Reference {n} removed; Redux goes on with the other one."
            return {**updates, **res.show_status(self.results, text)}

        return handler

    def start_from_reference(self, session: Session, denoise: float | None) -> Updates:
        """Make reference 1 the img2img start image; 1.0 denoise would ignore it, so the
        suite's identity-keeping 0.5 replaces it then (and the page says so)."""
        digest = session.base.redux.image1
        if not digest:
            warn("Upload reference 1 first: it becomes the img2img start image.")
            text = "Nothing changed: there is no reference 1 yet. Upload one, then press again."
            return {
                self.panel.start_info: "**Upload reference 1 first.** " + START_INFO,
                **res.show_status(self.results, text),
            }
        session.base = set_path(session.base, "source.image", digest)
        denoise_box = self.controls["settings.denoise"]
        updates: Updates = {self.controls["source.kind"]: True}
        if self.source_preview is not None:
            updates[self.source_preview] = stored_image(self.engine, digest)
        text = "Generate now starts from reference 1 (img2img)"
        if denoise is None or denoise >= 0.9:
            updates[denoise_box] = IDENTITY_DENOISE
            text += (
                f"; Settings > Denoise was {denoise or 1.0:.2f}, which repaints everything, "
                f"so it is now {IDENTITY_DENOISE:.2f} (0.45–0.55 keeps the identity)."
            )
        else:
            text += f" at Settings > Denoise {denoise:.2f}."
        updates[self.panel.start_info] = f"**{text}** {START_INFO}"
        return {**updates, **res.show_status(self.results, text)}

    def restored(self, recipe: Recipe) -> Updates:
        """Previews and advice for the references of a restored recipe."""
        updates: Updates = {}
        for n, box in self.panel.references.items():
            image = stored_image(self.engine, getattr(recipe.redux, f"image{n}"))
            updates[box.preview] = image
            updates[box.hints] = hints_markdown(image) if image is not None else ""
        return updates

    def outputs(self) -> list[gr.Component]:
        """What `restored` updates."""
        return [c for b in self.panel.references.values() for c in (b.preview, b.hints)]

    def wire(self) -> None:
        """Attach the tab's events: quick, never behind a render, not in the API."""
        quick: dict[str, Any] = {"concurrency_limit": None, "api_visibility": "private"}
        status, error = self.results.status, self.results.error
        enabled = self.controls["redux.enabled"]
        for n, box in self.panel.references.items():
            box.upload.upload(
                self.upload(n),
                inputs=[self.state, box.upload],
                outputs=[status, error, enabled, box.preview, box.hints],
                **quick,
            )
            box.upload.clear(
                self.clear(n),
                inputs=[self.state],
                outputs=[status, enabled, box.preview, box.hints],
                **quick,
            )
        source = [self.source_preview] if self.source_preview is not None else []
        self.panel.start.click(
            self.start_from_reference,
            inputs=[self.state, self.controls["settings.denoise"]],
            outputs=[
                status,
                self.controls["source.kind"],
                self.controls["settings.denoise"],
                self.panel.start_info,
                *source,
            ],
            **quick,
        )
