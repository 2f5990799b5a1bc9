"""Several engines behind one studio: renders run side by side on free engines, and a
re-grade goes to the engine whose cache holds the image."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.engine import EngineConfig
from engine.models.manager import ModelConfig
from engine.pool import EnginePool
from engine.recipe import Recipe
from engine.recipe_json import set_path


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> EnginePool:
    root: Path = tmp_path_factory.mktemp("pool")
    config = EngineConfig(
        models=ModelConfig(tiny=True, device="cpu"), outputs_dir=root / "o", data_dir=root / "d"
    )
    return EnginePool.on_devices(config, ["cpu", "cpu"])


def recipe(prompt: str, **paths) -> Recipe:
    r = Recipe()
    base = {"prompt.width": 64, "prompt.height": 64, "settings.steps": 2, "prompt.prompt": prompt}
    for path, value in {**base, **paths}.items():
        r = set_path(r, path, value)
    return r


def test_two_renders_run_at_the_same_time_on_two_engines(pool: EnginePool) -> None:
    both_sampling = threading.Barrier(2, timeout=60)
    seen: dict[str, list[str]] = {}

    def waits_for_the_other(progress) -> None:
        if progress.stage == "base" and progress.step == 1:
            both_sampling.wait()  # times out (BrokenBarrierError) if the pool ran them in turn
            seen.setdefault("lines", pool.queue_lines())

    results: dict[str, object] = {}

    def render(prompt: str) -> None:
        results[prompt] = pool.run(recipe(prompt), progress=waits_for_the_other, save=False)

    threads = [threading.Thread(target=render, args=(p,)) for p in ("a cat", "a dog")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    engines = {
        next(n for n in r.report.notes if n.startswith("Rendered on")) for r in results.values()
    }
    assert engines == {
        "Rendered on engine 1 (cpu).",
        "Rendered on engine 2 (cpu).",
    }
    assert all("rendering “a" in line for line in seen["lines"])
    assert all(line.endswith("free") for line in pool.queue_lines())


def test_a_regrade_goes_to_the_engine_that_holds_the_image(pool: EnginePool) -> None:
    portrait = recipe("a portrait of a violinist")
    pool.engines[1].run(portrait, save=False)  # only engine 2's cache holds it
    regraded = pool.run(set_path(portrait, "color.exposure.exposure", 16), save=False)
    assert regraded.report.ran_names == ["color"]
    assert "Rendered on engine 2 (cpu)." in regraded.report.notes


def test_everything_else_is_served_by_the_first_engine(pool: EnginePool) -> None:
    assert pool.size == 2
    assert pool.list_loras() == pool.engines[0].list_loras()
    assert pool.default_recipe() == pool.engines[0].default_recipe()


def test_a_regrade_does_not_wait_behind_a_render_on_its_engine(pool: EnginePool) -> None:
    portrait = recipe("a portrait of a cellist")
    pool.engines[0].run(portrait, save=False)
    started, release = threading.Event(), threading.Event()

    def hold(progress) -> None:
        if progress.stage == "base":
            started.set()
            release.wait(timeout=60)

    busy = threading.Thread(
        target=lambda: pool.engines[0].run(recipe("a long render"), progress=hold, save=False)
    )
    slot = pool._slots[0]
    with slot.lock:  # engine 1 is rendering something else through the pool
        busy.start()
        assert started.wait(timeout=60)
        regraded = pool.run(set_path(portrait, "color.exposure.exposure", -16), save=False)
    release.set()
    busy.join(timeout=60)
    assert regraded.report.ran_names == ["color"]
    assert "Rendered on engine 1 (cpu)." in regraded.report.notes


def test_the_studio_over_a_pool_renders_two_at_once_and_shows_the_engines(pool) -> None:
    import studio

    demo = studio.build_ui(pool)
    limits = {fn.concurrency_limit for fn in demo.fns.values() if fn.concurrency_id == "gpu"}
    assert limits == {2}
    markdown = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "ps-engines"]
    assert markdown and "Engine 1 · cpu · free" in markdown[0].value


def test_app_builds_a_pool_only_for_several_devices(tmp_path) -> None:
    from app import build_engine

    config = EngineConfig(
        models=ModelConfig(tiny=True), outputs_dir=tmp_path / "o", data_dir=tmp_path / "d"
    )
    assert isinstance(build_engine(config, "cpu,cpu"), EnginePool)
    single = build_engine(config, "cpu")
    assert not isinstance(single, EnginePool) and str(single.device) == "cpu"
