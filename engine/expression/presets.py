"""The 24 expression presets of seed 000 §7.3, mapped from the documentation's normalised
scale to the Expression Editor's own units.

The documentation writes blink, wink, eyebrow, pupils and the mouth shapes on a -1..1 or
0..1 scale and head angles in degrees. The node's units and directions (per its sliders'
ranges and the node's published setting guide):

| preset column      | node slider  | mapping                       | node meaning             |
|--------------------|--------------|-------------------------------|--------------------------|
| pitch / yaw / roll | rotate_*     | degrees, 1:1                  | pitch < 0 looks up       |
| blink 0..1         | blink        | -20 * blink (<= 5)            | -20 closed, +5 wide open |
| wink -1..1         | wink         | 25 * abs(wink)                | closes the right eye*    |
| eyebrow -1..1      | eyebrow      | 15 * e if e > 0 else 10 * e   | -10 frown, +15 raised    |
| pupil_x -1..1      | pupil_x      | 15 * x                        | + looks to viewer's right|
| pupil_y -1..1      | pupil_y      | -15 * y                       | + looks up (doc: + down) |
| aaa 0..1           | aaa          | 120 * aaa + 30 * ooo          | 120 mouth wide open      |
| eee 0..1           | eee          | 15 * eee                      | lips spread              |
| ooo 0..1           | aaa and woo  | mouth a quarter open, rounded | (no "ooo" slider)        |
| woo 0..1           | woo          | 15 * woo + 15 * ooo           | rounded "oo" lips        |
| smile 0..1         | smile        | 1:1                           | 1.0 full smile           |

* The node winks only the person's right eye (the viewer's left), so "Side Wink Left" and
"Side Wink Right" both close that eye; they still differ in gaze and mouth. Every value is
clamped into the node's range.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from engine.recipe import ExpressionParams

LIBRARY = Path(__file__).resolve().parents[2] / "presets" / "expressions" / "library.json"
NEUTRAL = "Neutral Base"


@dataclass(frozen=True)
class ExpressionPreset:
    """One row of the documentation's table, in its normalised units."""

    label: str
    note: str
    pitch: float
    yaw: float
    roll: float
    blink: float
    eyebrow: float
    wink: float
    pupil_x: float
    pupil_y: float
    aaa: float
    eee: float
    ooo: float
    woo: float
    smile: float


def load_presets(path: Path = LIBRARY) -> list[ExpressionPreset]:
    """The presets in the documentation's order."""
    names = {f.name for f in fields(ExpressionPreset)}
    rows = json.loads(path.read_text(encoding="utf-8"))["presets"]
    return [ExpressionPreset(**{k: v for k, v in row.items() if k in names}) for row in rows]


def node_values(preset: ExpressionPreset) -> dict[str, float]:
    """The preset in the node's units: every slider of ExpressionParams it sets."""
    eyebrow = 15 * preset.eyebrow if preset.eyebrow > 0 else 10 * preset.eyebrow
    values = {
        "rotate_pitch": preset.pitch,
        "rotate_yaw": preset.yaw,
        "rotate_roll": preset.roll,
        "blink": -20 * preset.blink,
        "wink": 25 * abs(preset.wink),
        "eyebrow": eyebrow,
        "pupil_x": 15 * preset.pupil_x,
        "pupil_y": -15 * preset.pupil_y,
        "aaa": 120 * preset.aaa + 30 * preset.ooo,
        "eee": 15 * preset.eee,
        "woo": 15 * preset.woo + 15 * preset.ooo,
        "smile": preset.smile,
    }
    return {name: _clamped(name, value) for name, value in values.items()}


def _clamped(name: str, value: float) -> float:
    bounds = ExpressionParams.__dataclass_fields__[name].metadata["bounds"]
    return float(min(max(value, bounds.lo), bounds.hi)) + 0.0  # + 0.0: never -0.0
