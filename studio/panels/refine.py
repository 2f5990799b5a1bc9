"""Tab "Refine" (suite group 7, seed 000 §8; specs §8): one Impact-Pack detailer per region,
the chin optimiser, the identity guard, and what the detailers found and changed.

A change here re-runs the result on screen in place from the first refine stage it touches
(the render, the expression and the earlier regions stay cached); a detailer pass takes
seconds, so sliders re-run when they are let go, not while they move.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image, ImageDraw, ImageFont

from engine.recipe import Recipe
from engine.recipe_refine import REFINE_REGIONS
from studio.bindings_refine import REGION_TITLES
from studio.controls import Controls
from studio.session import Session

TITLE = "Refine"
PREFIX = "refine."
USUAL_DETECTOR = ("(usual for this region)", "")
# The engine's refine stages, in the order they run (after expression, before color).
REFINE_STAGES = (*(f"refine_{region}" for region in REFINE_REGIONS), "refine_chin")
BEFORE_STAGES = ("expression", "decode", "image")  # what the first detailer worked on
BOX_COLOURS = {
    "face": "#ff4d4d",
    "eyes": "#3fa9f5",
    "hands": "#ffb000",
    "hair": "#b05cff",
    "skin": "#2ecc71",
    "chin": "#ff66c4",
}
# Rows of each region's accordion, after its switch, prompt and detector: (caption, rows).
REGION_ROWS: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("", (("denoise", "steps", "guidance"),)),
    ("Detection", (("bbox_threshold", "drop_size"), ("crop_factor", "dilation"))),
    ("SAM", (("sam", "sam_threshold"),)),
    ("Blending", (("feather", "noise_mask", "noise_mask_feather"),)),
    ("Sizes", (("guide_size", "guide_size_for", "max_size"),)),
    ("", (("force_inpaint", "cycles", "fill_model"),)),
)
CHIN_ROWS = (
    ("mask_source", "text_prompt", "text_threshold"),
    ("denoise", "steps", "guidance"),
    ("size", "mask_expand"),
    ("context_factor", "blend_pixels", "fill_model"),
)


@dataclass
class RefinePanel:
    """The tab's components that are not recipe fields."""

    reference: gr.File
    reference_preview: gr.Image
    boxes: gr.Image
    ab: gr.ImageSlider
    upload: gr.File


def build_refine_tab(
    controls: Controls, recipe: Recipe, detectors: list[str], status: str
) -> RefinePanel:
    """Lay out the tab (inside the current Tab context); `detectors` are the model files
    the engine found, `status` what it says about the refine models."""
    gr.Markdown(
        "Re-render small regions of the finished portrait at a larger size and paste them "
        "back: switch a region on, keep its denoise around 0.15. Each change re-runs the "
        "image on screen from that region on.",
        elem_classes=["ps-hint"],
    )
    gr.Markdown(status, elem_classes=["ps-hint"], elem_id="ps-refine-models")
    controls.add("refine.enabled", recipe)
    choices = [USUAL_DETECTOR, *((name, name) for name in detectors)]
    for region in REFINE_REGIONS:
        _region_accordion(controls, recipe, region, choices)
    with gr.Accordion("Chin optimiser", open=False, elem_id="ps-refine-chin"):
        controls.add("refine.chin.enabled", recipe)
        controls.add("refine.chin.prompt", recipe)
        for row in CHIN_ROWS:
            controls.add_in_row(recipe, *(f"refine.chin.{name}" for name in row))
    reference, preview = _identity_guard(controls, recipe)
    boxes = gr.Image(
        label="Detections", interactive=False, height=320, elem_id="ps-refine-boxes",
    )  # fmt: skip
    ab = gr.ImageSlider(label="Before / after refining", interactive=False, elem_id="ps-refine-ab")
    upload = gr.File(
        label="Refine an uploaded photo", file_types=["image"], file_count="single",
        elem_id="ps-refine-upload", height=110,
    )  # fmt: skip
    return RefinePanel(reference, preview, boxes, ab, upload)


