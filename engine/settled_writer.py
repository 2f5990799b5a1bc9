"""Writes that wait for a value to settle: the newest job per key runs once nothing newer
arrived for a moment, on one background thread.

A colour slider fires a re-grade per move; the PNG on disk only has to follow the grade the
person settles on, and writing it must never hold up the next move.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
Job = Callable[[], None]


class SettledWriter:
    """Keyed, debounced background jobs: a new job for a key replaces the pending one."""

    def __init__(self, settle_s: float = 0.6) -> None:
        self.settle_s = settle_s
        self._pending: dict[str, tuple[float, Job]] = {}
        self._running = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, key: str, job: Job) -> None:
        """Run `job` after `settle_s` unless another job for `key` arrives first."""
        with self._cond:
            self._pending[key] = (time.monotonic() + self.settle_s, job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="settled-writer")
                self._thread.daemon = True
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Run every pending job now and wait for them; False if they did not finish in time."""
        with self._cond:
            self._pending = {k: (0.0, job) for k, (_, job) in self._pending.items()}
            self._cond.notify_all()
            return self._cond.wait_for(lambda: not self._pending and not self._running, timeout)

    def pending(self) -> int:
        with self._cond:
            return len(self._pending) + self._running

    def _loop(self) -> None:
        while True:
            job = self._next_due()
            try:
                job()
            except Exception:  # a failed write is logged; the studio keeps serving
                log.exception("a deferred write failed")
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

    def _next_due(self) -> Job:
        with self._cond:
            while True:
                now = time.monotonic()
                due = [(when, key) for key, (when, _) in self._pending.items() if when <= now]
                if due:
                    _, key = min(due)
                    self._running += 1
                    return self._pending.pop(key)[1]
                wait = min((w for w, _ in self._pending.values()), default=now + 3600) - now
                self._cond.wait(timeout=max(wait, 0.001))
