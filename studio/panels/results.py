"""Results: batch gallery, A/B slider, run report, progress, history, restore and download."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from engine.recipe_json import recipe_to_json
from studio.session import RunView, Session

PREVIOUS = "previous run (final)"
FINAL = "final"


@dataclass
class ResultsPanel:
    """The components of the results column."""

    status: gr.Markdown
    error: gr.Markdown
    gallery: gr.Gallery
    report: gr.Markdown
    preview: gr.Image
    compare_a: gr.Dropdown
    compare_b: gr.Dropdown
    slider: gr.ImageSlider
    download: gr.DownloadButton
    restore: gr.File
    history: gr.Gallery


def build_results() -> ResultsPanel:
    """Lay out the results column (inside the current Blocks context)."""
    status = gr.Markdown("Ready.", elem_id="ps-status")
    error = gr.Markdown("", visible=False, elem_id="ps-error", elem_classes=["ps-error"])
    gallery = gr.Gallery(
        label="Batch",
        format="png",
        columns=2,
        fit_columns=False,
        height="auto",
        object_fit="contain",
        elem_id="ps-gallery",
        interactive=False,
    )
    report = gr.Markdown("", elem_id="ps-report", elem_classes=["ps-report"])
    with gr.Accordion("A/B compare", open=True):
        with gr.Row():
            compare_a = gr.Dropdown(label="A (left)", choices=[], elem_id="ps-compare-a")
            compare_b = gr.Dropdown(label="B (right)", choices=[], elem_id="ps-compare-b")
        slider = gr.ImageSlider(
            label="A | B", format="png", interactive=False, elem_id="ps-ab", max_height=520
        )
    with gr.Accordion("Live preview", open=False):
        preview = gr.Image(
            label="Sampling preview",
            format="jpeg",
            interactive=False,
            height=256,
            elem_id="ps-preview",
        )
    with gr.Row():
        restore = gr.File(
            label="Restore from PNG / recipe JSON",
            file_types=[".png", ".json"],
            file_count="single",
            elem_id="ps-restore",
            height=120,
        )
        download = gr.DownloadButton(
            "Download recipe JSON", value=None, interactive=False, elem_id="ps-download"
        )
    history = gr.Gallery(
        label="This session",
        format="png",
        columns=6,
        height=200,
        preview=False,
        fit_columns=False,
        elem_id="ps-history",
        interactive=False,
    )
    return ResultsPanel(
        status=status,
        error=error,
        gallery=gallery,
        report=report,
        preview=preview,
        compare_a=compare_a,
        compare_b=compare_b,
        slider=slider,
        download=download,
        restore=restore,
        history=history,
    )


def report_markdown(view: RunView) -> str:
    """The one-line run report, then the engine's notes (rounded sizes, ...)."""
    lines = [view.report_line]
    lines += [f"- {note}" for note in view.notes]
    return "\n".join(lines)


def compare_choices(session: Session) -> list[str]:
    """Every image the A/B slider can show for this session's last run."""
    if session.last is None:
        return []
    names = list(session.last.stages)
    return names + [PREVIOUS] if session.previous_finals else names


def compare_pair(session: Session) -> tuple[str, str] | None:
    """The A/B choice: the person's, while still valid; else first stage vs last stage."""
    names = compare_choices(session)
    if not names:
        return None
    if session.compare and all(n in names for n in session.compare):
        return session.compare
    stages = [n for n in names if n != PREVIOUS]
    first = PREVIOUS if len(stages) == 1 and PREVIOUS in names else stages[0]
    return first, stages[-1]


def compare_image(session: Session, name: str) -> Any:
    """The image called `name` for the selected batch index (None when unknown)."""
    if session.last is None:
        return None
    images = session.previous_finals if name == PREVIOUS else session.last.stages.get(name)
    if not images:
        return None
    return images[min(session.selected, len(images) - 1)]


def slider_value(session: Session) -> tuple[Any, Any] | None:
    pair = compare_pair(session)
    if pair is None:
        return None
    a, b = (compare_image(session, n) for n in pair)
    return None if a is None or b is None else (a, b)


def recipe_file(view: RunView) -> str:
    """Write the rendered recipe to a content-named temp file for the download button."""
    text = recipe_to_json(view.rendered)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "portrait-studio-recipes"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"recipe-{digest}.json"
    if not path.exists():
        tmp = path.with_suffix(".part")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return str(path)


def show_run(panel: ResultsPanel, session: Session) -> dict[gr.Component, Any]:
    """Updates that show the session's last run everywhere in the panel."""
    view = session.last
    assert view is not None
    pair = compare_pair(session)
    choices = compare_choices(session)
    return {
        **show_notice(panel, f"Done · run {session.runs}"),
        panel.gallery: view.finals,
        panel.report: report_markdown(view),
        panel.compare_a: gr.update(choices=choices, value=pair[0] if pair else None),
        panel.compare_b: gr.update(choices=choices, value=pair[1] if pair else None),
        panel.slider: slider_value(session),
        panel.download: gr.update(value=recipe_file(view), interactive=True),
        panel.history: list(session.history),
    }


def show_compare(panel: ResultsPanel, session: Session) -> dict[gr.Component, Any]:
    return {panel.slider: slider_value(session)}


def show_progress(panel: ResultsPanel, progress: Any) -> dict[gr.Component, Any]:
    """Updates for one engine Progress event (stage, step/total, message, preview)."""
    text = f"**{progress.stage}**"
    if progress.total:
        text += f" · step {progress.step}/{progress.total}"
    if progress.message:
        text += f" · {progress.message}"
    updates: dict[gr.Component, Any] = {panel.status: text}
    if progress.preview is not None:
        updates[panel.preview] = progress.preview
    return updates


def show_status(panel: ResultsPanel, text: str) -> dict[gr.Component, Any]:
    return {panel.status: text}


def show_notice(panel: ResultsPanel, text: str) -> dict[gr.Component, Any]:
    """A status line after something went right, which also hides an earlier error."""
    return {panel.status: text, panel.error: gr.update(value="", visible=False)}


def show_error(panel: ResultsPanel, message: str) -> dict[gr.Component, Any]:
    """A visible message; every earlier output stays as it was."""
    first, _, rest = message.partition("\n")
    text = f"**Could not render.** {first}" + (f"\n\n{rest}" if rest else "")
    return {
        panel.status: "Not rendered: see the message below.",
        panel.error: gr.update(value=text, visible=True),
    }


def outputs(panel: ResultsPanel) -> list[gr.Component]:
    """Every component a run can update."""
    return [
        panel.status,
        panel.error,
        panel.gallery,
        panel.report,
        panel.preview,
        panel.compare_a,
        panel.compare_b,
        panel.slider,
        panel.download,
        panel.history,
    ]
