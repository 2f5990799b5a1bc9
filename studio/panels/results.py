"""Results, first and large: the current image (the live preview while sampling, in the
same place), its progress bar, errors right above it, the run report, Keep as new and the
recipe download; below, the batch, the A/B slider, the history and restore."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from engine.recipe_json import recipe_to_json
from studio.display import display_file
from studio.panels import compare
from studio.progress import ProgressView, finished_html, running_html
from studio.session import RunView, Session

Updates = dict[gr.Component, Any]
FINAL = compare.FINAL


@dataclass
class ResultsPanel:
    """The components of the results column."""

    status: gr.Markdown
    error: gr.Markdown
    progress: gr.HTML
    current: gr.Image
    report: gr.Markdown
    keep: gr.Button
    download: gr.DownloadButton
    gallery: gr.Gallery
    ab: gr.Accordion
    compare_a: gr.Dropdown
    compare_b: gr.Dropdown
    ab_note: gr.Markdown
    slider: gr.ImageSlider
    history: gr.Gallery
    history_delete: gr.Button
    restore: gr.File


def build_results() -> ResultsPanel:
    """Lay out the results column (inside the current Blocks context)."""
    status = gr.Markdown("Ready.", elem_id="ps-status")
    error = gr.Markdown("", visible=False, elem_id="ps-error", elem_classes=["ps-error"])
    progress = gr.HTML("", elem_id="ps-progress-box")
    current = gr.Image(
        label="Current result",
        interactive=False,
        type="filepath",
        height="min(68vh, 720px)",
        buttons=["fullscreen"],
        elem_id="ps-current",
    )
    with gr.Row(elem_id="ps-result-actions"):
        keep = gr.Button("Keep as new", size="sm", interactive=False, elem_id="ps-keep")
        download = gr.DownloadButton(
            "Download recipe JSON", value=None, size="sm", interactive=False, elem_id="ps-download"
        )
    report = gr.Markdown("", elem_id="ps-report", elem_classes=["ps-report"])
    gallery = gr.Gallery(
        label="Batch (click one to show it large)",
        columns=4,
        height="auto",
        object_fit="contain",
        visible=False,
        elem_id="ps-gallery",
        interactive=False,
    )
    with gr.Accordion("A/B compare", open=False, elem_id="ps-ab-box") as ab:
        with gr.Row():
            compare_a = gr.Dropdown(label="A (left)", choices=[], elem_id="ps-compare-a")
            compare_b = gr.Dropdown(label="B (right)", choices=[], elem_id="ps-compare-b")
        ab_note = gr.Markdown("", elem_id="ps-ab-note", elem_classes=["ps-hint"])
        slider = gr.ImageSlider(
            label="A | B", type="filepath", interactive=False, elem_id="ps-ab", max_height=560
        )
    with gr.Accordion("History (kept results, newest first)", open=True, elem_id="ps-hist-box"):
        history = gr.Gallery(
            label="Click one to restore its recipe and show it",
            columns=6,
            height=220,
            preview=False,
            allow_preview=False,
            elem_id="ps-history",
            interactive=False,
        )
        history_delete = gr.Button(
            "Delete the entry last clicked", size="sm", elem_id="ps-history-delete"
        )
    restore = gr.File(
        label="Restore from a studio PNG or a recipe JSON",
        file_types=[".png", ".json"],
        file_count="single",
        elem_id="ps-restore",
        height=100,
    )
    return ResultsPanel(
        status, error, progress, current, report, keep, download, gallery, ab, compare_a,
        compare_b, ab_note, slider, history, history_delete, restore,
    )  # fmt: skip


def report_markdown(view: RunView) -> str:
    """The one-line run report, then the engine's notes (rounded sizes, ...)."""
    return "\n".join([view.report_line, *(f"- {note}" for note in view.notes)])


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


def show_current(panel: ResultsPanel, session: Session) -> Updates:
    image = session.current_image()
    return {panel.current: display_file(image) if image is not None else None}


def show_regrade(
    panel: ResultsPanel, session: Session, notice: str = "Re-graded · grade {n}"
) -> Updates:
    """Only what a re-grade changes: the image on screen, the report, the recipe file.
    `notice` is the status line, {n} the count of changes in place."""
    view = session.last
    assert view is not None
    updates = {
        **show_notice(panel, notice.format(n=session.grades)),
        **show_current(panel, session),
        panel.report: report_markdown(view),
        panel.download: gr.update(value=recipe_file(view), interactive=True),
    }
    if session.ab_open:
        updates.update(compare.slider_updates(panel.slider, panel.ab_note, session))
    return updates


def show_run(panel: ResultsPanel, session: Session, history: Updates) -> Updates:
    """Updates that show a new result everywhere in the panel (`history` updates the
    history gallery)."""
    view = session.last
    assert view is not None
    names = compare.compare_choices(session)
    pair = compare.default_pair(session, names) or (None, None)
    several = len(view.finals) > 1
    return {
        **show_notice(panel, f"Done · run {session.runs}"),
        **show_current(panel, session),
        **history,
        panel.gallery: gr.update(value=view.files or view.finals, visible=several),
        panel.report: report_markdown(view),
        panel.keep: gr.update(interactive=True),
        panel.compare_a: gr.update(choices=names, value=pair[0]),
        panel.compare_b: gr.update(choices=names, value=pair[1]),
        **compare.slider_updates(panel.slider, panel.ab_note, session),
        panel.download: gr.update(value=recipe_file(view), interactive=True),
    }


def show_progress(panel: ResultsPanel, view: ProgressView, preview: Any) -> Updates:
    """The bar, and the step preview in the current image's place."""
    updates: Updates = {panel.progress: running_html(view)}
    if preview is not None:
        updates[panel.current] = display_file(preview)
    return updates


def show_finished(panel: ResultsPanel, seconds: float) -> Updates:
    return {panel.progress: finished_html(seconds)}


def show_status(panel: ResultsPanel, text: str) -> Updates:
    return {panel.status: text}


def show_notice(panel: ResultsPanel, text: str) -> Updates:
    """A status line after something went right, which also hides an earlier error."""
    return {panel.status: text, panel.error: gr.update(value="", visible=False)}


def show_error(panel: ResultsPanel, message: str, what: str = "Could not render.") -> Updates:
    """The whole message right above the image; every earlier output stays as it was."""
    first, _, rest = message.partition("\n")
    text = f"**{what}** {first}" + (f"\n\n{rest}" if rest else "")
    return {
        panel.status: "Not done: see the message above the image.",
        panel.error: gr.update(value=text, visible=True),
    }


def run_outputs(panel: ResultsPanel) -> list[gr.Component]:
    """Every component a new result updates."""
    return [
        panel.status, panel.error, panel.progress, panel.current, panel.report, panel.keep,
        panel.download, panel.gallery, panel.compare_a, panel.compare_b, panel.ab_note,
        panel.slider, panel.history,
    ]  # fmt: skip


def regrade_outputs(panel: ResultsPanel) -> list[gr.Component]:
    """What a re-grade may update (the slider only while the A/B panel is open)."""
    return [
        panel.status, panel.error, panel.current, panel.report, panel.download, panel.slider,
        panel.ab_note,
    ]  # fmt: skip
