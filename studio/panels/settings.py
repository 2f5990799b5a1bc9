"""Tab "Settings" (suite group 3): sampler, scheduler, steps, guidance, seed, shift."""

from __future__ import annotations

import random

import gradio as gr

from engine.recipe import MAX_SEED, Recipe
from studio.bindings import Controls

TITLE = "Settings"


def build_settings_tab(controls: Controls, recipe: Recipe) -> gr.Button:
    """Lay out the tab's controls; returns the "new random seed" button."""
    with gr.Row():
        controls.add("settings.sampler", recipe)
        controls.add("settings.scheduler", recipe)
    controls.add("settings.steps", recipe)
    controls.add("settings.guidance", recipe)
    with gr.Row(equal_height=True):
        controls.add("settings.seed", recipe)
        new_seed = gr.Button("New random seed", size="sm", elem_id="ps-new-seed", scale=0)
    with gr.Row():
        controls.add("settings.max_shift", recipe)
        controls.add("settings.base_shift", recipe)
    return new_seed


def random_seed() -> int:
    """A fresh seed that a browser can hold exactly (below 2**53)."""
    return random.SystemRandom().randint(0, MAX_SEED)
