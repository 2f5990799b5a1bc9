"""What a Refine stage hands on: the images, and what it detected in each (so the studio
can draw the boxes whether the stage ran now or came from the cache)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True, eq=False)
class RefinedImages:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    detections: list[list[dict]]  # per image: {"label", "box": [x1, y1, x2, y2], "score"}


def images_of(value: Any) -> torch.Tensor:
    """The image tensor of any image stage's artifact: a tensor, or an artifact carrying one
    as `images` with what the stage found (RefinedImages, the identity score's)."""
    images = getattr(value, "images", None)
    return images if isinstance(images, torch.Tensor) else value
