"""ZeroGPU on a Hugging Face Space: the render runs under `spaces.GPU(duration=...)`.

Optional and isolated: without the `spaces` package (anywhere but a Space) nothing changes.
`spaces` must be imported before torch, so app.py calls `zero_gpu` before it imports the
engine, and wraps the engine afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def zero_gpu(duration: int) -> Decorator | None:
    """`spaces.GPU(duration=duration)` when the `spaces` package is there, else None."""
    try:
        import spaces  # type: ignore[import-not-found]  # only on Hugging Face Spaces
    except ImportError:
        return None
    log.info("ZeroGPU: each render may hold the GPU for up to %d s.", duration)
    return spaces.GPU(duration=duration)


class GpuEngine:
    """The engine as the studio sees it, with `run` (the only function that renders) under
    the ZeroGPU decorator; everything else is the engine's own."""

    def __init__(self, engine: Any, gpu: Decorator) -> None:
        self._engine = engine
        self._run = gpu(engine.run)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self._run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def on_zero_gpu(engine: Any, gpu: Decorator | None) -> Any:
    """`engine` with its renders under `gpu`, or `engine` itself when there is no ZeroGPU."""
    return engine if gpu is None else GpuEngine(engine, gpu)
