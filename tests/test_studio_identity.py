"""The Identity accordion's handlers, called directly: photos dropped on its box become the
recipe's references and show in its gallery, the result on screen is re-scored in place,
clearing forgets them, a restored recipe shows them, and a photo without a face leaves the
references and the result on screen as they were. The pose picture is stored into
`identity.pose.image` (for the next Generate), cleared, and shown again from a recipe; an
OpenPose keypoint JSON is drawn at the render size into it, and a bad one keeps the earlier
pose. PuLID's "finishing passes" switch is a bound checkbox."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from conftest import fresh_tiny_engine
from engine.recipe_identity import PoseParams
from engine.recipe_json import field_paths, recipe_to_json, set_path
from photos import astronaut, six_people
from studio.bindings_identity import IDENTITY_BINDINGS
from studio.callbacks import StudioCallbacks
from studio.controls import Controls
from studio.identity_callbacks import (
    ALREADY,
    POSE_DRAWN,
    POSE_REMOVED,
    POSE_STORED,
    IdentityCallbacks,
)
from studio.panels import color, identity, results
from studio.session import Session

SCORED = "Identity vs reference ("


@dataclass
class Page:
    controls: Controls
    state: gr.State
    studio: StudioCallbacks
    tab: IdentityCallbacks

    def values(self, session: Session) -> dict[Any, Any]:
        """What Gradio hands a handler: the session and the bound controls."""
        return {self.state: session, **self.controls.updates(session.base)}

    def shown(self, updates: dict[Any, Any]) -> tuple[str, int]:
        """The gallery's label and how many photos it shows."""
        gallery = updates[self.tab.panel.gallery]
        return gallery["label"], len(gallery["value"])


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Page:
    engine = fresh_tiny_engine(tmp_path_factory.mktemp("studio-identity"))
    recipe = engine.default_recipe()
    with gr.Blocks():
        controls, state = Controls(), gr.State()
        accordion = identity.build_identity_accordion(controls, recipe)
        upload = color.build_color_tab(controls, recipe, engine.list_luts())
        panel = results.build_results()
        studio = StudioCallbacks(engine, controls, panel, state, upload)
        callbacks = IdentityCallbacks(studio, accordion)
        callbacks.wire()
    return Page(controls, state, studio, callbacks)


def saved(image: Image.Image, path: Path) -> str:
    image.save(path)
    return str(path)


@pytest.fixture
def photos(tmp_path: Path) -> dict[str, str]:
    return {
        "me": saved(astronaut(), tmp_path / "astronaut.png"),
        "others": saved(six_people(), tmp_path / "six.png"),
        "wall": saved(Image.new("RGB", (160, 160), (120, 120, 120)), tmp_path / "wall.png"),
    }


def drop(page: Page, session: Session, *paths: str) -> dict[Any, Any]:
    data = {**page.values(session), page.tab.panel.upload: list(paths)}
    return page.tab.add_references(data)


def graded(page: Page, session: Session, path: str) -> dict[Any, Any]:
    """Grade `path` on the Color tab: the result on screen, scored when references exist."""
    updates = page.studio.grade_upload({**page.values(session), page.studio.upload: path})
    assert session.last is not None
    return updates


def test_two_photos_become_two_references_and_a_restored_recipe_shows_them(
    page: Page, photos: dict[str, str]
) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    updates = drop(page, session, photos["me"], photos["others"])
    assert len(session.base.identity.references) == 2
    assert page.shown(updates) == ("Stored references (2 of 4)", 2)
    assert updates[page.tab.panel.upload] is None  # the box is ready for the next photo
    assert "2 identity references stored" in updates[page.studio.panel.status]
    assert drop(page, session, photos["me"])[page.studio.panel.status] == ALREADY
    result = graded(page, session, photos["me"])
    report = result[page.studio.panel.report]
    assert SCORED in report and "image 1 " in report  # two people: the mean is not 1.000
    restored = page.studio.restore(Session(base=page.studio.engine.default_recipe()),
                                   session.last.files[0])  # fmt: skip
    assert page.shown(restored) == ("Stored references (2 of 4)", 2)


