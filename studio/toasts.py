"""Toasts (gr.Info / gr.Warning) with the whole message: Gradio renders their text as HTML,
so a message is escaped (a `<models>` folder must not vanish) and keeps its line breaks."""

from __future__ import annotations

import html

import gradio as gr


def toast_html(message: str) -> str:
    return html.escape(message).replace("\n", "<br>")


def warn(message: str) -> None:
    gr.Warning(toast_html(message))


def inform(message: str) -> None:
    gr.Info(toast_html(message))
