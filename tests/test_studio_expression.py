"""The Expression tab's handlers, called directly: editing an uploaded photo, slider moves in
place, presets, the driving photo, and a photo without a face."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from PIL import Image

from conftest import fresh_tiny_engine
from engine.expression.presets import load_presets
from engine.recipe_json import set_path
from studio.callbacks import StudioCallbacks
from studio.controls import Controls
from studio.expression_callbacks import ExpressionCallbacks
from studio.panels import color, expression, results
from studio.session import Session


@dataclass
class Page:
    controls: Controls
    state: gr.State
    studio: StudioCallbacks
    tab: ExpressionCallbacks

    def values(self, session: Session, **extra: Any) -> dict[Any, Any]:
        """What Gradio hands a handler: the session and every Expression/Color control."""
        data = {self.state: session, **self.controls.updates(session.base)}
        for path, value in extra.items():
            data[self.controls[f"expression.{path}"]] = value
        return data


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Page:
    engine = fresh_tiny_engine(tmp_path_factory.mktemp("studio-expression"))
    recipe = engine.default_recipe()
    with gr.Blocks():
        controls, state = Controls(), gr.State()
        presets = load_presets()
        labels = [(p.label, p.note) for p in presets]
        tab = expression.build_expression_tab(controls, recipe, labels, "status")
        upload = color.build_color_tab(controls, recipe, engine.list_luts())
        panel = results.build_results()
    studio = StudioCallbacks(engine, controls, panel, state, upload)
    return Page(controls, state, studio, ExpressionCallbacks(studio, tab, presets))


def photo(tmp_path: Path, face: bool = True) -> str:
    from skimage import data

    path = tmp_path / ("face.png" if face else "wall.png")
    image = Image.fromarray(data.astronaut()) if face else Image.new("RGB", (200, 160), "grey")
    image.save(path)
    return str(path)


def uploaded(page: Page, tmp_path: Path) -> Session:
    """A session showing the astronaut, edited (neutrally) through the tab's upload box."""
    session = Session(base=page.studio.engine.default_recipe())
    data = {**page.values(session), page.tab.panel.upload: photo(tmp_path)}
    page.tab.edit_upload(data)
    assert session.last is not None
    return session


def test_an_uploaded_photo_then_a_slider_re_edits_in_place(page: Page, tmp_path: Path) -> None:
    session = uploaded(page, tmp_path)
    assert re.search(r"off: [^·]*\bexpression\b", session.last.report_line)
    updates = page.tab.reedit(page.values(session, smile=0.9))
    assert session.last.report_line.startswith("ran: expression_face")
    updates = page.tab.reedit(page.values(session, smile=0.5))
    line = session.last.report_line
    assert line.startswith("ran: expression ") and "expression_face" in line.split("cached:")[1]
    assert updates[page.studio.panel.status] == "Expression edited · change 2"
    before, after = updates[page.tab.panel.ab]
    assert before.size == after.size == (512, 512) and before.tobytes() != after.tobytes()
    assert session.runs == 1  # edits in place: one result, one history entry


def test_a_preset_sets_the_sliders_and_edits(page: Page, tmp_path: Path) -> None:
    session = uploaded(page, tmp_path)
    data = {**page.values(session), page.tab.panel.preset: "Eyes Closed + Gentle Smile"}
    updates = page.tab.apply_preset(data)
    assert updates[page.controls["expression.blink"]] == -20.0
    assert updates[page.controls["expression.smile"]] == 0.3
    assert session.last.requested.expression.blink == -20.0
    assert "Eyes Closed + Gentle Smile" in updates[page.studio.panel.status]
    unknown = page.tab.apply_preset({**data, page.tab.panel.preset: expression.NO_PRESET})
    assert "Choose one of the presets" in unknown[page.tab.panel.preset_note]


def test_a_preset_before_any_result_only_sets_the_sliders(page: Page) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    data = {**page.values(session), page.tab.panel.preset: "Big Yawn"}
    updates = page.tab.apply_preset(data)
    assert updates[page.controls["expression.aaa"]] == 120.0
    assert "apply to the next image" in updates[page.studio.panel.status]


def test_a_driving_photo_is_used_then_removed(page: Page, tmp_path: Path) -> None:
    session = uploaded(page, tmp_path)
    mirrored = tmp_path / "mirrored.png"
    Image.open(photo(tmp_path)).transpose(Image.FLIP_LEFT_RIGHT).save(mirrored)
    data = {**page.values(session), page.tab.panel.driving: str(mirrored)}
    updates = page.tab.upload_driving(data)
    assert session.base.expression.sample_image.startswith("sha256:")
    assert session.last.requested.expression.sample_image == session.base.expression.sample_image
    assert "expression_driving" in session.last.report_line
    assert updates[page.tab.panel.driving_preview] is not None
    page.tab.clear_driving({**page.values(session), page.tab.panel.driving: None})
    assert session.base.expression.sample_image == ""
    assert re.search(r"off: [^·]*\bexpression\b", session.last.report_line)  # neutral again


def test_a_photo_without_a_face_is_a_message_and_the_result_stays(
    page: Page, tmp_path: Path
) -> None:
    session = uploaded(page, tmp_path)
    shown = session.last
    session.base = session.last.requested
    data = {**page.values(session, smile=0.5), page.tab.panel.upload: photo(tmp_path, False)}
    updates = page.tab.edit_upload(data)
    error = updates[page.studio.panel.error]["value"]
    assert "Not edited." in error and "No face was found" in error
    assert session.last is shown


def test_restoring_a_recipe_shows_its_driving_photo(page: Page, tmp_path: Path) -> None:
    session = uploaded(page, tmp_path)
    digest = page.studio.engine.store_image(Path(photo(tmp_path)).read_bytes())
    recipe = session.last.requested
    with_driving = set_path(recipe, "expression.sample_image", digest)
    updates = page.studio.restored(session, with_driving, "restored")
    assert updates[page.tab.panel.driving_preview] is not None
    assert page.tab.panel.driving_preview in page.studio.restore_outputs()
    cleared = page.studio.restored(session, recipe, "restored")
    assert cleared[page.tab.panel.driving_preview] is None
