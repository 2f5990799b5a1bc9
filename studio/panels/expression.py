"""Tab "Expression" (suite group 6, specs §7): the Expression Editor's sliders, the 24
presets of seed 000 §7.3, a driving photo, and an A/B slider before/after the edit.

A slider move re-edits the result on screen at once: only the expression stage (keypoints,
warp, generator, paste-back) and the colour after it run; the face crop and its features
stay cached. The same tab edits an uploaded photo without any Flux weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine.recipe import Recipe
from studio.controls import Controls
from studio.session import Session

TITLE = "Expression"
PREFIX = "expression."
ROWS = (
    ("rotate_pitch", "rotate_yaw", "rotate_roll"),
    ("blink", "eyebrow"),
    ("wink", "smile"),
    ("pupil_x", "pupil_y"),
    ("aaa", "eee", "woo"),
)
NO_PRESET = "(choose a preset)"
BEFORE_STAGES = ("decode", "image")  # what the editor worked on: a render or an upload


@dataclass
class ExpressionPanel:
    """The tab's components that are not recipe fields."""

    preset: gr.Dropdown
    apply: gr.Button
    preset_note: gr.Markdown
    driving: gr.File
    driving_preview: gr.Image
    ab: gr.ImageSlider
    upload: gr.File


def build_expression_tab(
    controls: Controls, recipe: Recipe, presets: list[tuple[str, str]], status: str
) -> ExpressionPanel:
    """Lay out the tab (inside the current Tab context); `presets` are (label, note)."""
    gr.Markdown(
        "Change the finished face's expression and head pose without re-rendering: each "
        "slider re-edits the image on screen. All at 0 leaves the portrait untouched.",
        elem_classes=["ps-hint"],
    )
    gr.Markdown(status, elem_classes=["ps-hint"], elem_id="ps-expression-models")
    controls.add("expression.enabled", recipe)
    with gr.Row(equal_height=False, elem_id="ps-expr-preset-row"):
        choices = [NO_PRESET, *(label for label, _ in presets)]
        preset = gr.Dropdown(
            choices, value=NO_PRESET, label="Preset (seed 000 §7.3)", elem_id="ps-expr-preset",
            scale=3,
        )  # fmt: skip
        apply = gr.Button(
            "Apply preset", elem_id="ps-expr-apply", size="md", variant="secondary", scale=1
        )
    preset_note = gr.Markdown("", elem_id="ps-expr-preset-note", elem_classes=["ps-hint"])
    for row in ROWS:
        controls.add_in_row(recipe, *(PREFIX + name for name in row))
    controls.add("expression.src_ratio", recipe)
    with gr.Accordion("Driving face (copy from a photo)", open=False, elem_id="ps-expr-driving"):
        driving = gr.File(
            label="Driving photo", file_types=["image"], file_count="single", height=110,
            elem_id="ps-expr-driving-upload",
        )  # fmt: skip
        driving_preview = gr.Image(
            label="Driving face", interactive=False, height=160, elem_id="ps-expr-driving-img"
        )
        controls.add("expression.sample_parts", recipe)
        controls.add("expression.sample_ratio", recipe)
    controls.add("expression.crop_factor", recipe)
    ab = gr.ImageSlider(
        label="Before / after the expression", interactive=False, elem_id="ps-expression-ab"
    )
    upload = gr.File(
        label="Edit an uploaded photo (no diffusion model needed)", file_types=["image"],
        file_count="single", elem_id="ps-expr-upload", height=110,
    )  # fmt: skip
    return ExpressionPanel(preset, apply, preset_note, driving, driving_preview, ab, upload)


def before_after(session: Session) -> tuple[Any, Any] | None:
    """The image the editor worked on and its result, for the batch image on screen."""
    view = session.last
    if view is None or "expression" not in view.stages:
        return None
    before = next((view.stages[n] for n in BEFORE_STAGES if n in view.stages), None)
    after = view.stages["expression"]
    if not before or not after:
        return None
    index = min(session.selected, len(after) - 1)
    return before[index], after[index]
