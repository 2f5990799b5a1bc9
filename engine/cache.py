"""A byte-bounded LRU cache of stage artifacts, shared by every session of one engine."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image


def artifact_bytes(value: Any) -> int:
    """Approximate memory held by an artifact (tensors, images and containers of them)."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, Image.Image):
        return value.width * value.height * len(value.getbands())
    if isinstance(value, dict):
        return sum(artifact_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(artifact_bytes(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(artifact_bytes(getattr(value, name)) for name in value.__dataclass_fields__)
    return 64


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class ArtifactCache:
    """LRU by bytes: storing past the budget evicts the least recently used artifacts.

    Models are never stored here (ModelManager owns them), so a re-grade can only evict
    old artifacts. An artifact larger than the whole budget is not kept at all.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.stats = CacheStats()

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def get(self, key: str) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.stats.misses += 1
                return None
            self._items.move_to_end(key)
            self.stats.hits += 1
            return item[0]

    def put(self, key: str, value: Any) -> None:
        size = artifact_bytes(value)
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key)[1]
            if size > self.max_bytes:
                return
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped
                self.stats.evictions += 1

    @property
    def used_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
