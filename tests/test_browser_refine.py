"""The Refine tab in a real headless Chromium: refine an uploaded photo's face, see the boxes
the detailer found and the identity guard's figures, and drag the before/after slider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

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

__all__ = ["browser", "page"]  # fixtures

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed"),
]
# The detailer's first pass encodes the prompt unless an earlier test already did.
FACE_PASS = r"^ran: (text \d+ ms, )?refine_face \d+ ms"


def test_face_detailer_on_an_uploaded_photo(page: Any, tmp_path: Path) -> None:
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    open_tab(page, "Refine")
    drop_file(page, "#ps-refine-upload", photo)
    # Every region off: skipped (the picture itself may come cached from an earlier test).
    wait_for_report(page, r"^ran: .*off: .*refine_face")

    # A short pass keeps the CPU test quick; each release re-runs with the face still off.
    if not page.is_visible("#ps-refine-face-enabled"):
        page.click("#ps-refine-face button")  # the face accordion's header
    for name, value in (("steps", "2"), ("guide-size", "256"), ("max-size", "256")):
        move_slider(page, f"#ps-refine-face-{name}", value)
    page.wait_for_function(
        "() => document.querySelector('#ps-status').innerText.includes('No refine region')"
    )
    page.check("#ps-refine-face-enabled input")
    report = wait_for_report(page, FACE_PASS)
    assert "Identity" in report  # the guard's figures follow the run line
    assert "Refined" in page.inner_text("#ps-status")
    boxes = page.locator("#ps-refine-boxes img")
    boxes.scroll_into_view_if_needed()  # a lazy image loads (and shows) once in view
    boxes.wait_for(state="visible")
    assert page.locator("#ps-error").is_hidden()

    page.wait_for_selector("#ps-refine-ab [data-testid=imageslider-image]")
    drag_image_slider(page, "#ps-refine-ab")
