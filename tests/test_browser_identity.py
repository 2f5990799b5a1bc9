"""The Identity accordion in a real headless Chromium: drop the astronaut as the reference on
"Size / LoRA / Prompt", grade the same photo on the Color tab and read its identity score
under the run report; "Clear references" re-runs the result in place without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from browser_page import CHROMIUM, browser, drop_file, open_tab, page, two_frames, wait_for_report
from photos import astronaut

__all__ = ["browser", "page"]  # fixtures

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed"),
]
SCORED = r"Identity vs reference \(.+, same person ≥ \d\.\d{3}\): image 1 1\.000"


def status_has(page: Any, text: str) -> None:
    page.wait_for_function(
        "t => document.querySelector('#ps-status').innerText.includes(t)", arg=text
    )


def test_the_reference_scores_the_same_face_under_the_report(page: Any, tmp_path: Path) -> None:
    photo = tmp_path / "astronaut.png"
    astronaut().save(photo)
    open_tab(page, "Size / LoRA / Prompt")
    page.click("#ps-identity button")  # the accordion opens
    two_frames(page)
    assert "the score appears under the run report" in page.inner_text("#ps-identity-hint")
    drop_file(page, "#ps-identity-upload", photo)
    page.wait_for_selector("#ps-identity-references img")
    status_has(page, "1 identity reference stored")
    assert "Stored references (1 of 4)" in page.inner_text("#ps-identity-references")

    open_tab(page, "Color")
    drop_file(page, "#ps-grade-upload", photo)
    report = wait_for_report(page, SCORED)
    assert "identity_score" in report  # the stage ran (listed in the report line)

    open_tab(page, "Size / LoRA / Prompt")
    page.click("#ps-identity-clear")
    status_has(page, "Identity references removed · change 1")
    page.wait_for_function(
        "() => !document.querySelector('#ps-report').innerText.includes('Identity vs reference')"
    )
    assert page.locator("#ps-identity-references img").count() == 0
    assert page.locator("#ps-current img").count() == 1
