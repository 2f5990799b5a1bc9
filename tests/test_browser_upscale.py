"""The Upscale tab in a real headless Chromium: upscale a small uploaded photo with both passes
on, see the report, the tile grid and the 100 % crop, then change only Upscale 1's seam fix
and see its tiles come from the cache while the seam fix runs."""

from __future__ import annotations

import io
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
from studio.panels.upscale import REDRAW_COLOUR
from studio.upscale_callbacks import IDLE

__all__ = ["browser", "page"]  # fixtures

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed"),
]
BOTH_PASSES = r"^ran: .*first_tiles \d+ ms.*final_tiles \d+ ms"
# Only the seam fix changed: Upscale 1's tiles come cached, its seams and what follows run.
SEAMS_ONLY = r"^ran: .*first_seams \d+ ms.*final_tiles \d+ ms.* · cached: .*first_tiles"
QUICK_PASS = (("tile-width", "128"), ("tile-height", "128"), ("steps", "2"))


def quick_pass(page: Any, name: str) -> None:
    """Switch a pass on with 128 px tiles and 2 steps (no result on screen yet: nothing runs)."""
    if not page.is_visible(f"#ps-upscale-{name}-enabled"):
        page.click(f"#ps-upscale-{name} button")  # the accordion's header
    page.check(f"#ps-upscale-{name}-enabled input")
    for field, value in QUICK_PASS:
        move_slider(page, f"#ps-upscale-{name}-{field}", value)


def shown_image(page: Any, selector: str) -> np.ndarray:
    """The RGB pixels of the image an <img> shows, fetched as the browser fetched them."""
    source = page.locator(f"{selector} img").get_attribute("src")
    response = page.request.get(source)
    assert response.ok, source
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def near(pixels: np.ndarray, colour: str) -> np.ndarray:
    """Where the pixels are within 48 of `colour` on every channel (the image is lossy)."""
    return np.abs(pixels.astype(int) - ImageColor.getrgb(colour)).max(axis=-1) <= 48


def test_both_passes_on_an_uploaded_photo_then_only_the_seam_fix(page: Any, tmp_path: Path) -> None:
    from skimage import data

    page.set_default_timeout(120_000)  # tiled passes on the CPU
    photo = tmp_path / "small.png"
    Image.fromarray(data.astronaut()).resize((128, 128), Image.Resampling.LANCZOS).save(photo)
    open_tab(page, "Upscale")
    page.check("#ps-upscale-enabled input")
    page.wait_for_function(
        "t => document.querySelector('#ps-status').innerText.includes(t)", arg=IDLE[:30]
    )
    quick_pass(page, "first")
    quick_pass(page, "final")
    drop_file(page, "#ps-upscale-upload", photo)
    report = wait_for_report(page, BOTH_PASSES)
    assert page.locator("#ps-error").is_hidden(), page.inner_text("#ps-error")
    assert "first_seams" not in report.split(" · ")[0]  # seam fix none: nothing to run

    tiles = page.locator("#ps-upscale-tiles img")
    tiles.scroll_into_view_if_needed()  # a lazy image loads (and shows) once in view
    tiles.wait_for(state="visible")
    assert "Tiles of Upscale final: 4 redraw" in page.inner_text("#ps-upscale-tiles")
    drawn = shown_image(page, "#ps-upscale-tiles")
    assert drawn.shape[:2] == (256, 256)
    assert near(drawn[0, 8:-8], REDRAW_COLOUR).mean() > 0.8  # the top tiles' upper edge
    assert near(drawn[:, 128, :][8:-8], REDRAW_COLOUR).mean() > 0.8  # the line between them
    page.wait_for_selector("#ps-upscale-ab [data-testid=imageslider-image]")
    drag_image_slider(page, "#ps-upscale-ab")

    page.locator("#ps-upscale-first-seam-fix").get_by_label("Half tile", exact=True).check()
    wait_for_report(page, SEAMS_ONLY)
    assert "Upscaled" in page.inner_text("#ps-status")
    assert page.locator("#ps-error").is_hidden(), page.inner_text("#ps-error")
