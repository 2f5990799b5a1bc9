"""The Expression Editor's sliders -> keypoint deltas (specs/algorithms.md §7, the table).

Every slider adds `coefficient * value` to one keypoint axis of the expression delta (rows
0..20, axes x = 0, y = 1, z = 2), and some also move the head pose (degrees). Pupil x and
eyebrow use different rows for positive and negative values; pupil y also changes the blink.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.expression.keypoints import NUM_KP

X, Y, Z = 0, 1, 2

# slider -> ((row, axis, coefficient), ...), applied in this order.
LINEAR_TERMS: dict[str, tuple[tuple[int, int, float], ...]] = {
    "smile": (
        (20, Y, -0.01),
        (14, Y, -0.02),
        (17, Y, 0.0065),
        (17, Z, 0.003),
        (13, Y, -0.00275),
        (16, Y, -0.00275),
        (3, Y, -0.0035),
        (7, Y, -0.0035),
    ),
    "aaa": ((19, Y, 0.001), (19, Z, 0.0001), (17, Y, -0.0001)),
    "eee": ((20, Z, -0.001), (20, Y, -0.001), (14, Y, -0.001)),
    "woo": ((14, Y, 0.001), (3, Y, -0.0005), (7, Y, -0.0005), (17, Z, -0.0005)),
    "wink": ((11, Y, 0.001), (13, Y, -0.0003), (17, X, 0.0003), (17, Y, 0.0003), (3, Y, -0.0003)),
    "pupil_y": ((11, Y, -0.001), (15, Y, -0.001)),
    "blink": (
        (11, Y, -0.001),
        (13, Y, 0.0003),
        (15, Y, -0.001),
        (16, Y, 0.0003),
        (1, Y, -0.00025),
        (2, Y, 0.00025),
    ),
}
PUPIL_X_POSITIVE = ((11, X, 0.0007), (15, X, 0.001))
PUPIL_X_NEGATIVE = ((11, X, 0.001), (15, X, 0.0007))
EYEBROW_RAISE = ((1, Y, 0.001), (2, Y, -0.001))
EYEBROW_FROWN = ((1, X, -0.001), (2, X, 0.001), (1, Y, 0.0003), (2, Y, -0.0003))
# Pose side effects, degrees per slider unit: (slider, "pitch" | "yaw" | "roll", coefficient).
POSE_TERMS = (("aaa", "pitch", -0.05), ("wink", "roll", -0.1), ("wink", "yaw", -0.1))
PUPIL_Y_BLINK = -0.5  # the blink that drives the eyelids is blink - pupil_y / 2


@dataclass(frozen=True)
class SliderValues:
    """The node's slider values in its own units (ranges in engine.recipe.ExpressionParams)."""

    smile: float = 0.0
    aaa: float = 0.0
    eee: float = 0.0
    woo: float = 0.0
    wink: float = 0.0
    pupil_x: float = 0.0
    pupil_y: float = 0.0
    blink: float = 0.0
    eyebrow: float = 0.0


@dataclass(frozen=True)
class PoseDelta:
    """Degrees added to the source head pose."""

    pitch: float = 0.0
    yaw: float = 0.0
    roll: float = 0.0

    def plus(self, other: PoseDelta) -> PoseDelta:
        return PoseDelta(self.pitch + other.pitch, self.yaw + other.yaw, self.roll + other.roll)


def slider_terms(values: SliderValues) -> list[tuple[int, int, float]]:
    """Every (row, axis, delta) the sliders add, in the node's order."""
    terms: list[tuple[int, int, float]] = []
    for name in ("smile", "aaa", "eee", "woo", "wink"):
        terms += _scaled(LINEAR_TERMS[name], getattr(values, name))
    pupil_x = PUPIL_X_POSITIVE if values.pupil_x > 0 else PUPIL_X_NEGATIVE
    terms += _scaled(pupil_x, values.pupil_x)
    terms += _scaled(LINEAR_TERMS["pupil_y"], values.pupil_y)
    blink = values.blink + PUPIL_Y_BLINK * values.pupil_y
    terms += _scaled(LINEAR_TERMS["blink"], blink)
    eyebrow = EYEBROW_RAISE if values.eyebrow > 0 else EYEBROW_FROWN
    terms += _scaled(eyebrow, values.eyebrow)
    return terms


def _scaled(table: tuple[tuple[int, int, float], ...], value: float) -> list:
    return [(row, axis, coefficient * value) for row, axis, coefficient in table]


def expression_delta(values: SliderValues, base: torch.Tensor | None = None) -> torch.Tensor:
    """(1, 21, 3) float32: `base` (e.g. the driving expression) plus the sliders' deltas."""
    delta = torch.zeros(1, NUM_KP, 3) if base is None else base.detach().float().cpu().clone()
    for row, axis, amount in slider_terms(values):
        delta[0, row, axis] += amount
    return delta


def slider_pose(values: SliderValues) -> PoseDelta:
    """The head-pose side effects of the mouth and wink sliders, in degrees."""
    pose = {"pitch": 0.0, "yaw": 0.0, "roll": 0.0}
    for name, axis, coefficient in POSE_TERMS:
        pose[axis] += coefficient * getattr(values, name)
    return PoseDelta(**pose)
