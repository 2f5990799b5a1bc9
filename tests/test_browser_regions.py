"""The Regions accordion in a real headless Chromium (issue 14): switch regions on, give the two
regions different prompts and LoRAs, see the mask preview, render, then change only region
2's LoRA strength and render again: the run report lists region 1's text encoding as cached.

The tiny LoRA files have no CLIP layers (conftest.tiny_lora), so a CLIP strength would change
no stage key; region 2's model strength is changed instead: the base pass re-runs while both
regions' text encodings (and the layout) stay cached."""

from __future__ import annotations

from typing import Any

import pytest

from browser_page import CHROMIUM, browser, open_tab, page, two_frames, wait_for_report
from conftest import FRECKLES, SKIN

__all__ = ["browser", "page"]  # fixtures

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed"),
]
FIRST = r"^ran: .*\bregion_text_1 \d+ ms, region_text_2 \d+ ms, regions \d+ ms"
# Only region 2's model strength changed: the encodings and the layout stay cached.
SECOND = r"^ran: base \d+ ms.* · cached: (.+, )?region_text_1, region_text_2, regions\b"


def set_number(page: Any, selector: str, value: str) -> None:
    box = page.locator(f"{selector} input[type=number]")
    box.fill(value)
    box.press("Tab")


def pick(page: Any, selector: str, option: str) -> None:
    """Pick `option` in one dropdown among several with the same files: open it, click its
    own entry (an earlier dropdown's list may still be in the page)."""
    page.click(f"{selector} input")
    page.locator(f"{selector} [role=option][aria-label='{option}']").click()
    page.wait_for_function(
        "([s, v]) => document.querySelector(s + ' input').value === v",
        arg=[selector, option],
    )


def test_region_2s_lora_strength_leaves_region_1s_encoding_cached(page: Any) -> None:
    open_tab(page, "Settings")
    set_number(page, "#ps-settings-steps", "2")
    open_tab(page, "Size / LoRA / Prompt")
    set_number(page, "#ps-prompt-width", "64")
    set_number(page, "#ps-prompt-height", "64")
    page.click("#ps-regions button")  # the accordion opens
    two_frames(page)
    page.check("#ps-regions-enabled input")
    page.wait_for_selector("#ps-regions-preview img")  # the masks over grey
    page.fill("#ps-region-1-prompt textarea", "red hair")
    page.fill("#ps-region-2-prompt textarea", "blue hair")
    pick(page, "#ps-region-1-lora-1-file", SKIN)
    pick(page, "#ps-region-2-lora-1-file", FRECKLES)
    assert page.input_value("#ps-region-2-lora-1-strength-model input") == "0.7"

    page.click("#ps-generate")
    report = wait_for_report(page, FIRST)
    assert "cached" not in report.split("region_text_2")[0]

    page.fill("#ps-region-2-lora-1-strength-model input", "0.4")
    page.press("#ps-region-2-lora-1-strength-model input", "Tab")
    page.click("#ps-generate")
    report = wait_for_report(page, SECOND)
    assert "region_text_1" not in report.split(" · cached")[0]  # not among the stages that ran
    assert page.locator("#ps-regions-preview img").count() == 1
