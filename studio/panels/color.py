"""Tab "Color" (suite group 10): Exposure -> Grain -> Brightness/Contrast/Saturation -> LUT.

Every control here re-grades the last image at once; only the colour stage runs.
"""

from __future__ import annotations

from collections.abc import Iterable

import gradio as gr

from engine.recipe import Recipe
from studio.controls import Controls

TITLE = "Color"
PREFIX = "color."
NO_LUT = ("(none)", "")


def build_color_tab(controls: Controls, recipe: Recipe, luts: Iterable[str]) -> gr.File:
    """Lay out the colour chain; returns the "grade an uploaded image" file box."""
    gr.Markdown(
        "Pure RGB work on the final image: changes re-grade at once and never re-run diffusion.",
        elem_classes=["ps-hint"],
    )
    controls.add("color.enabled", recipe)
    with gr.Group():
        controls.add("color.exposure.enabled", recipe)
        controls.add("color.exposure.exposure", recipe)
    with gr.Group():
        controls.add("color.grain.enabled", recipe)
        controls.add_in_row(recipe, "color.grain.power", "color.grain.scale")
        controls.add_in_row(recipe, "color.grain.saturation", "color.grain.seed")
    with gr.Group():
        controls.add("color.tone.enabled", recipe)
        controls.add("color.tone.brightness", recipe)
        controls.add("color.tone.contrast", recipe)
        controls.add("color.tone.saturation", recipe)
    with gr.Group():
        controls.add("color.lut.enabled", recipe)
        controls.add("color.lut.file", recipe, choices=[NO_LUT, *((n, n) for n in luts)])
        controls.add_in_row(recipe, "color.lut.strength", "color.lut.color_space")
    return gr.File(
        label="Grade an uploaded image (no diffusion model needed)",
        file_types=["image"],
        file_count="single",
        elem_id="ps-grade-upload",
        height=120,
    )
