"""Tab "Size / LoRA / Prompt" (suite group 2): prompt, canvas size, resolution, batch."""

from __future__ import annotations

import gradio as gr

from engine.recipe import Recipe
from studio.bindings import Controls

TITLE = "Size / LoRA / Prompt"


def build_prompt_tab(controls: Controls, recipe: Recipe) -> None:
    """Lay out the tab's controls (inside the current Tab context)."""
    controls.add("prompt.prompt", recipe)
    with gr.Row():
        controls.add("prompt.width", recipe)
        controls.add("prompt.height", recipe)
    with gr.Row():
        controls.add("prompt.resolution", recipe)
        controls.add("prompt.batch_size", recipe)
