"""A served studio under hostile and concurrent use: every bad request gets a message that
says what is wrong, the server keeps serving, and 8 clients × 5 renders all come back right."""

from __future__ import annotations

import hashlib
import json
import statistics
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bad_inputs import png_with_text
from conftest import build_studio_page, fresh_tiny_engine, serving

CLIENTS, RENDERS = 8, 5
TINY = {"prompt": {"width": 64, "height": 64}, "settings": {"steps": 2}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    folder = tmp_path_factory.mktemp("hostile")
    with serving(fresh_tiny_engine(folder), folder) as served:
        yield served


def client(server: Any) -> Any:
    from gradio_client import Client

    return Client(server.url, verbose=False)


def render_error(server: Any, text: str) -> str:
    """The error text a program gets for the recipe `text`."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as failed:
        client(server).predict(text, api_name="/render")
    return str(failed.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[" * 100_000 + "]" * 100_000, "nests deeper than 32 levels"),
        ('{"prompt": {"prompt": "a\\ud800b"}}', "lone UTF-16 surrogate"),
        ('{"prompt": {"negative_prompt": "x\\u0000"}}', "NUL character"),
        ('{"settings": {"seed": 1, "seed": 2}}', "the key 'seed' twice"),
        ("", "Send {} (an empty JSON object) for the default recipe"),
        ("\ufeff" + json.dumps(TINY), None),  # a BOM is fine, as in the CLI
    ],
)
def test_hostile_recipes_get_a_message_and_the_server_keeps_serving(
    server: Any, text: str, expected: str | None
) -> None:
    if expected is None:
        files, report = client(server).predict(text, api_name="/render")
        assert len(files) == 1 and "ran" in report
        return
    message = render_error(server, text)
    assert expected in message and "Unexpected error" not in message
    files, _ = client(server).predict(json.dumps(TINY), api_name="/render")
    assert len(files) == 1


def test_a_huge_prompt_is_refused_before_any_work(server: Any) -> None:
    text = json.dumps({"prompt": {"prompt": "x" * 200_001}})
    started = time.monotonic()
    message = render_error(server, text)
    assert "the limit is 20,000" in message
    assert time.monotonic() - started < 20


def test_a_render_over_the_budget_is_refused_with_its_estimate(server: Any) -> None:
    engine = server.engine
    budget = engine.guard.budget
    engine.guard.budget = type(budget)(max_seconds=budget.max_seconds, max_gb=0.5)
    try:
        big = {"prompt": {"width": 4096, "height": 4096, "batch_size": 4}}
        message = render_error(server, json.dumps(big))
    finally:
        engine.guard.budget = budget
    assert "over the studio's run budget" in message and " peak on CPU" in message
    assert "It would fit with" in message


def test_restoring_a_png_with_a_huge_parameters_chunk_shows_why(
    server: Any, tmp_path: Path
) -> None:
    from studio.session import Session

    page = build_studio_page(server.engine, tmp_path / "golden.json")
    png = tmp_path / "huge.png"
    png.write_bytes(png_with_text("parameters", "x" * 2_000_000))

    updates = page.studio.restore(Session(base=server.engine.default_recipe()), str(png))
    shown = " ".join(str(v) for v in updates.values())
    assert "text is 2,000,000 bytes; the limit is 262,144 bytes" in shown
    assert "Not restored" in shown


def test_restoring_a_deeply_nested_recipe_file_shows_why(server: Any, tmp_path: Path) -> None:
    from studio.session import Session

    page = build_studio_page(server.engine, tmp_path / "golden.json")
    nested = tmp_path / "nested.json"
    nested.write_text('{"prompt": ' * 50_000 + "{}" + "}" * 50_000)
    updates = page.studio.restore(Session(base=server.engine.default_recipe()), str(nested))
    shown = " ".join(str(v) for v in updates.values())
    assert "nests deeper than 32 levels" in shown and "Not restored" in shown


def test_eight_clients_render_five_times_each_correct_and_reproducible(server: Any) -> None:
    results: dict[tuple[int, int], str] = {}
    failures: list[str] = []
    latencies: list[float] = []
    done = threading.Event()

    def one_client(index: int) -> None:
        me = client(server)
        for round_ in range(RENDERS):
            seed = round_ % 2  # identical recipes across clients and rounds
            recipe = {**TINY, "settings": {"steps": 2, "seed": seed}}
            try:
                files, _ = me.predict(json.dumps(recipe), api_name="/render")
                results[index, round_] = hashlib.sha256(Path(files[0]).read_bytes()).hexdigest()
            except Exception as exc:  # collected, so the test names every failure
                failures.append(f"client {index} round {round_}: {exc}")

    def cheap_requests() -> None:
        while not done.is_set():
            started = time.monotonic()
            with urllib.request.urlopen(server.url + "config", timeout=30) as reply:
                reply.read()
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)

    watcher = threading.Thread(target=cheap_requests)
    watcher.start()
    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    done.set()
    watcher.join()
    assert not failures, failures
    assert len(results) == CLIENTS * RENDERS
    by_seed = {seed: {h for (_, r), h in results.items() if r % 2 == seed} for seed in (0, 1)}
    assert all(len(hashes) == 1 for hashes in by_seed.values()), by_seed
    assert by_seed[0] != by_seed[1]
    ms = sorted(1000 * t for t in latencies)
    print(
        f"\n/config while {CLIENTS}×{RENDERS} renders ran: {len(ms)} requests, median "
        f"{statistics.median(ms):.0f} ms, p95 {ms[int(0.95 * (len(ms) - 1))]:.0f} ms, "
        f"max {ms[-1]:.0f} ms"
    )
