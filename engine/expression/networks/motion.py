"""Motion extractor M: a ConvNeXtV2 backbone whose heads give the head pose (as bin logits),
translation, expression deformation, scale and the canonical implicit keypoints.

timm has ConvNeXtV2, but its module names differ from the checkpoints' (`detector.stages.N.M.
dwconv`, `grn.gamma` of shape (1, 1, 1, C), ...); writing the small backbone keeps the
published keys without a renaming table. Stochastic depth is left out: it only acts in
training and has no weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.expression.networks.config import MotionConfig

LAYER_NORM_EPS = 1e-6
MOTION_KEYS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (N, C, H, W), written out as ConvNeXt does."""

    def __init__(self, channels: int, eps: float = LAYER_NORM_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GRN(nn.Module):
    """Global Response Normalization over the spatial axes of channels-last (N, H, W, C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 -> LayerNorm -> Linear 4x -> GELU -> GRN -> Linear, plus the input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)  # channels-last
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dwconv(x).permute(0, 2, 3, 1)
        out = self.grn(F.gelu(self.pwconv1(self.norm(out))))
        return x + self.pwconv2(out).permute(0, 3, 1, 2)


def _downsample_layers(config: MotionConfig) -> nn.ModuleList:
    """The 4x4 stem, then three (LayerNorm, 2x2 stride-2 conv) steps between stages."""
    dims = config.dims
    stem = nn.Sequential(
        nn.Conv2d(config.image_channel, dims[0], kernel_size=4, stride=4),
        ChannelsFirstLayerNorm(dims[0]),
    )
    steps = [
        nn.Sequential(
            ChannelsFirstLayerNorm(dims[i]),
            nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2),
        )
        for i in range(len(dims) - 1)
    ]
    return nn.ModuleList([stem, *steps])


class ConvNeXtV2Detector(nn.Module):
    """ConvNeXtV2 features (global average pool + LayerNorm) and the seven linear heads."""

    def __init__(self, config: MotionConfig) -> None:
        super().__init__()
        width = config.dims[-1]
        self.downsample_layers = _downsample_layers(config)
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(dim) for _ in range(depth)))
            for dim, depth in zip(config.dims, config.depths, strict=True)
        )
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        # Head registration order is the checkpoints' key order.
        self.fc_kp = nn.Linear(width, 3 * config.num_kp)
        self.fc_scale = nn.Linear(width, 1)
        self.fc_pitch = nn.Linear(width, config.num_bins)
        self.fc_yaw = nn.Linear(width, config.num_bins)
        self.fc_roll = nn.Linear(width, config.num_bins)
        self.fc_t = nn.Linear(width, 3)
        self.fc_exp = nn.Linear(width, 3 * config.num_kp)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for downsample, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(downsample(x))
        return self.norm(x.mean([-2, -1]))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.features(x)
        return {
            "pitch": self.fc_pitch(feat),
            "yaw": self.fc_yaw(feat),
            "roll": self.fc_roll(feat),
            "t": self.fc_t(feat),
            "exp": self.fc_exp(feat),
            "scale": self.fc_scale(feat),
            "kp": self.fc_kp(feat),
        }


class MotionExtractor(nn.Module):
    """(B, 3, 256, 256) in [0, 1] -> raw outputs: pitch/yaw/roll logits (B, num_bins),
    t (B, 3), exp (B, 3 * num_kp), scale (B, 1), kp (B, 3 * num_kp)."""

    def __init__(self, config: MotionConfig) -> None:
        super().__init__()
        self.detector = ConvNeXtV2Detector(config)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.detector(image)
