"""Appearance feature extractor F: a source image -> a 3D appearance feature volume."""

from __future__ import annotations

import torch
from torch import nn

from engine.expression.networks.blocks import DownBlock2d, ResBlock3d, SameBlock2d
from engine.expression.networks.config import AppearanceConfig


class AppearanceFeatureExtractor(nn.Module):
    """(B, 3, 256, 256) in [0, 1] -> (B, reshape_channel, reshape_depth, 64, 64)."""

    def __init__(self, config: AppearanceConfig) -> None:
        super().__init__()
        self.config = config
        widths = [
            min(config.max_features, config.block_expansion * (2**i))
            for i in range(config.num_down_blocks + 1)
        ]
        self.first = SameBlock2d(config.image_channel, config.block_expansion)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(widths[i], widths[i + 1]) for i in range(config.num_down_blocks)
        )
        self.second = nn.Conv2d(widths[-1], config.max_features, kernel_size=1, stride=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(config.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(config.reshape_channel))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.first(image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        batch, _, height, width = out.shape
        volume = out.view(
            batch, self.config.reshape_channel, self.config.reshape_depth, height, width
        )
        return self.resblocks_3d(volume)
