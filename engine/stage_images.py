"""A run's per-stage images, converted from tensors only when someone looks at them.

A colour re-grade needs only the final image in the browser; converting every stage's
1024² tensor to PIL on each slider move would cost more than the grade itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from PIL import Image


class StageImages(Mapping[str, list[Image.Image]]):
    """stage name -> PIL images, each stage converted once on first access."""

    def __init__(self, tensors: Mapping[str, Any], convert: Callable[[Any], list[Image.Image]]):
        self._tensors = dict(tensors)
        self._convert = convert
        self._done: dict[str, list[Image.Image]] = {}

    def put(self, name: str, images: list[Image.Image]) -> None:
        """A stage whose images are already converted (the final one)."""
        self._tensors[name] = None
        self._done[name] = images

    def __getitem__(self, name: str) -> list[Image.Image]:
        if name not in self._done:
            self._done[name] = self._convert(self._tensors[name])
        return self._done[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)
