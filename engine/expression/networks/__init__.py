"""Our PyTorch implementation of the five LivePortrait networks (appearance F, motion M,
warping W, SPADE generator G, stitching S) and thin inference helpers around them.

The modules' state_dicts equal the published checkpoints' key for key (names, order, shapes,
dtypes; see engine/expression/manifests/), so people's files load strictly
(engine/expression/weights.py). The forward passes follow LivePortrait's own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from engine.expression.networks.appearance import AppearanceFeatureExtractor
from engine.expression.networks.config import REAL_CONFIG, TINY_CONFIG, LivePortraitConfig
from engine.expression.networks.motion import MotionExtractor
from engine.expression.networks.spade import SPADEDecoder, settle_spectral_norms
from engine.expression.networks.stitching import StitchingNetwork
from engine.expression.networks.warping import WarpingNetwork

__all__ = [
    "REAL_CONFIG",
    "TINY_CONFIG",
    "LivePortraitConfig",
    "LivePortraitNetworks",
    "build_networks",
    "extract_features",
    "motion_raw",
    "stitching_delta",
    "warp_decode",
]

NETWORK_NAMES = ("appearance", "motion", "warping", "spade", "stitching")


@dataclass
class LivePortraitNetworks:
    """The five networks, built from one config."""

    appearance: AppearanceFeatureExtractor
    motion: MotionExtractor
    warping: WarpingNetwork
    spade: SPADEDecoder
    stitching: StitchingNetwork
    config: LivePortraitConfig

    def modules(self) -> dict[str, nn.Module]:
        """The networks by name, in NETWORK_NAMES order."""
        return {name: getattr(self, name) for name in NETWORK_NAMES}

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> LivePortraitNetworks:
        """Move (and cast floating tensors of) all five networks in place; returns self."""
        for module in self.modules().values():
            module.to(device=device, dtype=dtype)
        return self

    def eval(self) -> LivePortraitNetworks:
        """Inference mode for all five (BatchNorm running stats, no spectral-norm updates)."""
        for module in self.modules().values():
            module.eval()
        return self


def build_networks(
    config: LivePortraitConfig, seed: int | None = None, device: torch.device | str = "cpu"
) -> LivePortraitNetworks:
    """The five networks with PyTorch's default initialisation, in eval mode, no grads.

    With a seed, two builds are bit-identical and torch's global RNG is left as it was.
    `device="meta"` builds shapes only (for loading with assign=True, or key checks).
    """
    meta = torch.device(device).type == "meta"
    with _seeded(None if meta else seed), torch.device("meta" if meta else "cpu"):
        nets = LivePortraitNetworks(
            appearance=AppearanceFeatureExtractor(config.appearance),
            motion=MotionExtractor(config.motion),
            warping=WarpingNetwork(config.warping),
            spade=SPADEDecoder(config.spade),
            stitching=StitchingNetwork(config.stitching),
            config=config,
        )
        if not meta:
            settle_spectral_norms(nets.spade)
    for module in nets.modules().values():
        module.requires_grad_(False)  # inference only
    if not meta:
        nets.to(device)
    return nets.eval()


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Built on the CPU under a forked CPU RNG: only the CPU generator is seeded (not CUDA's,
    which torch.manual_seed would touch), and its state is restored afterwards."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


def _param_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


@torch.no_grad()
def extract_features(nets: LivePortraitNetworks, image: torch.Tensor) -> torch.Tensor:
    """(B, 3, 256, 256) in [0, 1] -> the appearance feature volume f_s (B, C, D, 64, 64)."""
    return nets.appearance(image.to(_param_dtype(nets.appearance)))


@torch.no_grad()
def motion_raw(nets: LivePortraitNetworks, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, 3, 256, 256) in [0, 1] -> raw motion outputs: pitch/yaw/roll logits (B, 66),
    t (B, 3), exp (B, 63), scale (B, 1), kp (B, 63)."""
    return nets.motion(image.to(_param_dtype(nets.motion)))


@torch.no_grad()
def stitching_delta(
    nets: LivePortraitNetworks, x_s: torch.Tensor, x_d: torch.Tensor
) -> torch.Tensor:
    """Keypoints (B, 21, 3) each -> the stitching MLP's raw output (B, 65)."""
    batch = x_s.shape[0]
    feature = torch.cat([x_s.reshape(batch, -1), x_d.reshape(batch, -1)], dim=1)
    return nets.stitching(feature.to(_param_dtype(nets.stitching)))


@torch.no_grad()
def warp_decode(
    nets: LivePortraitNetworks, f_s: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor
) -> torch.Tensor:
    """Warp f_s from x_s to x_d and decode: (B, 3, 512, 512) RGB in [0, 1]."""
    dtype = _param_dtype(nets.warping)
    warped = nets.warping(f_s.to(dtype), kp_driving=x_d.to(dtype), kp_source=x_s.to(dtype))
    return nets.spade(warped["out"].to(_param_dtype(nets.spade)))
