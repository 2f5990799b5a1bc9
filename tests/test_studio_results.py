"""The results column's handlers, called directly: re-grades in place (one PNG per result,
written once the grade settles), Keep as new, the persistent history, and what a re-grade
sends to the browser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pytest

from conftest import StudioPage, build_studio_page
from engine.metadata import read_recipe_file
from engine.recipe_json import recipe_from_json
from studio.results_callbacks import ResultsCallbacks
from studio.session import Session


@pytest.fixture
def page(tiny_engine: Any, tmp_path: Path) -> StudioPage:
    return build_studio_page(tiny_engine, tmp_path / "golden_seeds.json")


def rendered(page: StudioPage, tiny_engine: Any) -> tuple[dict, Session]:
    """A page whose session has just rendered the default recipe."""
    data = page.values(tiny_engine.default_recipe())
    list(page.studio.generate(data))
    return data, data[page.state]


def contrast_move(page: StudioPage, session: Session, value: float) -> dict:
    """What Gradio hands the handler when the contrast slider moves (only that control)."""
    return {page.state: session, page.controls["color.tone.contrast"]: value}


def test_twenty_slider_moves_leave_one_png_that_matches_the_last_grade(
    page: StudioPage, tiny_engine: Any
) -> None:
    outputs = tiny_engine.config.outputs_dir
    before = set(outputs.glob("*.png"))
    _, session = rendered(page, tiny_engine)
    (png,) = set(outputs.glob("*.png")) - before
    entry_id = session.last.entry_id
    for i in range(20):
        updates = page.studio.regrade(contrast_move(page, session, 1.0 + 0.02 * (i + 1)))
    assert tiny_engine.saves.flush(timeout=30)
    assert set(outputs.glob("*.png")) - before == {png}
    assert read_recipe_file(png).color.tone.contrast == pytest.approx(1.4)
    assert session.grades == 20 and session.runs == 1
    entry = page.studio.kept.get(entry_id, "")
    assert recipe_from_json(entry.recipe_json).color.tone.contrast == pytest.approx(1.4)
    # Only what a re-grade changes goes to the browser: never the history or the batch.
    panel = page.studio.panel
    assert panel.history not in updates and panel.gallery not in updates
    assert updates[panel.current].endswith(".jpg")
    assert updates[panel.status] == "Re-graded · grade 20"


def test_a_regrade_that_changes_nothing_still_answers_every_output(
    page: StudioPage, tiny_engine: Any
) -> None:
    panel = page.studio.panel
    empty = Session(base=tiny_engine.default_recipe())
    assert page.studio.regrade(contrast_move(page, empty, 1.2)) == {
        panel.status: "Colour settings apply to the next image."
    }
    _, session = rendered(page, tiny_engine)
    same = session.last.requested.color.tone.contrast
    updates = page.studio.regrade(contrast_move(page, session, same))
    assert list(updates) == [panel.status] and isinstance(updates[panel.status], type(gr.skip()))


def test_keep_as_new_forks_the_file_and_later_grades_go_to_the_fork(
    page: StudioPage, tiny_engine: Any
) -> None:
    outputs = tiny_engine.config.outputs_dir
    results = ResultsCallbacks(page.studio)
    before = set(outputs.glob("*.png"))
    _, session = rendered(page, tiny_engine)
    (original,) = set(outputs.glob("*.png")) - before
    page.studio.regrade(contrast_move(page, session, 1.3))
    kept = results.keep_as_new(session)
    (fork,) = set(outputs.glob("*.png")) - before - {original}
    assert "Kept as new" in kept[page.studio.panel.status]
    assert session.last.files == [str(fork)]
    page.studio.regrade(contrast_move(page, session, 1.7))
    assert tiny_engine.saves.flush(timeout=30)
    assert read_recipe_file(fork).color.tone.contrast == pytest.approx(1.7)
    assert read_recipe_file(original).color.tone.contrast == pytest.approx(1.3)
    ids = [e.id for e in page.studio.kept.entries("")]
    assert session.last.entry_id == ids[0] and len(set(ids)) == len(ids)


def test_a_history_click_restores_the_recipe_and_delete_keeps_the_png(
    page: StudioPage, tiny_engine: Any
) -> None:
    results = ResultsCallbacks(page.studio)
    data = page.values(tiny_engine.default_recipe())
    data[page.controls["prompt.prompt"]] = "a kept portrait"
    list(page.studio.generate(data))
    session: Session = data[page.state]
    results.load(session)
    index = session.history_ids.index(session.last.entry_id)
    click = gr.SelectData(None, {"index": index, "value": None})
    fresh = Session(base=tiny_engine.default_recipe(), history_ids=list(session.history_ids))
    updates = results.pick(fresh, click)
    assert updates[page.controls["prompt.prompt"]] == "a kept portrait"
    assert updates[page.studio.panel.current].endswith(".jpg")
    assert fresh.last.entry_id == session.last.entry_id and fresh.history_pick
    png = Path(fresh.last.files[0])
    deleted = results.delete(fresh)
    assert "stays in the outputs folder" in deleted[page.studio.panel.status]
    assert png.exists()
    assert session.last.entry_id not in fresh.history_ids
    assert "Click a history entry first" in results.delete(fresh)[page.studio.panel.status]


def test_history_is_per_login(page: StudioPage, tiny_engine: Any) -> None:
    class Login:
        username = "ana"

    data = page.values(tiny_engine.default_recipe())
    list(page.studio.generate(data, Login()))
    mine = data[page.state].last.entry_id
    assert mine in [e.id for e in page.studio.kept.entries("ana")]
    assert mine not in [e.id for e in page.studio.kept.entries("")]
