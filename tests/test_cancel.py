"""Cancelling stops the engine itself: an API cancel, a closed generator (what Gradio does
to the page's render on cancel) and a browser that went away all stop the render between
two steps, and the next job starts at once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import build_studio_page, fresh_tiny_engine, serving
from engine.graph import StageContext
from engine.runtypes import CancelToken
from studio.cancels import RunningRenders

LONG = {"prompt": {"width": 512, "height": 512, "batch_size": 4}, "settings": {"steps": 150}}
SHORT = {"prompt": {"width": 64, "height": 64}, "settings": {"steps": 1}}


class StepLog:
    """Times of every engine step, recorded by wrapping StageContext.step."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.times: list[float] = []
        self.stopped = threading.Event()
        real = StageContext.step
        log = self

        def step(ctx: StageContext, *args: Any, **kwargs: Any) -> None:
            try:
                real(ctx, *args, **kwargs)
            except BaseException:
                log.stopped.set()
                raise
            log.times.append(time.monotonic())

        monkeypatch.setattr(StageContext, "step", step)

    def wait_for_steps(self, count: int, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while len(self.times) < count:
            assert time.monotonic() < end, "the render never started stepping"
            time.sleep(0.02)


@pytest.fixture()
def own_server(tmp_path: Path) -> Iterator[Any]:
    with serving(fresh_tiny_engine(tmp_path), tmp_path) as server:
        yield server


def test_api_cancel_stops_the_render_within_a_step_and_frees_the_queue(
    own_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gradio_client import Client

    steps = StepLog(monkeypatch)
    client = Client(own_server.url, verbose=False)
    job = client.submit(json.dumps(LONG), api_name="/render")
    steps.wait_for_steps(3)
    asked = time.monotonic()
    job.cancel()
    assert steps.stopped.wait(30), "the engine did not stop"
    after = [t for t in steps.times if t > asked]
    assert len(after) <= 2, f"{len(after)} steps ran after the cancel"
    started = time.monotonic()
    files, report = client.predict(json.dumps(SHORT), api_name="/render")
    assert report["ran"] and len(files) == 1
    assert time.monotonic() - started < 30


def test_a_closed_render_generator_stops_the_engine(
    tiny_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.recipe import Recipe
    from engine.recipe_json import recipe_from_dict

    page = build_studio_page(tiny_engine, tmp_path / "golden_seeds.json")
    steps = StepLog(monkeypatch)
    recipe = recipe_from_dict(LONG, Recipe())
    updates = page.studio.generate(page.values(recipe))
    next(updates)  # "Rendering with seed …"
    next(updates)  # the first progress event: the render thread is stepping
    steps.wait_for_steps(2)
    updates.close()  # what Gradio does to the iterator of a cancelled event
    assert steps.stopped.wait(30), "the engine went on after the generator was closed"
    assert len(page.studio.running) == 0


def test_the_page_unloading_stops_that_browser_s_render(
    tiny_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from engine.recipe import Recipe
    from engine.recipe_json import recipe_from_dict

    page = build_studio_page(tiny_engine, tmp_path / "golden_seeds.json")
    steps = StepLog(monkeypatch)
    browser = SimpleNamespace(session_hash="tab-1", username=None)
    updates = page.studio.generate(page.values(recipe_from_dict(LONG, Recipe())), browser)
    next(updates)
    next(updates)
    page.studio.disconnected(SimpleNamespace(session_hash="another-tab"))
    assert not steps.stopped.is_set()  # another browser's unload stops nothing here
    page.studio.disconnected(browser)  # what Gradio calls when this tab goes away
    assert steps.stopped.wait(30), "the render went on after its browser left"
    last = list(updates)[-1]
    assert any("Stopped" in str(v) for v in last.values())


def test_a_browser_that_goes_away_stops_its_render() -> None:
    running = RunningRenders()
    mine, other = CancelToken(), CancelToken()
    running.start("session-a", mine)
    running.start("session-b", other)
    assert running.cancel("session-a") is True
    assert mine.cancelled and not other.cancelled
    assert running.cancel("session-a") is False  # nothing left to stop
    running.finish("session-b", other)
    assert len(running) == 0
