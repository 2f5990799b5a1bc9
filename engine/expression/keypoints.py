"""Implicit keypoints (specs/algorithms.md §7): head pose from bins, the rotation matrix,
and the source keypoints x_s = scale * (kp @ R + exp) + (tx, ty)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

NUM_KP = 21
NUM_BINS = 66
BIN_DEGREES = 3.0
BIN_OFFSET = 97.5  # degrees = 3 * expected bin - 97.5, i.e. -97.5 .. +97.5


@dataclass(frozen=True)
class KeypointInfo:
    """The motion extractor's outputs, refined: angles in degrees (B,), kp and exp (B, 21, 3),
    t (B, 3), scale (B, 1)."""

    pitch: torch.Tensor
    yaw: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor
    scale: torch.Tensor
    kp: torch.Tensor

    def to(self, device: torch.device | str) -> KeypointInfo:
        fields = {name: getattr(self, name).to(device) for name in self.__dataclass_fields__}
        return KeypointInfo(**fields)


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Expected bin of a (B, 66) logit row, in degrees: 3 * sum(softmax * i) - 97.5."""
    index = torch.arange(logits.shape[-1], dtype=torch.float32, device=logits.device)
    probability = torch.softmax(logits.float(), dim=-1)
    return (probability * index).sum(dim=-1) * BIN_DEGREES - BIN_OFFSET


def refine_motion(raw: dict[str, torch.Tensor]) -> KeypointInfo:
    """Raw motion-extractor outputs (logits, flat kp/exp) -> KeypointInfo, all float32."""
    batch = raw["kp"].shape[0]
    return KeypointInfo(
        pitch=bins_to_degrees(raw["pitch"]),
        yaw=bins_to_degrees(raw["yaw"]),
        roll=bins_to_degrees(raw["roll"]),
        t=raw["t"].float(),
        exp=raw["exp"].float().reshape(batch, -1, 3),
        scale=raw["scale"].float(),
        kp=raw["kp"].float().reshape(batch, -1, 3),
    )


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotation for right-multiplying row vectors: (Rz @ Ry @ Rx) transposed, with
    pitch about X, yaw about Y and roll about Z, all in degrees."""
    x, y, z = (
        torch.as_tensor(a, dtype=torch.float32).reshape(-1) * (math.pi / 180)
        for a in (pitch, yaw, roll)
    )
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rot_x = _matrix(one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos())
    rot_y = _matrix(y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos())
    rot_z = _matrix(z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one)
    return (rot_z @ rot_y @ rot_x).transpose(1, 2)


def _matrix(*entries: torch.Tensor) -> torch.Tensor:
    return torch.stack(entries, dim=1).reshape(-1, 3, 3)


def source_keypoints(info: KeypointInfo) -> torch.Tensor:
    """x_s = scale * (kp @ R(pitch, yaw, roll) + exp), then tx and ty added (tz is not)."""
    rotation = rotation_matrix(info.pitch, info.yaw, info.roll)
    x_s = (info.kp @ rotation + info.exp) * info.scale[..., None]
    x_s[..., :2] += info.t[:, None, :2]
    return x_s