def test_adding_re_scores_the_result_in_place_and_clearing_forgets(
    page: Page, photos: dict[str, str]
) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    graded(page, session, photos["me"])
    assert SCORED not in "\n".join(session.last.notes)  # no reference, nothing computed
    updates = drop(page, session, photos["me"])
    assert updates[page.studio.panel.status] == "Scored against 1 identity reference · change 1"
    assert SCORED in updates[page.studio.panel.report]
    assert "image 1 1.000" in updates[page.studio.panel.report]
    assert page.shown(updates) == ("Stored references (1 of 4)", 1)
    cleared = page.tab.clear_references(page.values(session))
    assert SCORED not in cleared[page.studio.panel.report]
    assert session.base.identity.references == ()
    assert page.shown(cleared) == ("Stored references (0 of 4)", 0)


def test_a_photo_without_a_face_is_refused_and_the_result_stays(
    page: Page, photos: dict[str, str]
) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    drop(page, session, photos["me"])
    graded(page, session, photos["me"])
    before, references = session.last, session.base.identity.references
    updates = drop(page, session, photos["wall"])
    error = updates[page.studio.panel.error]
    assert error["visible"] and "Identity reference 2 has no face" in error["value"]
    assert session.last is before and session.base.identity.references == references
    assert page.studio.panel.current not in updates and page.tab.panel.gallery not in updates
    assert updates[page.tab.panel.upload] is None


def test_more_than_four_photos_are_refused(page: Page, photos: dict[str, str]) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    updates = drop(page, session, *[photos["me"]] * 5)
    assert "At most 4 identity references" in updates[page.studio.panel.error]["value"]
    assert session.base.identity.references == ()


def test_generate_scores_its_image_against_the_references(
    page: Page, photos: dict[str, str]
) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    drop(page, session, photos["me"])
    *_, done = page.studio.generate(page.values(session))
    report = done[page.studio.panel.report]
    assert SCORED in report and "image 1 " in report  # the tiny models draw noise: "no face"
    assert session.last.rendered.identity.references == session.base.identity.references


def test_the_bindings_cover_every_pose_field() -> None:
    pose = {path for path, _ in field_paths() if path.startswith("identity.pose.")}
    assert len(pose) == len(PoseParams.__dataclass_fields__)
    assert pose <= {row.path for row in IDENTITY_BINDINGS}
    controlnet = next(r for r in IDENTITY_BINDINGS if r.path == "identity.pose.controlnet")
    assert "the first one found" in controlnet.info


def test_a_pose_picture_is_stored_cleared_and_restored(
    page: Page, photos: dict[str, str], tmp_path: Path
) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    panel = page.tab.panel
    updates = page.tab.add_pose({**page.values(session), panel.pose_upload: photos["me"]})
    digest = session.base.identity.pose.image
    assert digest.startswith("sha256:")
    assert updates[panel.pose_digest] == digest  # the hidden bound box: Generate reads it
    assert updates[panel.pose_preview]["value"] is not None
    assert updates[panel.pose_upload] is None
    assert updates[page.studio.panel.status] == POSE_STORED
    recipe = page.studio.controls.recipe(session.base, page.values(session))
    assert recipe.identity.pose.image == digest
    cleared = page.tab.clear_pose(page.values(session))
    assert session.base.identity.pose.image == ""
    assert cleared[panel.pose_digest] == "" and cleared[panel.pose_preview]["value"] is None
    assert cleared[page.studio.panel.status] == POSE_REMOVED
    stored = set_path(page.studio.engine.default_recipe(), "identity.pose.image", digest)
    saved_recipe = tmp_path / "pose.json"
    saved_recipe.write_text(recipe_to_json(stored))
    restored = page.studio.restore(Session(base=page.studio.engine.default_recipe()),
                                   str(saved_recipe))  # fmt: skip
    assert restored[panel.pose_preview]["value"] is not None
    assert restored[page.controls["identity.pose.image"]] == digest


