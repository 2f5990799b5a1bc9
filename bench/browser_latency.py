"""Re-grade latency as a person feels it: Chromium against a `--tiny` studio.

For each size, one Generate, then re-grades of the Color tab's contrast slider: 10 to new
values (the colour stage runs) and 10 back to values already graded (served from the cache:
nothing runs). Each re-grade is timed inside the page, from the slider's release to the
status line changing and every image on the page being loaded. The figures: the median
browser round trip, the colour stage's own time from the run report, and their difference
(what the page, Gradio and the encoding add). Absolute times depend on the machine.

Run: .venv/bin/python bench/browser_latency.py [--sizes 256 1024] [--moves 10]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
STAGE_MS = re.compile(r"\bcolor (\d+(?:\.\d+)?) ms")

# Moves the slider, then resolves with the milliseconds until the status line changed and
# every image on the page finished loading (polled every animation frame).
TIMED_RELEASE = """([value]) => new Promise(resolve => {
  // The text itself: Gradio's progress timer also lives inside the component.
  const status = () => document.querySelector('#ps-status .prose').innerText;
  const before = status();
  const slider = document.querySelector('#ps-color-tone-contrast input[type=range]');
  const t0 = performance.now();
  slider.value = value;
  slider.dispatchEvent(new Event('input', {bubbles: true}));
  slider.dispatchEvent(new Event('change', {bubbles: true}));
  slider.dispatchEvent(new PointerEvent('pointerup', {bubbles: true}));
  const poll = () => {
    const loaded = [...document.images].every(i => i.complete);
    if (status() !== before && loaded) resolve(performance.now() - t0);
    else requestAnimationFrame(poll);
  };
  requestAnimationFrame(poll);
})"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def tiny_studio(folder: Path) -> Iterator[str]:
    """`app.py --tiny` on a free port, with its own data and outputs folders."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "app.py", "--tiny", "--port", str(port)]
    command += ["--data", str(folder / "data"), "--outputs", str(folder / "outputs")]
    log = (folder / "studio.log").open("w")
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def generate_at(page, size: int) -> None:
    open_tab(page, "Size / LoRA / Prompt")
    for field in ("width", "height"):
        box = page.locator(f"#ps-prompt-{field} input[type=number]")
        box.fill(str(size))
        box.press("Tab")
    before = page.inner_text("#ps-status .prose")
    page.click("#ps-generate")
    page.wait_for_function(
        "old => { const s = document.querySelector('#ps-status .prose').innerText;"
        " return s !== old && /^Done/.test(s); }",
        arg=before,
        timeout=600_000,
    )
    open_tab(page, "Color")


def regrade(page, value: float) -> tuple[float, float]:
    """(browser round trip ms, colour stage ms from the report: 0 when nothing ran)."""
    round_trip = page.evaluate(TIMED_RELEASE, [str(value)])
    match = STAGE_MS.search(page.inner_text("#ps-report"))
    return round_trip, float(match.group(1)) if match else 0.0


def measure(page, size: int, moves: int) -> dict[str, float]:
    generate_at(page, size)
    fresh = [regrade(page, 1.0 + 0.03 * (i + 1)) for i in range(moves)]
    cached = [regrade(page, 1.0 + 0.03 * (1 + i % 2)) for i in range(moves)]
    trip = statistics.median(t for t, _ in fresh)
    stage = statistics.median(s for _, s in fresh)
    return {
        "round trip": trip,
        "colour stage": stage,
        "difference": statistics.median(t - s for t, s in fresh),
        "nothing ran": statistics.median(t for t, _ in cached),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--moves", type=int, default=10)
    parser.add_argument("--url", help="an already running studio (else a --tiny one starts)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        studio = tiny_studio(Path(tmp)) if not args.url else nullcontext(args.url)
        with sync_playwright() as playwright, studio as url:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.wait_for_selector("#ps-generate:not([disabled])")
            print("| size | round trip | colour stage | difference | nothing ran |")
            print("|---|---|---|---|---|")
            for size in args.sizes:
                row = measure(page, size, args.moves)
                cells = " | ".join(f"{row[k]:.0f} ms" for k in row)
                print(f"| {size}² | {cells} |", flush=True)
            browser.close()


if __name__ == "__main__":
    main()