def _region_accordion(
    controls: Controls, recipe: Recipe, region: str, detectors: list[tuple[str, str]]
) -> None:
    at = f"refine.{region}."
    with gr.Accordion(REGION_TITLES[region], open=region == "face", elem_id=f"ps-refine-{region}"):
        controls.add(at + "enabled", recipe)
        controls.add(at + "prompt", recipe)
        controls.add(at + "detector", recipe, choices=detectors)
        for caption, rows in REGION_ROWS:
            with gr.Group(elem_classes=["ps-refine-group"]):
                if caption:
                    gr.Markdown(f"**{caption}**", elem_classes=["ps-hint"])
                for row in rows:
                    controls.add_in_row(recipe, *(at + name for name in row))


def _identity_guard(controls: Controls, recipe: Recipe) -> tuple[gr.File, gr.Image]:
    with gr.Accordion("Identity guard", open=False, elem_id="ps-refine-identity"):
        controls.add("refine.identity.enabled", recipe)
        controls.add_in_row(recipe, "refine.identity.threshold", "refine.identity.keep_below")
        with gr.Row(equal_height=False):
            reference = gr.File(
                label="Reference photo of the person (optional)", file_types=["image"],
                file_count="single", height=110, elem_id="ps-refine-reference-upload",
            )  # fmt: skip
            preview = gr.Image(
                label="Reference", interactive=False, height=160,
                elem_id="ps-refine-reference-img",
            )  # fmt: skip
    return reference, preview


# -- what the detailers worked on and found --------------------------------------------


def _ran(session: Session) -> tuple[Any, list[str]] | None:
    """(the stage images of the result on screen, its refine stages in order) or None."""
    view = session.last
    if view is None:
        return None
    stages = [name for name in REFINE_STAGES if name in view.stages]
    return (view.stages, stages) if stages else None


def _before(stages: Any, index: int) -> Any:
    images = next((stages[name] for name in BEFORE_STAGES if name in stages), None)
    return images[min(index, len(images) - 1)] if images else None


def before_after(session: Session) -> tuple[Any, Any] | None:
    """The image before the first refine stage and after the last, for the batch image on
    screen; None when nothing was refined."""
    found = _ran(session)
    if found is None:
        return None
    stages, names = found
    after = stages[names[-1]]
    if not after:
        return None
    index = min(session.selected, len(after) - 1)
    before = _before(stages, index)
    return None if before is None else (before, after[index])


def detections_image(session: Session) -> Image.Image | None:
    """The image the detailers worked on with every box they found drawn on it (one colour
    per region), for the batch image on screen; None when nothing was refined."""
    found = _ran(session)
    result = getattr(session.last, "result", None)
    if found is None or result is None:
        return None
    stages, names = found
    index = session.selected
    before = _before(stages, index)
    if before is None:
        return None
    found_boxes = getattr(result.report, "detections", None) or {}
    image = before.convert("RGB")  # a copy: the stage's own image stays as it was
    for name in names:
        per_image = found_boxes.get(name) or []
        if per_image:
            boxes = per_image[min(index, len(per_image) - 1)]
            draw_boxes(image, boxes, BOX_COLOURS.get(name.removeprefix("refine_"), "#ffffff"))
    return image


def draw_boxes(image: Image.Image, boxes: Iterable[dict], colour: str) -> None:
    """Draw detections ({"label", "box": [x1, y1, x2, y2], "score"}) on `image` in place."""
    draw = ImageDraw.Draw(image)
    width = max(2, round(min(image.size) / 256))
    font = ImageFont.load_default(size=max(12, round(min(image.size) / 40)))
    for found in boxes:
        x1, y1, x2, y2 = (float(v) for v in found["box"])
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        text = f"{found.get('label', '')} {float(found.get('score', 0.0)):.2f}".strip()
        _, _, right, bottom = draw.textbbox((0, 0), text, font=font)
        y = y1 - bottom - width if y1 >= bottom + width else y1  # above the box if it fits
        draw.rectangle((x1, y, x1 + right + 2 * width, y + bottom + width), fill=colour)
        draw.text((x1 + width, y), text, fill="#000000", font=font)
