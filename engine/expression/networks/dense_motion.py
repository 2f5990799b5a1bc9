"""The dense motion network inside W: from source and driving keypoints to a dense 3D
deformation field (a softmax blend of per-keypoint translations) and an occlusion map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.expression.networks.blocks import (
    DownBlock3d,
    UpBlock3d,
    kp2gaussian,
    make_coordinate_grid,
)
from engine.expression.networks.config import DenseMotionConfig


def _width(config: DenseMotionConfig, level: int) -> int:
    return min(config.max_features, config.block_expansion * (2**level))


class Encoder(nn.Module):
    """Hourglass encoder: `num_blocks` DownBlock3d; returns the input and every level."""

    def __init__(self, config: DenseMotionConfig, in_features: int) -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock3d(in_features if i == 0 else _width(config, i), _width(config, i + 1))
            for i in range(config.num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    """Hourglass decoder: UpBlock3d with skip concatenation, then Conv 3x3x3 -> BN -> ReLU."""

    def __init__(self, config: DenseMotionConfig, in_features: int) -> None:
        super().__init__()
        levels = range(config.num_blocks - 1, -1, -1)
        self.up_blocks = nn.ModuleList(
            UpBlock3d(
                (1 if i == config.num_blocks - 1 else 2) * _width(config, i + 1), _width(config, i)
            )
            for i in levels
        )
        self.out_filters = config.block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        skips = list(levels)
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """U-Net style 3D hourglass; output channels are block_expansion + in_features."""

    def __init__(self, config: DenseMotionConfig, in_features: int) -> None:
        super().__init__()
        self.encoder = Encoder(config, in_features)
        self.decoder = Decoder(config, in_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class DenseMotionNetwork(nn.Module):
    """Feature volume + keypoints -> {"mask", "deformation", "occlusion_map"}."""

    def __init__(
        self,
        config: DenseMotionConfig,
        num_kp: int,
        feature_channel: int,
        estimate_occlusion_map: bool,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        in_features = (num_kp + 1) * (config.compress + 1)
        self.hourglass = Hourglass(config, in_features)
        out = self.hourglass.out_filters
        self.mask = nn.Conv3d(out, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, config.compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(config.compress, affine=True)
        self.occlusion = (
            nn.Conv2d(out * config.reshape_depth, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map
            else None
        )

    def sparse_motions(
        self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> torch.Tensor:
        """(B, 1 + K, D, H, W, 3): the identity grid, then grid - kp_driving + kp_source."""
        batch, _, depth, height, width = feature.shape
        identity = make_coordinate_grid((depth, height, width), kp_source)
        identity = identity.view(1, 1, depth, height, width, 3)
        shape = (batch, self.num_kp, 1, 1, 1, 3)
        driving_to_source = identity - kp_driving.view(shape) + kp_source.view(shape)
        return torch.cat([identity.repeat(batch, 1, 1, 1, 1, 1), driving_to_source], dim=1)

    def deformed_features(self, feature: torch.Tensor, motions: torch.Tensor) -> torch.Tensor:
        """The compressed volume sampled along each sparse motion: (B, 1 + K, C, D, H, W)."""
        batch, channels, depth, height, width = feature.shape
        count = self.num_kp + 1
        repeated = feature.unsqueeze(1).repeat(1, count, 1, 1, 1, 1)
        repeated = repeated.view(batch * count, channels, depth, height, width)
        grid = motions.view(batch * count, depth, height, width, 3)
        sampled = F.grid_sample(repeated, grid, align_corners=False)
        return sampled.view(batch, count, channels, depth, height, width)

    def heatmaps(
        self, spatial_size: tuple[int, int, int], kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> torch.Tensor:
        """Driving minus source Gaussians, a zero background first: (B, 1 + K, 1, D, H, W)."""
        heatmap = kp2gaussian(kp_driving, spatial_size) - kp2gaussian(kp_source, spatial_size)
        zeros = heatmap.new_zeros(heatmap.shape[0], 1, *spatial_size)
        return torch.cat([zeros, heatmap], dim=1).unsqueeze(2)

    def forward(
        self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        batch, _, depth, height, width = feature.shape
        feature = F.relu(self.norm(self.compress(feature)))
        motions = self.sparse_motions(feature, kp_driving, kp_source)
        deformed = self.deformed_features(feature, motions)
        heatmap = self.heatmaps((depth, height, width), kp_driving, kp_source)
        stacked = torch.cat([heatmap, deformed], dim=2).view(batch, -1, depth, height, width)
        prediction = self.hourglass(stacked)

        mask = F.softmax(self.mask(prediction), dim=1)  # (B, 1 + K, D, H, W)
        blended = motions.permute(0, 1, 5, 2, 3, 4) * mask.unsqueeze(2)
        result = {"mask": mask, "deformation": blended.sum(dim=1).permute(0, 2, 3, 4, 1)}
        if self.occlusion is not None:
            folded = prediction.view(batch, -1, height, width)
            result["occlusion_map"] = torch.sigmoid(self.occlusion(folded))
        return result
