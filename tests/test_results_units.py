"""The pieces under the results column: settled writes, A/B fitting, the progress clock,
lazy stage images, display files, rewriting a result's PNGs, and the render stream."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from engine.metadata import read_recipe_file
from engine.outputs import save_outputs, write_over
from engine.recipe import Recipe
from engine.recipe_json import set_path
from engine.runtypes import Progress
from engine.settled_writer import SettledWriter
from engine.stage_images import StageImages
from studio.ab_pair import BACKDROP, fit_pair
from studio.display import display_file
from studio.progress import ProgressClock, bar_html
from studio.render_stream import Done, Failed, Step, stream_render


def test_a_burst_for_one_key_writes_once_with_the_last_value() -> None:
    writer, written = SettledWriter(settle_s=0.2), []
    for value in range(20):
        writer.submit("result-1", lambda v=value: written.append(v))
    writer.submit("result-2", lambda: written.append("other"))
    assert writer.pending() == 2
    time.sleep(0.6)
    assert sorted(map(str, written)) == ["19", "other"]
    assert writer.pending() == 0


def test_flush_runs_pending_writes_now_and_a_failed_write_does_not_stop_the_writer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer, written = SettledWriter(settle_s=60), []

    def broken() -> None:
        raise OSError("disk full")

    with caplog.at_level(logging.ERROR, logger="engine.settled_writer"):
        writer.submit("a", broken)
        writer.submit("b", lambda: written.append("b"))
        started = time.monotonic()
        assert writer.flush(timeout=5)
    assert time.monotonic() - started < 5
    assert written == ["b"]
    assert "a deferred write failed" in caplog.text


def test_same_size_pairs_are_untouched_and_others_fit_the_larger_frame() -> None:
    a = Image.new("RGB", (64, 64), (200, 0, 0))
    same = fit_pair(a, Image.new("RGB", (64, 64), (0, 0, 200)))
    assert same.a is a and same.note == ""
    wide = Image.new("RGB", (40, 20), (0, 200, 0))
    fitted = fit_pair(a, wide)
    assert fitted.a.size == fitted.b.size == (64, 64)
    assert fitted.note == "A is 64×64, B is 40×20: both are shown fitted into 64×64."
    # 40×20 scaled by 1.6 is 64×32, centred: rows 16..47 hold it, the rest is backdrop.
    assert fitted.b.getpixel((32, 5)) == BACKDROP
    assert fitted.b.getpixel((32, 32)) == (0, 200, 0)
    bigger = fit_pair(wide, Image.new("RGB", (128, 128)))
    assert bigger.a.size == (128, 128) and "fitted into 128×128" in bigger.note


def test_the_clock_extrapolates_the_current_stages_pace() -> None:
    clock = ProgressClock(started=100.0)
    first = clock.view(Progress("base", 1, 10), now=102.0)
    assert (first.fraction, first.remaining) == (0.1, 2.0 * 9)
    later = clock.view(Progress("base", 4, 10), now=108.0)
    assert later.remaining == pytest.approx(8.0 / 4 * 6)
    assert later.text() == "base · step 4/10 · 8.0 s elapsed · ~12.0 s left"
    decode = clock.view(Progress("decode", 1, 2), now=110.0)
    assert decode.remaining == 2.0 and decode.elapsed == 10.0  # a new stage, a new pace
    assert 'aria-valuenow="40"' in bar_html(later.fraction, later.text())
    assert "width:40%" in bar_html(later.fraction, "<b>")
    assert "&lt;b&gt;" in bar_html(0.4, "<b>")


def test_stage_images_convert_each_stage_once_and_only_when_asked() -> None:
    calls = []

    def convert(tensor: str) -> list[str]:
        calls.append(tensor)
        return [tensor.upper()]

    images = StageImages({"decode": "d", "color": "c"}, convert)
    images.put("color", ["final"])
    assert list(images) == ["decode", "color"] and calls == []
    assert images["color"] == ["final"] and calls == []
    assert images["decode"] == ["D"] and images["decode"] == ["D"]
    assert calls == ["d"]


def test_display_files_are_named_by_content_and_keep_colour_detail() -> None:
    picture = Image.new("RGB", (32, 32), (10, 120, 240))
    first, again = display_file(picture), display_file(picture.copy())
    assert first == again and first.endswith(".jpg")
    with Image.open(first) as shown:
        assert shown.format == "JPEG" and shown.size == (32, 32)
        pixel = shown.getpixel((5, 5))
        assert max(abs(a - b) for a, b in zip(pixel, (10, 120, 240), strict=True)) <= 2
    assert display_file(Image.new("RGB", (32, 32))) != first


def test_write_over_rewrites_a_results_own_files_with_the_new_recipe(tmp_path: Path) -> None:
    recipe = set_path(Recipe(), "settings.seed", 7)
    images = [Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(2)]
    recipe = set_path(recipe, "prompt.batch_size", 2)
    paths = save_outputs(images, recipe, tmp_path)
    graded = set_path(recipe, "color.tone.contrast", 1.4)
    assert write_over(images, graded, paths) == paths
    assert sorted(tmp_path.iterdir()) == sorted(paths)
    second = read_recipe_file(paths[1])
    assert second.color.tone.contrast == 1.4 and second.settings.seed == 8
    with pytest.raises(ValueError):
        write_over(images[:1], graded, paths)


def test_the_stream_keeps_only_the_newest_progress_and_ends_with_the_result() -> None:
    release = threading.Event()

    def run(progress) -> str:
        for step in range(1, 6):
            progress(Progress("base", step, 5, preview=f"p{step}" if step < 4 else None))
        release.wait(5)
        return "result"

    events = stream_render(run)
    time.sleep(0.3)  # all five progress events queue up before the page asks
    step = next(events)
    release.set()
    assert isinstance(step, Step) and step.view.step == 5 and step.preview == "p3"
    done = next(events)
    assert isinstance(done, Done) and done.result == "result"


def test_the_stream_hands_over_a_failure() -> None:
    def run(progress) -> None:
        raise RuntimeError("out of memory")

    (event,) = list(stream_render(run))
    assert isinstance(event, Failed) and str(event.error) == "out of memory"


def test_a_progress_without_total_has_no_estimate() -> None:
    view = ProgressClock(started=0.0).view(
        SimpleNamespace(stage="text", step=0, total=0, message="encoding"), now=1.0
    )
    assert view.remaining is None and view.text() == "text · 1.0 s elapsed · encoding"


def test_a_toast_keeps_the_whole_message_and_shows_angle_brackets() -> None:
    from studio.toasts import toast_html

    text = "Put the file in <models>/loras.\nThen apply the preset again."
    expected = "Put the file in &lt;models&gt;/loras.<br>Then apply the preset again."
    assert toast_html(text) == expected
