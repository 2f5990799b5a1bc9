"""Tab "Latent" (suite group 4 and the "Latent Noise Injection" panel, seed 000 §3.5).

The Detail Daemon and Lying Sigma windows (their strengths sit on the Settings tab, as in
the suite), then the latent second pass. The panel's sliders have no published node
behind them: each control's info states the mapping the engine uses (specs §10).
"""

from __future__ import annotations

import gradio as gr

from engine.recipe import Recipe
from studio.controls import Controls

TITLE = "Latent"

DETAIL_DAEMON_SHAPE = (
    ("start", "end"),
    ("bias", "exponent"),
    ("start_offset", "end_offset"),
    ("fade", "cfg_scale_override"),
)
# One per row: each info text states the engine's mapping and needs the width.
SECOND_PASS = (
    "upscale",
    "guidance",
    "denoise",
    "speed_accuracy",
    "sharpen",
    "rough_smooth",
    "noise_strength",
    "noise_seed",
)


def build_latent_tab(controls: Controls, recipe: Recipe) -> None:
    """Lay out the tab's controls (inside the current Tab context)."""
    gr.Markdown(
        "Sigma windows for the micro-sampler controls, then an optional second pass over "
        "the latent before decoding.",
        elem_classes=["ps-hint"],
    )
    with gr.Accordion("Detail Daemon window and shape", open=True, elem_id="ps-dd-shape"):
        for left, right in DETAIL_DAEMON_SHAPE:
            controls.add_in_row(
                recipe, f"settings.detail_daemon.{left}", f"settings.detail_daemon.{right}"
            )
        controls.add("settings.detail_daemon.smooth", recipe)
    with gr.Accordion("Lying Sigma window", open=True, elem_id="ps-ls-window"):
        controls.add_in_row(
            recipe, "settings.lying_sigma.start_percent", "settings.lying_sigma.end_percent"
        )
    with gr.Group(elem_id="ps-latent-pass", elem_classes=["ps-latent-pass"]):
        gr.Markdown(
            "**Second pass** · latent upscale, noise injection and a short img2img re-render",
            elem_classes=["ps-hint"],
        )
        controls.add("latent.enabled", recipe)
        for name in SECOND_PASS:
            controls.add(f"latent.{name}", recipe)
