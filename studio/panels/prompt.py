"""Tab "Size / LoRA / Prompt" (suite group 2): the LoRA stack, canvas size, resolution,
batch, and an optional start image (img2img). The prompt (and the prompt as encoded, with
the LoRA trigger words in front) and the negative prompt sit above the tabs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine.recipe import Recipe
from studio.controls import Controls
from studio.panels import loras

TITLE = "Size / LoRA / Prompt"


@dataclass
class PromptPanel:
    """The tab's components that are not recipe fields."""

    source_upload: gr.File
    source_preview: gr.Image
    effective_prompt: gr.Markdown
    loras: loras.LoraPanel


def build_prompt_box(controls: Controls, recipe: Recipe) -> gr.Markdown:
    """The prompt, the prompt as encoded, and the negative prompt: above the tabs, always in
    view. Returns the "as encoded" line (the LoRA stack's trigger words fill it)."""
    with gr.Group(elem_id="ps-prompt-box"):
        controls.add("prompt.prompt", recipe)
        effective = gr.Markdown("", elem_id="ps-effective-prompt", elem_classes=["ps-hint"])
        with gr.Accordion("Negative prompt", open=False, elem_id="ps-negative-box"):
            controls.add("prompt.negative_prompt", recipe)
    return effective


def build_prompt_tab(
    controls: Controls, recipe: Recipe, engine: Any = None, effective: gr.Markdown | None = None
) -> PromptPanel:
    """Lay out the tab's controls (inside the current Tab context); `engine` lists the
    LoRA files and the library (none without it); the prompt itself is above the tabs
    (`build_prompt_box`), and built here only when `effective` is not given."""
    if effective is None:
        effective = build_prompt_box(controls, recipe)
    stack = loras.build_lora_stack(controls, recipe, engine)
    controls.add_in_row(recipe, "prompt.width", "prompt.height")
    controls.add_in_row(recipe, "prompt.resolution", "prompt.batch_size")
    with gr.Accordion("Start image (img2img)", open=False, elem_id="ps-source"):
        with gr.Row(equal_height=True):
            # A file box, not gr.Image: the engine checks the upload and says what is wrong,
            # where gr.Image would fail inside Gradio on a corrupt or oversized picture.
            upload = gr.File(
                label="Source image",
                file_types=["image"],
                file_count="single",
                elem_id="ps-source-upload",
                height=120,
            )
            preview = gr.Image(
                label="Stored start image",
                interactive=False,
                format="png",
                height=160,
                elem_id="ps-source-preview",
            )
        controls.add("source.kind", recipe)
    return PromptPanel(upload, preview, effective, stack)
