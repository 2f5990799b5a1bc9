"""How a post-processing tab's events queue: one at a time per tab and the newest wins,
never behind a render's queue slot (the engine's model lock orders them with a running
render), private to the page."""

from __future__ import annotations

from typing import Any

import gradio as gr


def on_in_place(
    queue: str, triggers: list[Any], handler: Any, inputs: set, outputs: list[gr.Component]
) -> None:
    """Wire `handler` to `triggers` on the tab's own queue `queue`."""
    gr.on(
        triggers,
        handler,
        inputs=inputs,
        outputs=outputs,
        concurrency_limit=1,
        concurrency_id=queue,
        trigger_mode="always_last",
        api_visibility="private",
        show_progress="hidden",
    )
