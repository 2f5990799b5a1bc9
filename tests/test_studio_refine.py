"""The Refine tab's handlers, called directly: refining an uploaded photo, control changes
re-run in place from the stage they touch, the identity guard's reference photo, a failed
upload, and the before/after and detections views."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from PIL import Image

from bad_inputs import corrupt_png
from conftest import fresh_tiny_engine
from engine.expression.presets import load_presets
from engine.recipe import Recipe
from engine.recipe_json import set_path
from engine.recipe_refine import REFINE_REGIONS
from studio.callbacks import StudioCallbacks
from studio.controls import Controls
from studio.panels import color, expression, refine, results
from studio.refine_callbacks import ALL_OFF, RefineCallbacks
from studio.session import RunView, Session


@dataclass
class Page:
    controls: Controls
    state: gr.State
    studio: StudioCallbacks
    tab: RefineCallbacks
    demo: gr.Blocks

    def values(self, session: Session, **extra: Any) -> dict[Any, Any]:
        """What Gradio hands a handler: the session and every Refine/Expression/Color
        control; `extra` sets refine fields by their path under refine ("face.denoise")."""
        data = {self.state: session, **self.controls.updates(session.base)}
        for path, value in extra.items():
            data[self.controls["refine." + path.replace("__", ".")]] = value
        return data


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Page:
    engine = fresh_tiny_engine(tmp_path_factory.mktemp("studio-refine"))
    recipe = engine.default_recipe()
    with gr.Blocks() as demo:
        controls, state = Controls(), gr.State()
        labels = [(p.label, p.note) for p in load_presets()]
        expression.build_expression_tab(controls, recipe, labels, "status")
        tab = refine.build_refine_tab(controls, recipe, engine.list_detectors(), "status")
        upload = color.build_color_tab(controls, recipe, engine.list_luts())
        panel = results.build_results()
        studio = StudioCallbacks(engine, controls, panel, state, upload)
        callbacks = RefineCallbacks(studio, tab)
        callbacks.wire()
    return Page(controls, state, studio, callbacks, demo)


def photo(tmp_path: Path) -> str:
    from skimage import data

    path = tmp_path / "face.png"
    Image.fromarray(data.astronaut()).save(path)
    return str(path)


def quick(recipe: Recipe) -> Recipe:
    """`recipe` with every detailer pass cut down to 2 steps at 256 px (CPU test time)."""
    for region in REFINE_REGIONS:
        for name, value in (("steps", 2), ("guide_size", 256), ("max_size", 256)):
            recipe = set_path(recipe, f"refine.{region}.{name}", value)
    return recipe


def uploaded(page: Page, tmp_path: Path, **extra: Any) -> Session:
    """A session showing the astronaut, refined with `extra` through the tab's upload box."""
    session = Session(base=quick(page.studio.engine.default_recipe()))
    data = {**page.values(session, **extra), page.tab.panel.upload: photo(tmp_path)}
    page.tab.edit_upload(data)
    assert session.last is not None
    return session


def shown_bytes(session: Session) -> bytes:
    image = session.current_image()
    return (Image.open(image) if isinstance(image, str | Path) else image).tobytes()


def test_with_every_region_off_a_re_run_changes_nothing_and_says_so(
    page: Page, tmp_path: Path
) -> None:
    session = uploaded(page, tmp_path)
    assert "refine_face" not in session.last.stages
    before = shown_bytes(session)
    updates = page.tab.refine(page.values(session, face__denoise=0.3))
    assert updates[page.studio.panel.status] == ALL_OFF.format(n=1)
    assert not [name for name, _ in session.last.result.report.ran if name.startswith("refine")]
    assert shown_bytes(session) == before
    assert updates[page.tab.panel.ab] is None and updates[page.tab.panel.boxes] is None


def test_the_face_region_refines_then_only_its_pass_re_runs(page: Page, tmp_path: Path) -> None:
    session = uploaded(page, tmp_path)
    page.tab.refine(page.values(session, face__enabled=True))
    # The region's prompt is encoded on first use; the image before it comes cached.
    assert re.match(r"ran: (text \d+ ms, )?refine_face \d+ ms", session.last.report_line)
    assert any(note.startswith("Identity") for note in session.last.notes)
    updates = page.tab.refine(page.values(session, face__enabled=True, face__denoise=0.2))
    ran = [name for name, _ in session.last.result.report.ran]
    assert ran == ["refine_face", "color"]
    assert updates[page.studio.panel.status] == "Refined · change 2"
    before, after = updates[page.tab.panel.ab]
    assert before.size == after.size == (512, 512) and before.tobytes() != after.tobytes()
    boxes = updates[page.tab.panel.boxes]
    assert boxes is not None and boxes.size == before.size and boxes.tobytes() != before.tobytes()
    assert session.last.result.report.detections["refine_face"][0]  # the astronaut's face
    assert session.runs == 1  # re-runs in place: one result, one history entry


