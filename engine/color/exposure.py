"""LayerStyle Exposure (specs/algorithms.md §9): 32 units are one stop."""

from __future__ import annotations

import torch

STOP_UNITS = 32.0
BLACK_POINT_UNITS = 250.0


def apply_exposure(images: torch.Tensor, exposure: int) -> torch.Tensor:
    """Multiply by 2^(exposure/32); below zero also raise the black point; clip to [0, 1]."""
    # The node multiplies only values > 0; on [0, 1] input zero stays zero either way.
    out = images * (2.0 ** (exposure / STOP_UNITS))
    if exposure < 0:
        black = -exposure / BLACK_POINT_UNITS
        out = out.sub_(black).div_(1.0 - black)
    return out.clamp_(0.0, 1.0)