def test_a_file_that_is_not_a_picture_is_refused_as_a_pose(page: Page, tmp_path: Path) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    updates = page.tab.add_pose({**page.values(session), page.tab.panel.pose_upload: str(text)})
    assert updates[page.studio.panel.error]["visible"]
    assert session.base.identity.pose.image == "" and page.tab.panel.pose_preview not in updates


def pose_json(tmp_path: Path, text: str, name: str = "pose.json") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def keypoints_json() -> str:
    """One person in a 512 × 256 canvas: neck, shoulders and hips seen."""
    seen = {1: (256, 40), 2: (216, 40), 5: (296, 40), 8: (236, 160), 11: (276, 160)}
    values: list[float] = []
    for index in range(18):
        x, y = seen.get(index, (0, 0))
        values += [x, y, 1.0 if index in seen else 0.0]
    people = [{"pose_keypoints_2d": values}]
    return json.dumps({"people": people, "canvas_width": 512, "canvas_height": 256})


def test_a_keypoint_json_is_drawn_at_the_render_size_and_kept_as_the_pose(
    page: Page, tmp_path: Path
) -> None:
    session = Session(base=page.studio.engine.default_recipe())  # 256 × 256 in demo mode
    panel = page.tab.panel
    dropped = {**page.values(session), panel.pose_json: pose_json(tmp_path, keypoints_json())}
    updates = page.tab.add_pose_json(dropped)
    digest = session.base.identity.pose.image
    assert digest.startswith("sha256:") and updates[panel.pose_digest] == digest
    assert updates[panel.pose_json] is None  # the box is ready for the next file
    assert updates[page.studio.panel.status] == POSE_DRAWN.format(w=256, h=256)
    preview = updates[panel.pose_preview]["value"]
    assert preview.size == (256, 256)
    pixels = np.asarray(preview.convert("RGB"))
    assert pixels[64 + 20, 128].any()  # the neck: (256, 40) of 512 × 256, halved, centred
    assert not pixels[:64].any() and not pixels[192:].any()  # the canvas is 2:1


def test_a_bad_keypoint_json_keeps_the_earlier_pose(
    page: Page, photos: dict[str, str], tmp_path: Path
) -> None:
    session = Session(base=page.studio.engine.default_recipe())
    panel = page.tab.panel
    page.tab.add_pose({**page.values(session), panel.pose_upload: photos["me"]})
    before = session.base.identity.pose.image
    for text, says in [
        ("{not json", "is not valid JSON"),
        (json.dumps({"people": []}), '"people" list'),
        (json.dumps({"people": [{"pose_keypoints_2d": [0.5] * 30}]}), "54 numbers"),
    ]:
        dropped = {**page.values(session), panel.pose_json: pose_json(tmp_path, text)}
        updates = page.tab.add_pose_json(dropped)
        error = updates[page.studio.panel.error]
        assert error["visible"] and says in error["value"]
        assert session.base.identity.pose.image == before and panel.pose_preview not in updates
        assert updates[panel.pose_json] is None


def test_pulid_on_finishing_passes_is_a_bound_checkbox(page: Page) -> None:
    pulid = {path for path, _ in field_paths() if path.startswith("identity.pulid.")}
    assert pulid <= {row.path for row in IDENTITY_BINDINGS}
    box = page.controls["identity.pulid.finishing"]
    assert isinstance(box, gr.Checkbox) and box.label == "PuLID on finishing passes"
    recipe = page.studio.controls.recipe(
        page.studio.engine.default_recipe(), {box: False}, "identity."
    )
    assert recipe.identity.pulid.finishing is False