def test_a_reference_photo_is_used_then_removed_and_restored(page: Page, tmp_path: Path) -> None:
    session = uploaded(page, tmp_path, face__enabled=True)
    data = {**page.values(session, face__enabled=True), page.tab.panel.reference: photo(tmp_path)}
    updates = page.tab.upload_reference(data)
    digest = session.base.refine.identity.reference
    assert digest.startswith("sha256:")
    assert session.last.requested.refine.identity.reference == digest
    assert updates[page.tab.panel.reference_preview] is not None
    identity = [note for note in session.last.notes if note.startswith("Identity")]
    assert identity and "reference" in identity[0]  # the guard compared with it
    page.tab.clear_reference({**data, page.tab.panel.reference: None})
    assert session.base.refine.identity.reference == ""
    assert session.last.requested.refine.identity.reference == ""
    restored = page.studio.restored(
        session, set_path(Recipe(), "refine.identity.reference", digest), "r"
    )
    assert restored[page.tab.panel.reference_preview] is not None
    assert page.tab.panel.reference_preview in page.studio.restore_outputs()
    assert page.studio.restored(session, Recipe(), "r")[page.tab.panel.reference_preview] is None


def test_a_reference_before_any_result_is_kept_for_the_next(page: Page, tmp_path: Path) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    data = {**page.values(session), page.tab.panel.reference: photo(tmp_path)}
    updates = page.tab.upload_reference(data)
    assert "next image" in updates[page.studio.panel.status]
    assert session.base.refine.identity.reference.startswith("sha256:")


@pytest.mark.filterwarnings("ignore:Not refined:UserWarning")  # gr.Warning off a request
def test_a_failed_upload_says_not_refined_and_the_result_stays(page: Page, tmp_path: Path) -> None:
    session = uploaded(page, tmp_path)
    shown = session.last
    broken = tmp_path / "broken.png"
    broken.write_bytes(corrupt_png())
    updates = page.tab.edit_upload({**page.values(session), page.tab.panel.upload: str(broken)})
    assert "Not refined." in updates[page.studio.panel.error]["value"]
    assert session.last is shown


# -- without the engine: the views and the wiring -----------------------------------------


@dataclass
class FakeReport:
    detections: dict[str, list[list[dict]]] = field(default_factory=dict)


@dataclass
class FakeResult:
    report: FakeReport


def view_with(stages: dict[str, list[Any]], detections: dict | None = None) -> Session:
    result = FakeResult(FakeReport(detections or {}))
    view = RunView(Recipe(), Recipe(), stages["color"], stages, "", [], result=result)
    session = Session(base=Recipe())
    session.remember(view)
    return session


def test_before_after_spans_every_refine_stage_that_ran() -> None:
    grey, red, blue = (Image.new("RGB", (64, 64), c) for c in ("grey", "red", "blue"))
    session = view_with({"decode": [grey], "color": [blue]})
    assert refine.before_after(session) is None and refine.detections_image(session) is None
    stages = {"decode": [grey], "expression": [red], "refine_face": [blue], "refine_eyes": [grey]}
    session = view_with({**stages, "color": [blue]})
    before, after = refine.before_after(session)
    assert before is red and after is stages["refine_eyes"][0]


def test_detections_are_drawn_in_their_region_s_colour() -> None:
    grey = Image.new("RGB", (200, 200), (128, 128, 128))
    found = {
        "refine_face": [[{"label": "face", "box": [40, 40, 160, 160], "score": 0.91}]],
        "refine_eyes": [[{"label": "eye", "box": [60, 80, 90, 100], "score": 0.7}]],
    }
    stages = {"decode": [grey], "refine_face": [grey], "refine_eyes": [grey], "color": [grey]}
    drawn = refine.detections_image(view_with(stages, found))
    assert drawn is not None and drawn.size == grey.size
    assert drawn.getpixel((100, 159)) == (0xFF, 0x4D, 0x4D)  # the face box's lower edge
    assert drawn.getpixel((75, 99)) == (0x3F, 0xA9, 0xF5)  # the eye box's lower edge
    assert drawn.getpixel((100, 130)) == (128, 128, 128)  # inside: untouched
    assert grey.getpixel((100, 159)) == (128, 128, 128)  # the stage's own image is kept


def test_sliders_re_run_when_let_go_never_while_they_move(page: Page) -> None:
    events: dict[str, set[str]] = {}
    for function in page.demo.fns.values():
        for block, event in function.targets:
            elem = page.demo.blocks[block].elem_id
            if elem and elem.startswith("ps-refine-"):
                events.setdefault(elem, set()).add(event)
    assert events["ps-refine-face-denoise"] == {"release"}
    assert events["ps-refine-face-enabled"] == {"input"}
    assert events["ps-refine-face-prompt"] == {"submit", "blur"}
    assert events["ps-refine-face-detector"] == {"input"}
    assert events["ps-refine-face-guide-size-for"] == {"input"}
    assert events["ps-refine-upload"] == {"upload"}
    assert events["ps-refine-reference-upload"] == {"upload", "clear"}
