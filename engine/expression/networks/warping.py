"""Warping module W: warps the source feature volume f_s from the source keypoints x_s to the
driving keypoints x_d, flattens depth into channels and masks by the occlusion map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.expression.networks.blocks import SameBlock2d
from engine.expression.networks.config import WarpingConfig
from engine.expression.networks.dense_motion import DenseMotionNetwork


class WarpingNetwork(nn.Module):
    """(f_s, x_d, x_s) -> {"out": (B, out_channels, 64, 64), "deformation", "occlusion_map"}."""

    def __init__(self, config: WarpingConfig) -> None:
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork(
            config.dense_motion,
            num_kp=config.num_kp,
            feature_channel=config.reshape_channel,
            estimate_occlusion_map=config.estimate_occlusion_map,
        )
        width = config.out_channels
        self.third = SameBlock2d(config.max_features, width, lrelu=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1, stride=1)

    def forward(
        self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor | None]:
        dense = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        deformation = dense["deformation"]
        out = F.grid_sample(feature_3d, deformation, align_corners=False)
        batch, channels, depth, height, width = out.shape
        out = self.fourth(self.third(out.view(batch, channels * depth, height, width)))
        occlusion = dense.get("occlusion_map")
        if occlusion is not None:
            out = out * occlusion
        return {"occlusion_map": occlusion, "deformation": deformation, "out": out}
