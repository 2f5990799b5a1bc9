"""Hyper-parameters of the five LivePortrait networks.

`REAL_CONFIG` holds the values of LivePortrait's `src/config/models.yaml` (plus the class
defaults it relies on); networks built from it have exactly the state_dict keys, shapes and
dtypes of the published checkpoints (engine/expression/manifests/). `TINY_CONFIG` keeps every
interface the rest of the studio sees (21 keypoints, 66 pose bins, 256² input, a 512²
output, the 126 -> 65 stitching MLP) at a few channels, for tests and the demo mode.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AppearanceConfig:
    """Appearance feature extractor F: image -> (B, reshape_channel, reshape_depth, 64, 64)."""

    image_channel: int
    block_expansion: int
    num_down_blocks: int
    max_features: int  # must equal reshape_channel * reshape_depth
    reshape_channel: int
    reshape_depth: int
    num_resblocks: int


@dataclass(frozen=True)
class MotionConfig:
    """Motion extractor M: a ConvNeXtV2 backbone with pose, translation and keypoint heads."""

    depths: tuple[int, ...]
    dims: tuple[int, ...]
    num_kp: int
    num_bins: int
    image_channel: int = 3


@dataclass(frozen=True)
class DenseMotionConfig:
    """The dense motion network inside W: an hourglass over keypoint-warped features."""

    block_expansion: int
    max_features: int
    num_blocks: int
    reshape_depth: int  # depth of the feature volume (the occlusion conv folds it into C)
    compress: int


@dataclass(frozen=True)
class WarpingConfig:
    """Warping module W: warps the feature volume by the keypoint motion, then flattens it."""

    num_kp: int
    block_expansion: int
    max_features: int  # channels of the flattened volume: reshape_channel * reshape_depth
    num_down_blocks: int
    reshape_channel: int
    estimate_occlusion_map: bool
    dense_motion: DenseMotionConfig

    @property
    def out_channels(self) -> int:
        return self.block_expansion * (2**self.num_down_blocks)


@dataclass(frozen=True)
class SpadeConfig:
    """SPADE generator G: warped features (64²) -> RGB at 64 * 4 * upscale pixels."""

    upscale: int
    block_expansion: int
    max_features: int
    num_down_blocks: int
    out_channels: int = 64  # the upstream class default (models.yaml does not set it)
    hidden: int = 128  # SPADE's hidden width, fixed at 128 upstream

    @property
    def in_channels(self) -> int:
        return min(self.max_features, self.block_expansion * (2**self.num_down_blocks))


@dataclass(frozen=True)
class StitchingConfig:
    """The stitching MLP: cat(x_s, x_d) flattened -> 63 keypoint deltas + (tx, ty)."""

    input_size: int
    hidden_sizes: tuple[int, ...]
    output_size: int


@dataclass(frozen=True)
class LivePortraitConfig:
    """All five networks' hyper-parameters."""

    appearance: AppearanceConfig
    motion: MotionConfig
    warping: WarpingConfig
    spade: SpadeConfig
    stitching: StitchingConfig


REAL_CONFIG = LivePortraitConfig(
    appearance=AppearanceConfig(
        image_channel=3,
        block_expansion=64,
        num_down_blocks=2,
        max_features=512,
        reshape_channel=32,
        reshape_depth=16,
        num_resblocks=6,
    ),
    motion=MotionConfig(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), num_kp=21, num_bins=66),
    warping=WarpingConfig(
        num_kp=21,
        block_expansion=64,
        max_features=512,
        num_down_blocks=2,
        reshape_channel=32,
        estimate_occlusion_map=True,
        dense_motion=DenseMotionConfig(
            block_expansion=32, max_features=1024, num_blocks=5, reshape_depth=16, compress=4
        ),
    ),
    spade=SpadeConfig(upscale=2, block_expansion=64, max_features=512, num_down_blocks=2),
    stitching=StitchingConfig(input_size=126, hidden_sizes=(128, 128, 64), output_size=65),
)

# Channel counts chain as in the real config: F's volume is 8 x 2 (16 = its max_features =
# W's max_features), W's output 4 * 2² = 16 = G's input min(16, 4 * 2²). Depth 2 is the
# smallest the coordinate grid allows (it divides by depth - 1); compress 1 is the smallest
# compression. W's 7³ mask conv over (4 + 22 * 2) channels at 2 x 64 x 64 dominates the cost.
TINY_CONFIG = LivePortraitConfig(
    appearance=AppearanceConfig(
        image_channel=3,
        block_expansion=8,
        num_down_blocks=2,
        max_features=16,
        reshape_channel=8,
        reshape_depth=2,
        num_resblocks=2,
    ),
    motion=MotionConfig(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_kp=21, num_bins=66),
    warping=WarpingConfig(
        num_kp=21,
        block_expansion=4,
        max_features=16,
        num_down_blocks=2,
        reshape_channel=8,
        estimate_occlusion_map=True,
        dense_motion=DenseMotionConfig(
            block_expansion=4, max_features=16, num_blocks=5, reshape_depth=2, compress=1
        ),
    ),
    spade=SpadeConfig(
        upscale=2, block_expansion=4, max_features=16, num_down_blocks=2, out_channels=8, hidden=8
    ),
    stitching=StitchingConfig(input_size=126, hidden_sizes=(16, 16, 8), output_size=65),
)
