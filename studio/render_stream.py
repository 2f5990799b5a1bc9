"""A render on a worker thread, its progress events turned into page updates as they come.

Only the newest progress event is worth a round trip to the browser, so events that queued
up while the page was busy are dropped in favour of the latest.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from studio.progress import ProgressClock, ProgressView


@dataclass(frozen=True)
class Step:
    """One progress event as the page shows it."""

    view: ProgressView
    preview: Any


@dataclass(frozen=True)
class Done:
    result: Any
    seconds: float


@dataclass(frozen=True)
class Failed:
    error: BaseException


Event = Step | Done | Failed


def stream_render(run: Callable[[Callable[[Any], None]], Any]) -> Iterator[Event]:
    """Call `run(progress)` on a thread; yield a Step per (newest) progress event, then a
    Done with the result or a Failed with the exception."""
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    clock = ProgressClock()

    def work() -> None:
        try:
            events.put(("done", run(lambda p: events.put(("progress", p)))))
        except BaseException as exc:  # handed to the page, never lost
            events.put(("error", exc))

    threading.Thread(target=work, name="studio-render", daemon=True).start()
    while True:
        kind, item = events.get()
        if kind == "progress":
            latest, preview, (kind, item) = _newest_progress(events, item)
            yield Step(clock.view(latest), preview)
        if kind == "done":
            yield Done(item, time.monotonic() - clock.started)
            return
        if kind == "error":
            yield Failed(item)
            return


def _newest_progress(events: queue.Queue, first: Any) -> tuple[Any, Any, tuple[str, Any]]:
    """Drain queued progress events: the newest one, the newest preview among them, and
    the event that ended the drain (("", None) when the queue ran empty)."""
    latest, preview = first, first.preview
    while not events.empty():
        kind, item = events.get()
        if kind != "progress":
            return latest, preview, (kind, item)
        latest = item
        preview = item.preview if item.preview is not None else preview
    return latest, preview, ("", None)
