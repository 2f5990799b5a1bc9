"""The stitching MLP S: cat(x_s, x_d) flattened -> 63 keypoint deltas and (tx, ty).

Only this one of the three retargeting MLPs is used at run time (as in
ComfyUI-AdvancedLivePortrait); the lip and eye networks are not built.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.expression.networks.config import StitchingConfig


class StitchingNetwork(nn.Module):
    """An `mlp` Sequential: Linear layers at 0, 2, 4, ... with ReLU between them."""

    def __init__(self, config: StitchingConfig) -> None:
        super().__init__()
        sizes = (config.input_size, *config.hidden_sizes)
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(sizes[-1], config.output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)
