"""The Expression tab in a real headless Chromium: edit an uploaded photo, apply a preset,
move a slider, and read a run report in which the face crop and features stayed cached."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from browser_page import (
    CHROMIUM,
    browser,
    choose,
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


def cached_stages(report: str) -> set[str]:
    line = report.splitlines()[0]  # the run line; the engine's notes follow it
    return set(re.split(r"[ ,]+", line.split("cached:")[1].split("·")[0].strip()))


def test_preset_then_slider_re_edits_with_the_face_cached(page: Any, tmp_path: Path) -> None:
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    open_tab(page, "Expression")
    drop_file(page, "#ps-expr-upload", photo)
    first = wait_for_report(page, r"^ran: image .*off: [^·]*\bexpression\b")  # neutral: skipped

    choose(page, "#ps-expr-preset", "Soft Smile")
    page.click("#ps-expr-apply")
    applied = wait_for_report(page, r"^ran: expression_face \d+ ms, expression \d+ ms")
    assert "image" in cached_stages(applied) and applied != first
    assert page.input_value("#ps-expression-smile input[type=number]") == "0.4"
    assert "Soft Smile" in page.inner_text("#ps-expr-preset-note")

    move_slider(page, "#ps-expression-smile", "1.1")
    moved = wait_for_report(page, r"^ran: expression \d+ ms, color \d+ ms · cached: ")
    assert {"image", "expression_face"} <= cached_stages(moved)
    assert "Expression edited" in page.inner_text("#ps-status")
    page.wait_for_selector("#ps-expression-ab [data-testid=imageslider-image]")
    assert page.locator("#ps-error").is_hidden()
