"""The results column in Chromium: the live preview and progress bar in the result's place,
re-grades by every input path, A/B across sizes, Generate that cannot fire twice, and a
history that survives a restart of the server (the `--tiny` demo, with its LoRA files)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser_page import (
    CHROMIUM,
    browser,
    choose,
    open_page,
    open_tab,
    page,
)
from conftest import serving

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed"),
]

STATUS = "#ps-status .prose"
# Records, while a render runs, every progress value, every image shown in the result's
# place and whether Generate could be pressed, until the status line says "Done".
WATCH_RENDER = """() => new Promise(resolve => {
  const seen = {progress: [], sources: [], pressable: []};
  const observer = new MutationObserver(() => {
    const bar = document.querySelector('#ps-progress-box [role=progressbar]');
    if (bar) seen.progress.push(Number(bar.getAttribute('aria-valuenow')));
    const img = document.querySelector('#ps-current img');
    if (img && seen.sources.at(-1) !== img.src) seen.sources.push(img.src);
    seen.pressable.push(!document.querySelector('#ps-generate').disabled);
    if (/^Done/.test(document.querySelector('#ps-status .prose').innerText)) {
      observer.disconnect();
      resolve(seen);
    }
  });
  observer.observe(document.body, {subtree: true, childList: true, attributes: true,
                                   characterData: true});
  document.querySelector('#ps-generate').click();
})"""


def set_number(page: Any, selector: str, value: str) -> None:
    box = page.locator(f"{selector} input[type=number]")
    box.fill(value)
    box.press("Tab")


def status_after(page: Any, action: Any) -> str:
    """Do `action`, then wait for the status line to change; returns the new line."""
    before = page.inner_text(STATUS)
    action()
    page.wait_for_function(
        "old => document.querySelector('#ps-status .prose').innerText !== old", arg=before
    )
    return page.inner_text(STATUS)


def generate(page: Any) -> str:
    status_after(page, lambda: page.click("#ps-generate"))
    return wait_done(page)


def wait_done(page: Any) -> str:
    page.wait_for_function(
        "() => /^Done/.test(document.querySelector('#ps-status .prose').innerText)",
        timeout=120_000,
    )
    return page.inner_text(STATUS)


def no_error_badges(page: Any) -> bool:
    return (
        page.get_by_text("Error", exact=True).count() == 0
        and not page.locator("#ps-error").is_visible()
    )


def test_the_preview_and_the_progress_bar_take_the_results_place(page: Any) -> None:
    open_tab(page, "Size / LoRA / Prompt")
    set_number(page, "#ps-prompt-width", "512")
    set_number(page, "#ps-prompt-height", "512")
    open_tab(page, "Settings")
    set_number(page, "#ps-settings-steps", "48")
    seen = page.evaluate(WATCH_RENDER)
    running = [p for p in seen["progress"] if p < 100]
    assert len(set(running)) >= 2, seen["progress"]
    assert running == sorted(running) or len(set(running)) >= 3  # stages restart at 0
    assert len(seen["sources"]) >= 3, "step previews, then the result, in one place"
    assert False in seen["pressable"]  # Generate was off while rendering...
    assert page.locator("#ps-generate").is_enabled()  # ...and is back now
    assert "rendered in" in page.inner_text("#ps-progress-box")


def test_enter_arrow_keys_and_typing_regrade_every_colour_control(page: Any) -> None:
    generate(page)
    open_tab(page, "Color")
    numbers = [
        ("#ps-color-exposure-exposure", "12"),
        ("#ps-color-grain-power", "0.3"),
        ("#ps-color-grain-scale", "0.5"),
        ("#ps-color-grain-saturation", "0.6"),
        ("#ps-color-grain-seed", "5"),
        ("#ps-color-tone-brightness", "1.1"),
        ("#ps-color-tone-contrast", "1.3"),
        ("#ps-color-tone-saturation", "0.8"),
        ("#ps-color-lut-strength", "40"),
    ]
    for selector, value in numbers:
        box = page.locator(f"{selector} input[type=number]")
        line = status_after(
            page, lambda box=box, value=value: (box.fill(value), box.press("Enter"))
        )
        assert line.startswith("Re-graded"), (selector, line)
        box.press("Enter")  # Enter on a value already graded: nothing to do, and no error
        page.wait_for_timeout(400)
        assert no_error_badges(page), selector
    for selector in ("#ps-color-tone-contrast", "#ps-color-exposure-exposure"):
        slider = page.locator(f"{selector} input[type=range]")
        slider.focus()
        before = slider.input_value()
        line = status_after(page, lambda slider=slider: slider.press("ArrowRight"))
        assert line.startswith("Re-graded") and slider.input_value() != before
        assert no_error_badges(page)
    typed = page.locator("#ps-color-tone-brightness input[type=number]")
    typed.click()
    typed.press("Control+a")
    line = status_after(page, lambda: typed.type("0.9"))
    assert line.startswith("Re-graded") and no_error_badges(page)
    assert page.inner_text("#ps-report .prose").startswith("ran:")


def test_ab_between_two_sizes_fits_both_in_one_frame(page: Any) -> None:
    generate(page)
    open_tab(page, "Size / LoRA / Prompt")
    set_number(page, "#ps-prompt-width", "384")
    generate(page)
    page.click("#ps-ab-box button")
    choose(page, "#ps-compare-a", "previous result (final)")
    page.wait_for_function(
        "() => document.querySelector('#ps-ab-note').innerText.includes('fitted into 384×256')"
    )
    frame = page.locator("#ps-ab").bounding_box()
    images = page.locator("#ps-ab img")
    assert images.count() == 2
    for i in range(2):
        box = images.nth(i).bounding_box()
        assert box["x"] >= frame["x"] - 1 and box["y"] >= frame["y"] - 1
        assert box["x"] + box["width"] <= frame["x"] + frame["width"] + 1
        assert box["y"] + box["height"] <= frame["y"] + frame["height"] + 1


def test_a_double_click_on_generate_renders_once(page: Any, studio_server: Any) -> None:
    outputs = studio_server.engine.config.outputs_dir
    before = set(outputs.glob("*.png"))
    page.dblclick("#ps-generate")
    wait_done(page)
    time.sleep(1.5)  # a second run would have started by now
    assert page.inner_text(STATUS).startswith("Done")
    assert len(set(outputs.glob("*.png")) - before) == 1


@pytest.fixture
def demo_server(studio_dir: Path) -> Iterator[str]:
    """A second server over the first one's outputs and data: the studio after a restart,
    set up as `app.py --tiny` sets it up (with the demo LoRA files)."""
    import app
    from engine.engine import Engine, EngineConfig
    from engine.models.manager import ModelConfig

    args = argparse.Namespace(tiny=True, models=None, data=studio_dir / "data")
    models = ModelConfig(models_dir=app.models_dir_for(args), tiny=True, device="cpu")
    config = EngineConfig(
        models=models, outputs_dir=studio_dir / "outputs", data_dir=studio_dir / "data"
    )
    with serving(Engine(config), studio_dir) as server:
        yield server.url


def test_history_survives_a_restart_restores_on_click_and_deletes(
    browser: Any, page: Any, demo_server: str, studio_dir: Path
) -> None:
    page.fill("#ps-prompt-prompt textarea", "kept across a restart")
    generate(page)
    kept = max((studio_dir / "outputs").glob("*.png"), key=lambda p: p.stat().st_mtime)
    with open_page(browser, demo_server) as later:
        thumbs = later.locator("#ps-history .thumbnail-item")
        thumbs.first.wait_for()
        count = thumbs.count()
        later.fill("#ps-prompt-prompt textarea", "something else")
        thumbs.first.click()
        later.wait_for_function(
            "() => document.querySelector('#ps-prompt-prompt textarea').value"
            " === 'kept across a restart'"
        )
        assert "from the history" in later.inner_text(STATUS)
        later.wait_for_selector("#ps-current img")
        status_after(later, lambda: later.click("#ps-history-delete"))
        assert "stays in the outputs folder" in later.inner_text(STATUS)
        later.wait_for_function(
            "n => document.querySelectorAll('#ps-history .thumbnail-item').length === n",
            arg=count - 1,
        )
    assert kept.exists()


def test_the_demo_lora_slot_renders_with_a_tiny_lora(browser: Any, demo_server: str) -> None:
    with open_page(browser, demo_server) as demo:
        open_tab(demo, "Size / LoRA / Prompt")
        choose(demo, "#ps-lora-1-file", "demo_skin_texture.safetensors")
        demo.wait_for_function(
            "() => document.querySelector('#ps-lora-1-trigger textarea').value !== ''"
        )
        generate(demo)
        demo.wait_for_function(
            "() => document.querySelector('#ps-lora-report').innerText.includes('layers matched')"
        )
        report = demo.inner_text("#ps-lora-report")
        assert "demo_skin_texture.safetensors" in report and "9 of 9 layers matched" in report


def test_at_1280_px_the_prompt_is_above_every_tab_and_no_tab_hides(
    browser: Any, studio_server: Any
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 768})
    try:
        small = context.new_page()
        small.goto(studio_server.url)
        small.wait_for_selector("#ps-generate:not([disabled])")
        assert small.locator("#ps-tabs button[aria-label='More tabs']").count() == 0
        prompt = small.locator("#ps-prompt-prompt textarea").bounding_box()
        for name in ("Redux blend", "Size / LoRA / Prompt", "Settings", "Latent", "Color"):
            tab = small.get_by_role("tab", name=name, exact=True)
            assert tab.is_visible(), name
            assert tab.bounding_box()["y"] > prompt["y"] + prompt["height"]
        current = small.locator("#ps-current").bounding_box()
        assert current["x"] > prompt["x"] + prompt["width"]  # beside the controls, not below
    finally:
        context.close()
