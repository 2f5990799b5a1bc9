"""SPADE generator G: warped features (B, 256, 64, 64) -> RGB (B, 3, 512, 512) in [0, 1].

The residual blocks' convs use `torch.nn.utils.spectral_norm` (not the parametrization API)
because the checkpoints store its `weight_orig` / `weight_u` / `weight_v` tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from engine.expression.networks.config import SpadeConfig

LEAKY_SLOPE = 0.2
MIDDLE_BLOCKS = 6  # G_middle_0 .. G_middle_5, fixed in LivePortrait


class SPADE(nn.Module):
    """Parameter-free InstanceNorm, modulated by gamma/beta predicted from a segmentation map."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, 3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        normalized = F.instance_norm(x)
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """Two spectral-normed 3x3 convs after SPADE + LeakyReLU 0.2, with a learned shortcut
    (SPADE -> spectral-normed 1x1 conv, no bias) when the width changes."""

    def __init__(self, fin: int, fout: int, label_nc: int, hidden: int) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1))
        self.conv_1 = spectral_norm(nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1))
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, kernel_size=1, bias=False))
        self.norm_0 = SPADE(fin, label_nc, hidden)
        self.norm_1 = SPADE(fmiddle, label_nc, hidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc, hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), LEAKY_SLOPE))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), LEAKY_SLOPE))
        return shortcut + dx


class SPADEDecoder(nn.Module):
    """fc 3x3, six SPADE blocks at 64², two upsampling blocks, then conv + PixelShuffle(2)."""

    def __init__(self, config: SpadeConfig) -> None:
        super().__init__()
        width, hidden, out = config.in_channels, config.hidden, config.out_channels
        self.fc = nn.Conv2d(width, 2 * width, 3, padding=1)
        for i in range(MIDDLE_BLOCKS):
            block = SPADEResnetBlock(2 * width, 2 * width, width, hidden)
            self.add_module(f"G_middle_{i}", block)
        self.up_0 = SPADEResnetBlock(2 * width, width, width, hidden)
        self.up_1 = SPADEResnetBlock(width, out, width, hidden)
        if config.upscale <= 1:
            self.conv_img = nn.Conv2d(out, 3, 3, padding=1)
        else:  # LivePortrait always shuffles by 2 here, whatever `upscale` says
            self.conv_img = nn.Sequential(
                nn.Conv2d(out, 3 * (2 * 2), kernel_size=3, padding=1), nn.PixelShuffle(2)
            )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.fc(feature)
        for i in range(MIDDLE_BLOCKS):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        x = self.up_0(F.interpolate(x, scale_factor=2), feature)
        x = self.up_1(F.interpolate(x, scale_factor=2), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, LEAKY_SLOPE)))


@torch.no_grad()
def settle_spectral_norms(module: nn.Module) -> None:
    """Set every spectral norm's u, v to its weight's top singular vectors.

    Freshly built, u and v are random, so sigma = u . W v is near zero (or negative) and the
    eval-mode weight W / sigma explodes; trained checkpoints store converged u, v. Random
    builds (tests, demo) call this so their outputs are not saturated; loads never do.
    """
    for sub in module.modules():
        if not hasattr(sub, "weight_orig"):
            continue
        weight = sub.weight_orig.reshape(sub.weight_orig.shape[0], -1)
        left, _, right = torch.linalg.svd(weight.float(), full_matrices=False)
        sub.weight_u.copy_(left[:, 0])
        sub.weight_v.copy_(right[0])
