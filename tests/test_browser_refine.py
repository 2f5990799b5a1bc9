"""The Refine tab in a real headless Chromium: refine an uploaded photo's face and hands, see
the boxes the detailers found and the identity guard's figures, and drag the before/after
slider. The hands come from a stand-in hand_yolov8s.pt (tests/yolo_models.py) put in the
shared studio's models folder: no pip package ships a hand detector."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageColor

from browser_page import (
    CHROMIUM,
    browser,
    drag_image_slider,
    drop_file,
    move_slider,
    open_tab,
    page,
    wait_for_report,
)
from engine.faces.yolo import configure_ultralytics_offline
from studio.panels.refine import BOX_COLOURS
from yolo_models import write_hand_detector

__all__ = ["browser", "page"]  # fixtures

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed"),
]
# The first detailer pass encodes the prompt unless an earlier test already did.
HANDS_PASS = r"^ran: (text \d+ ms, )?refine_hands \d+ ms"
# Switching the face on re-runs the face and every region after it: the hands too.
BOTH_PASSES = r"^ran: (text \d+ ms, )?refine_face \d+ ms, refine_hands \d+ ms"
IDENTITY = r"Identity \(.+\): face 1 -?\d\.\d{3} vs before"
SHORT_PASS = (("steps", "2"), ("guide-size", "256"), ("max-size", "256"))


@pytest.fixture(scope="module")
def hand_detector(studio_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The stand-in hand detector in the studio's models folder, for this module only."""
    os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics")))
    configure_ultralytics_offline()  # before ultralytics is first imported
    models_dir = studio_server.engine.config.models.models_dir
    path = write_hand_detector(models_dir)
    yield path
    path.unlink()


def short_passes(page: Any, region: str) -> None:
    """Open the region's accordion and set a quick pass (each release re-runs, region off)."""
    if not page.is_visible(f"#ps-refine-{region}-enabled"):
        page.click(f"#ps-refine-{region} button")  # the accordion's header
    for name, value in SHORT_PASS:
        move_slider(page, f"#ps-refine-{region}-{name}", value)
    page.wait_for_function(
        "() => document.querySelector('#ps-status').innerText.includes('No refine region')"
    )


def shown_image(page: Any, selector: str) -> np.ndarray:
    """The RGB pixels of the image an <img> shows, fetched as the browser fetched them."""
    source = page.locator(f"{selector} img").get_attribute("src")
    response = page.request.get(source)
    assert response.ok, source
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def outlined(drawn: np.ndarray, plain: np.ndarray, colour: tuple[int, ...]) -> int:
    """How many pixels drawing the boxes turned to `colour`: pixels that moved more than 60
    on a channel from the plain photo and are now within 48 of the colour on every channel
    (the shown image is lossy webp)."""
    moved = np.abs(drawn.astype(int) - plain).max(axis=-1) > 60
    close = np.abs(drawn.astype(int) - colour).max(axis=-1) <= 48
    return int((moved & close).sum())


def test_face_and_hands_detailers_on_an_uploaded_photo(
    page: Any, hand_detector: Path, tmp_path: Path
) -> None:
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    open_tab(page, "Refine")
    drop_file(page, "#ps-refine-upload", photo)
    # Every region off: skipped (the picture itself may come cached from an earlier test).
    wait_for_report(page, r"^ran: .*off: .*refine_face.*refine_hands")

    short_passes(page, "face")
    short_passes(page, "hands")
    page.check("#ps-refine-hands-enabled input")
    wait_for_report(page, HANDS_PASS)
    page.check("#ps-refine-face-enabled input")
    report = wait_for_report(page, BOTH_PASSES)
    assert "nothing found" not in report and "No hands detector" not in report
    assert re.search(IDENTITY, report), report  # the guard's figures follow the run line
    assert "Refined" in page.inner_text("#ps-status")
    assert page.locator("#ps-error").is_hidden()

    boxes = page.locator("#ps-refine-boxes img")
    boxes.scroll_into_view_if_needed()  # a lazy image loads (and shows) once in view
    boxes.wait_for(state="visible")
    drawn = shown_image(page, "#ps-refine-boxes")
    plain = np.asarray(Image.open(photo).convert("RGB").resize(drawn.shape[1::-1]))
    for region in ("face", "hands"):  # each region's outline and label, in its colour
        colour = ImageColor.getrgb(BOX_COLOURS[region])
        assert outlined(drawn, plain, colour) > 300, region

    page.wait_for_selector("#ps-refine-ab [data-testid=imageslider-image]")
    drag_image_slider(page, "#ps-refine-ab")
