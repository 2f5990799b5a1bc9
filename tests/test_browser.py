"""The page in a real headless Chromium (Debian's), driven by Playwright's sync API.

PS_SCREENSHOT=1 also writes docs/screenshot.png for the README.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from bad_inputs import corrupt_png
from browser_page import (
    CHROMIUM,
    browser,
    choose,
    drag_image_slider,
    drop_file,
    move_slider,
    open_tab,
    page,
    two_frames,
    wait_for_report,
)
from conftest import FRECKLES, SKIN, StudioServer
from engine.recipe_json import set_path

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "screenshot.png"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)",
    ),
]


def test_generate_regrade_compare_and_a_bad_upload(page: Any, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(corrupt_png())
    page.click("#ps-generate")
    page.wait_for_selector("#ps-current img")
    first = wait_for_report(page, r"^ran: .*\bbase\b")
    shown = page.get_attribute("#ps-current img", "src")

    open_tab(page, "Color")
    contrast = page.locator("#ps-color-tone-contrast input[type=range]")
    contrast.fill("1.6")
    contrast.dispatch_event("pointerup")  # fill() alone does not fire .release
    regrade = wait_for_report(page, r"^ran: color \d+ ms · cached: ")
    assert regrade != first
    assert {"text", "base", "decode"} <= set(re.split(r"[ ,·]+", regrade.split("cached:")[1]))
    page.wait_for_function(
        "old => document.querySelector('#ps-current img').src !== old", arg=shown
    )

    page.click("#ps-ab-box button")  # the A/B panel opens: before the grade | after it
    page.wait_for_selector("#ps-ab [data-testid=imageslider-image]")
    drag_image_slider(page, "#ps-ab")

    if os.environ.get("PS_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.evaluate(
            "() => { window.scrollTo(0, 0); document.querySelector('#ps-results').scrollTop = 0; }"
        )
        page.screenshot(path=str(SCREENSHOT))

    # A bad upload is a visible message; the earlier results stay on the page.
    drop_file(page, "#ps-grade-upload", corrupt)
    page.wait_for_selector("#ps-error", state="visible")
    assert "image" in page.inner_text("#ps-error").lower()
    assert "Not graded." in page.inner_text("#ps-error")
    assert page.locator("#ps-current img").count() == 1
    assert page.inner_text("#ps-report") == regrade


def test_restore_from_a_studio_png(page: Any, tiny_engine: Any) -> None:
    recipe = tiny_engine.default_recipe()
    recipe = set_path(recipe, "prompt.prompt", "restored from a PNG, seed 4711")
    recipe = set_path(recipe, "settings.seed", 4711)
    png = tiny_engine.run(recipe).saved[0]

    drop_file(page, "#ps-restore", Path(png))
    open_tab(page, "Size / LoRA / Prompt")
    page.wait_for_function(
        "() => document.querySelector('#ps-prompt-prompt textarea').value"
        " === 'restored from a PNG, seed 4711'"
    )
    open_tab(page, "Settings")
    assert page.input_value("#ps-settings-seed input") == "4711"


def test_preset_apply_and_seed_control(page: Any) -> None:
    open_tab(page, "Settings")
    seed = page.locator("#ps-settings-seed input")
    before = seed.input_value()
    page.click("#ps-new-seed")
    page.wait_for_function(
        "old => document.querySelector('#ps-settings-seed input').value !== old", arg=before
    )
    assert page.locator("#ps-seed-mode input[value=fixed]").is_checked()

    assert page.input_value("#ps-settings-steps input[type=number]") != "10"
    choose(page, "#ps-preset", "Turbo · production (10 steps, CFG 2.0)")
    page.wait_for_function(
        "() => document.querySelector('#ps-preset-info').innerText.includes('Turbo tier')"
    )
    page.click("#ps-apply-preset")
    page.wait_for_function(
        "() => document.querySelector('#ps-settings-steps input[type=number]').value === '10'"
    )
    assert page.input_value("#ps-settings-cfg input[type=number]") == "2"
    assert page.input_value("#ps-settings-scheduler input") == "simple"
    assert "Applied" in page.inner_text("#ps-settings-message")
    page.locator("#ps-negative-box button").first.click()  # above the tabs, folded
    assert "blurry" in page.input_value("#ps-prompt-negative-prompt textarea")


def test_latent_tab_shows_its_controls(page: Any) -> None:
    open_tab(page, "Latent")
    upscale = page.locator("#ps-latent-upscale")
    upscale.wait_for()
    assert upscale.locator("input[type=number]").input_value() == "1.25"
    assert "bicubic" in upscale.inner_text()
    assert "0.5·(0.5 − r)" in page.inner_text("#ps-latent-rough-smooth")
    for field in ("settings-detail-daemon-bias", "settings-lying-sigma-end-percent"):
        assert page.locator(f"#ps-{field}").is_visible()
    assert not page.locator("#ps-latent-enabled input").is_checked()


def test_a_start_image_upload_switches_img2img_on(page: Any, tmp_path: Path) -> None:
    from PIL import Image

    picture = tmp_path / "start.png"
    Image.new("RGB", (64, 64), (180, 140, 120)).save(picture)
    open_tab(page, "Size / LoRA / Prompt")
    page.click("#ps-source button")  # the accordion opens
    two_frames(page)
    assert not page.locator("#ps-source-kind input").is_checked()
    drop_file(page, "#ps-source-upload", picture)
    page.wait_for_function("() => document.querySelector('#ps-source-kind input').checked")
    assert "Start image stored" in page.inner_text("#ps-status")
    page.wait_for_selector("#ps-source-preview img")


def test_two_references_a_strength_and_generate(page: Any, tmp_path: Path) -> None:
    from PIL import Image

    small, square = tmp_path / "reference-1.png", tmp_path / "reference-2.png"
    Image.new("RGB", (640, 480), (190, 150, 130)).save(small)
    Image.new("RGB", (1024, 1024), (120, 100, 90)).save(square)
    assert page.get_by_role("tab", name="Redux blend").get_attribute("aria-selected") == "true"
    assert not page.locator("#ps-redux-enabled input").is_checked()
    drop_file(page, "#ps-redux-upload-1", small)
    page.wait_for_selector("#ps-redux-preview-1 img")
    assert "640×480" in page.inner_text("#ps-redux-hints-1")
    assert page.locator("#ps-redux-enabled input").is_checked()  # the upload switched it on
    drop_file(page, "#ps-redux-upload-2", square)
    page.wait_for_selector("#ps-redux-preview-2 img")
    assert page.inner_text("#ps-redux-hints-2").strip() == ""

    move_slider(page, "#ps-redux-strength1", "85")
    number = "#ps-redux-strength1 input[type=number]"
    page.wait_for_function(f"() => document.querySelector('{number}').value === '85'")
    page.click("#ps-generate")
    report = wait_for_report(page, r"^ran: .*\bredux\b")
    assert "vision" in report
    page.wait_for_selector("#ps-current img")


def test_two_lora_slots_show_the_match_report_and_their_triggers(
    page: Any, studio_server: StudioServer
) -> None:
    if not hasattr(studio_server.engine, "lora_triggers"):
        pytest.skip("this engine has no LoRA API (list_loras, lora_triggers, lora_library)")
    open_tab(page, "Size / LoRA / Prompt")
    # Gradio nests a group's element in one with the same id: `.first` is the outer one.
    assert page.locator("#ps-lora-4").first.is_visible()
    assert not page.locator("#ps-lora-5").first.is_visible()
    choose(page, "#ps-lora-1-file", SKIN)
    page.wait_for_function(
        "() => document.querySelector('#ps-lora-1-trigger textarea').value === 'ohwx skin'"
    )
    page.fill("#ps-lora-1-strength-model input", "0.5")
    page.press("#ps-lora-1-strength-model input", "Tab")
    choose(page, "#ps-lora-2-file", FRECKLES)
    page.wait_for_function(
        "() => document.querySelector('#ps-lora-2-trigger textarea').value === 'frckls'"
    )
    page.wait_for_function(
        "() => document.querySelector('#ps-lora-total').innerText.includes('1.50')"
    )
    assert "keep the total ≤ 1.0" in page.inner_text("#ps-lora-total")
    page.fill("#ps-lora-2-strength-model input", "0.3")
    page.press("#ps-lora-2-strength-model input", "Tab")
    page.wait_for_function(
        "() => document.querySelector('#ps-lora-total').innerText.includes('0.80')"
    )
    assert "⚠" not in page.inner_text("#ps-lora-total")
    effective = page.inner_text("#ps-effective-prompt")
    assert "ohwx skin, frckls, close-up portrait" in effective

    page.click("#ps-generate")
    page.wait_for_function(
        "() => (document.querySelector('#ps-lora-report').innerText.match(/layers matched/g)"
        " || []).length === 2"
    )
    report = page.inner_text("#ps-lora-report")
    assert f"{SKIN} (peft): 1 of 1 layers matched" in report
    assert f"{FRECKLES} (peft): 1 of 1 layers matched" in report

    page.click("#ps-lora-add")
    page.wait_for_selector("#ps-lora-5", state="visible")
