"""The "Regions" accordion on the "Size / LoRA / Prompt" tab (seed 001, issue 14): two or more
characters in one portrait. The prompt above the tabs stays the base prompt of the whole
picture; each region adds its own prompt and LoRA rows over its share of the canvas, a
left/right or top/bottom split (softened by a gradient and a blur) or a painted mask.

The settings are bound fields (studio/bindings_regions.py); the regions are `RegionRows`, a
field group of the page's controls (studio/region_rows.py). The mask preview shows each
region's share of the canvas in its colour over the last image (or grey).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from engine.recipe import Recipe
from engine.recipe_regions import MAX_REGIONS
from studio.controls import Controls
from studio.panels.loras import file_choices
from studio.region_rows import RegionRows, build_region_rows, shown_count

TITLE = "Regions"
HINT = (
    "Two characters in one portrait: the prompt above is the base prompt of the whole "
    "picture (the scene, the light); each region adds its own prompt and LoRAs over its share "
    "of the canvas. A region LoRA's model strength acts on that region only, its CLIP "
    "strength on the region's own prompt (seed 001: model 0.70, CLIP 0.90)."
)
COUNT_INFO = "How many regions (up to 4); the first two are left and right (or top and bottom)."
PREVIEW_LABEL = "Mask preview"
PREVIEW_OFF = "Switch Regions on to see each region's share of the canvas here."
PREVIEW_NOTE = (
    "Region 1 orange, 2 blue, 3 green, 4 magenta, over the last image (or grey); a white line "
    "where a 16-px token changes region."
)


@dataclass
class RegionsPanel:
    """The accordion's components that are not bound scalar fields."""

    rows: RegionRows
    preview: gr.Image
    note: gr.Markdown


def build_regions_accordion(controls: Controls, recipe: Recipe, loras: list[str]) -> RegionsPanel:
    """Lay out the accordion (inside the current Tab context); `loras` are the LoRA files the
    engine found. Registers the regions with `controls` as a field group."""
    with gr.Accordion(TITLE, open=False, elem_id="ps-regions"):
        gr.Markdown(HINT, elem_classes=["ps-hint"], elem_id="ps-regions-hint")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300):
                with gr.Row():
                    controls.add("regions.enabled", recipe)
                    count = gr.Slider(
                        minimum=1, maximum=MAX_REGIONS, step=1, precision=0,
                        value=shown_count(len(recipe.regions.regions)), label="Regions",
                        info=COUNT_INFO, elem_id="ps-regions-count",
                    )  # fmt: skip
                controls.add("regions.layout", recipe)
                controls.add_in_row(recipe, "regions.gradient", "regions.blur")
                controls.add_in_row(recipe, "regions.start", "regions.end")
                controls.add_in_row(recipe, "regions.isolate", "regions.text_tokens")
            with gr.Column(scale=2, min_width=220):
                preview = gr.Image(
                    value=None, label=PREVIEW_LABEL, interactive=False, height=240,
                    elem_id="ps-regions-preview",
                )  # fmt: skip
                note = gr.Markdown(PREVIEW_OFF, elem_classes=["ps-hint"], elem_id="ps-regions-note")
        painted = recipe.regions.layout == "painted"
        regions = build_region_rows(recipe, file_choices(loras), painted)
    rows = RegionRows(count, regions)
    controls.add_group(rows)
    return RegionsPanel(rows, preview, note)
