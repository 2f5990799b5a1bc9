"""Stopping a render from every side: Stop, an API cancel, and a browser that went away.

Gradio cancels an event by cancelling its asyncio task, and closes a generator's iterator;
neither reaches a render running on a worker thread. So each render carries a CancelToken
that the engine checks between steps, and these helpers set it:
- `run_cancellable` runs a blocking render on a thread and, when its task is cancelled
  (API cancel), sets the token and waits for the engine to stop, so the queue slot is
  free for the next job only once the GPU is;
- `RunningRenders` maps a browser session to the token of its render, so the page's
  unload (Gradio's disconnect signal) stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

from engine.runtypes import CancelToken

T = TypeVar("T")


async def run_cancellable(work: Callable[[], T], cancel: CancelToken) -> T:
    """`work()` on a worker thread; a cancelled caller sets `cancel` and waits for the
    engine to stop (it does so between two steps) before the cancellation goes on."""
    future = asyncio.get_running_loop().run_in_executor(None, work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.cancel()
        with contextlib.suppress(BaseException):
            await future
        raise


class RunningRenders:
    """The CancelToken of each browser session's render in progress."""

    def __init__(self) -> None:
        self._tokens: dict[str, CancelToken] = {}
        self._lock = threading.Lock()

    def start(self, session: str, token: CancelToken) -> None:
        with self._lock:
            self._tokens[session] = token

    def finish(self, session: str, token: CancelToken) -> None:
        with self._lock:
            if self._tokens.get(session) is token:
                del self._tokens[session]

    def cancel(self, session: str) -> bool:
        """Stop the session's render; False when nothing was rendering."""
        with self._lock:
            token = self._tokens.pop(session, None)
        if token is None:
            return False
        token.cancel()
        return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens)
