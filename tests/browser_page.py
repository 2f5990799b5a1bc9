"""The page in a real headless Chromium (Debian's), driven by Playwright's sync API:
fixtures and the gestures the browser tests share."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, studio_server: Any) -> Iterator[Any]:
    """A fresh page on the shared studio server, its Generate button ready."""
    with open_page(browser, studio_server.url) as opened:
        yield opened


@contextmanager
def open_page(browser: Any, url: str) -> Iterator[Any]:
    """A 1400×1000 page on `url`, its Generate button ready; closed afterwards."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    page.wait_for_selector("#ps-generate:not([disabled])")
    yield page
    context.close()


def two_frames(page: Any) -> None:
    """Let a lazily rendered tab settle before its controls are touched."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def open_tab(page: Any, name: str) -> None:
    """Click a tab, through the "More tabs" menu when it does not fit in the row."""
    tab = page.get_by_role("tab", name=name, exact=True)
    if tab.count():
        tab.click()
    else:
        page.click("#ps-tabs button[aria-label='More tabs']")
        page.locator("#ps-tabs .overflow-dropdown button", has_text=name).click()
    two_frames(page)


def wait_for_report(page: Any, pattern: str) -> str:
    page.wait_for_function(
        "re => new RegExp(re).test(document.querySelector('#ps-report').innerText)", arg=pattern
    )
    return page.inner_text("#ps-report")


def drop_file(page: Any, selector: str, path: Path) -> None:
    """Drop a file on an upload box the way a person drags one from the desktop."""
    payload = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([data, name]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: 'image/png'}));
            return dt;
        }""",
        [payload, path.name],
    )
    target = f"{selector} .upload-container"
    for event in ("dragenter", "dragover", "drop"):
        page.dispatch_event(target, event, {"dataTransfer": transfer})


def choose(page: Any, selector: str, option: str) -> None:
    """Pick `option` in a Gradio dropdown the way a person does: open it, click the entry."""
    page.click(f"{selector} input")
    page.get_by_role("option", name=option).click()


def move_slider(page: Any, selector: str, value: str) -> None:
    """Set a Gradio slider's range input the way a drag ends (input, then pointerup)."""
    slider = page.locator(f"{selector} input[type=range]")
    slider.fill(value)
    slider.dispatch_event("pointerup")


def drag_image_slider(page: Any, selector: str) -> None:
    """Drag an ImageSlider's handle 120 px left and wait until its top image's clip moves."""
    top = page.locator(f"{selector} [data-testid=imageslider-image]").last
    before = top.evaluate("e => getComputedStyle(e).clipPath")
    handle = page.locator(f"{selector} [data-testid=slider]")
    handle.scroll_into_view_if_needed()
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 120, y, steps=6)
    page.mouse.up()
    page.wait_for_function(
        "([el, old]) => getComputedStyle(el).clipPath !== old",
        arg=[top.element_handle(), before],
    )
