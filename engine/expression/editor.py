"""Target keypoints of the Expression Editor (specs/algorithms.md §7, "Target keypoints").

x_d = scale_s * (1 + Δs) * ((kp_s + src_ratio * exp_s + Δe) @ R(pose_s + Δpose)) + t_s,
with exp_s row 5 always at full weight, all three components of t_s added, Δs = 0, and the
driving image's deltas (by sample_parts) applied before the sliders. Stitching follows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.expression.keypoints import KeypointInfo, rotation_matrix
from engine.expression.sliders import PoseDelta, SliderValues, expression_delta, slider_pose
from engine.recipe import ExpressionParams

SAMPLE_PARTS = ("OnlyExpression", "OnlyRotation", "OnlyMouth", "OnlyEyes", "All")
MOUTH_ROWS = (14, 17, 19, 20)
EYE_ROWS = (1, 2, 11, 13, 15, 16)
FULL_WEIGHT_ROW = 5  # exp row kept at full weight whatever src_ratio says
SLIDER_NAMES = tuple(SliderValues.__dataclass_fields__)
POSE_NAMES = ("rotate_pitch", "rotate_yaw", "rotate_roll")


@dataclass(frozen=True)
class EditParams:
    """The part of ExpressionParams that moves keypoints (no image, no crop)."""

    sliders: SliderValues
    pose: PoseDelta  # rotate_pitch / yaw / roll as entered (yaw not yet negated)
    src_ratio: float
    sample_ratio: float
    sample_parts: str

    @classmethod
    def from_recipe(cls, params: ExpressionParams) -> EditParams:
        sliders = SliderValues(**{name: getattr(params, name) for name in SLIDER_NAMES})
        pose = PoseDelta(params.rotate_pitch, params.rotate_yaw, params.rotate_roll)
        return cls(sliders, pose, params.src_ratio, params.sample_ratio, params.sample_parts)


def is_neutral(params: ExpressionParams) -> bool:
    """All sliders and rotations at zero, source at full weight and no driving image:
    the editor would only re-synthesise the face, so the stage is off."""
    moved = [getattr(params, name) for name in (*SLIDER_NAMES, *POSE_NAMES)]
    return not any(moved) and params.src_ratio == 1.0 and not params.sample_image


def driving_deltas(
    edit: EditParams, driving: KeypointInfo | None
) -> tuple[torch.Tensor | None, PoseDelta]:
    """The driving face's expression delta (1, 21, 3) and pose delta, by sample_parts."""
    if driving is None:
        return None, PoseDelta()
    ratio, parts = edit.sample_ratio, edit.sample_parts
    exp = driving_expression(driving)
    delta = torch.zeros_like(exp)
    if parts in ("OnlyExpression", "All"):
        delta += exp * ratio
    rows = {"OnlyMouth": MOUTH_ROWS, "OnlyEyes": EYE_ROWS}.get(parts, ())
    for row in rows:
        delta[0, row] += exp[0, row] * ratio
    pose = PoseDelta()
    if parts in ("OnlyRotation", "All"):
        angles = (driving.pitch, driving.yaw, driving.roll)
        pose = PoseDelta(*(float(a.reshape(-1)[0]) * ratio for a in angles))
    return delta, pose


def driving_expression(driving: KeypointInfo) -> torch.Tensor:
    """The driving face's exp with row 5's x and y zeroed (the node's choice), (1, 21, 3)."""
    exp = driving.exp[:1].detach().float().cpu().clone()
    exp[0, FULL_WEIGHT_ROW, :2] = 0
    return exp


def target_keypoints(
    source: KeypointInfo, edit: EditParams, driving: KeypointInfo | None = None
) -> torch.Tensor:
    """x_d (1, 21, 3) before stitching, on the source's device."""
    base, driving_pose = driving_deltas(edit, driving)
    delta_e = expression_delta(edit.sliders, base)
    entered = PoseDelta(edit.pose.pitch, -edit.pose.yaw, edit.pose.roll)  # yaw negated on entry
    pose = entered.plus(driving_pose).plus(slider_pose(edit.sliders))
    exp_s = source.exp[:1] * edit.src_ratio
    exp_s[:, FULL_WEIGHT_ROW] = source.exp[:1, FULL_WEIGHT_ROW]
    device = source.kp.device
    rotation = rotation_matrix(
        source.pitch[:1] + pose.pitch, source.yaw[:1] + pose.yaw, source.roll[:1] + pose.roll
    ).to(device)
    moved = (source.kp[:1] + exp_s + delta_e.to(device)) @ rotation
    return source.scale[:1, :, None] * moved + source.t[:1, None, :]


def apply_stitching(x_s: torch.Tensor, x_d: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Add the stitching MLP's output (B, 65): 63 keypoint deltas, then (tx, ty) to x and y."""
    batch, count = x_d.shape[:2]
    stitched = x_d + delta[:, : 3 * count].reshape(batch, count, 3)
    stitched[..., :2] += delta[:, 3 * count : 3 * count + 2].reshape(batch, 1, 2)
    return stitched
