"""Conv/norm blocks shared by the LivePortrait networks, the coordinate grid and kp2gaussian.

Attribute names (`conv`, `norm`, `conv1`, ...) and their registration order are those of
LivePortrait's `src/modules/util.py`, because they become the checkpoints' state_dict keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KP_VARIANCE = 0.01  # the Gaussian variance LivePortrait's dense motion network uses


def make_coordinate_grid(spatial_size: tuple[int, int, int], like: torch.Tensor) -> torch.Tensor:
    """(D, H, W, 3) grid of (x, y, z) in [-1, 1]: x right, y down, z in ("right-down-in").

    The arithmetic order matches upstream (2 * (i / (n - 1)) - 1) so results agree bit-wise.
    """
    depth, height, width = spatial_size
    x, y, z = (
        2 * (torch.arange(n).type(like.dtype).to(like.device) / (n - 1)) - 1
        for n in (width, height, depth)
    )
    xx = x.view(1, 1, -1).repeat(depth, height, 1)
    yy = y.view(1, -1, 1).repeat(depth, 1, width)
    zz = z.view(-1, 1, 1).repeat(1, height, width)
    return torch.stack([xx, yy, zz], dim=3)


def kp2gaussian(
    kp: torch.Tensor, spatial_size: tuple[int, int, int], variance: float = KP_VARIANCE
) -> torch.Tensor:
    """Keypoints (B, N, 3) -> Gaussian heatmaps (B, N, D, H, W) on the coordinate grid."""
    grid = make_coordinate_grid(spatial_size, kp)
    mean = kp.view(*kp.shape[:-1], 1, 1, 1, 3)
    return torch.exp(-0.5 * ((grid - mean) ** 2).sum(-1) / variance)


class SameBlock2d(nn.Module):
    """Conv 3x3 -> BatchNorm -> ReLU (or LeakyReLU 0.01); keeps the resolution."""

    def __init__(self, in_features: int, out_features: int, lrelu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        return F.leaky_relu(out) if self.lrelu else F.relu(out)


class DownBlock2d(nn.Module):
    """Conv 3x3 -> BatchNorm -> ReLU -> 2x2 average pool."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class DownBlock3d(nn.Module):
    """Conv 3x3x3 -> BatchNorm -> ReLU -> (1, 2, 2) average pool (depth is kept)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), kernel_size=(1, 2, 2))


class UpBlock3d(nn.Module):
    """Nearest (1, 2, 2) upsample -> Conv 3x3x3 -> BatchNorm -> ReLU."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=(1, 2, 2))
        return F.relu(self.norm(self.conv(out)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block: (BN -> ReLU -> Conv 3x3x3) twice, plus the input."""

    def __init__(self, features: int) -> None:
        super().__init__()
        # Registration order conv1, conv2, norm1, norm2 is the checkpoints' key order.
        self.conv1 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(features, affine=True)
        self.norm2 = nn.BatchNorm3d(features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x
