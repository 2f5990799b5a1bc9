"""The Expression tab's rows of the bindings table (suite group 6, specs §7).

Directions follow the node: the sliders keep its units, so values typed from ComfyUI
workflows give the same face.
"""

from __future__ import annotations

from studio.binding_row import Binding

EXPRESSION_BINDINGS: tuple[Binding, ...] = (
    Binding(
        "expression.enabled",
        "Expression editor",
        "Off shows the portrait as rendered (like bypassing the node). With every slider at 0 "
        "and no driving image the editor changes nothing and is skipped.",
    ),
    Binding("expression.rotate_pitch", "Pitch", "Head nod in degrees: negative looks up."),
    Binding("expression.rotate_yaw", "Yaw", "Head turn in degrees: negative turns to the left."),
    Binding("expression.rotate_roll", "Roll", "Head tilt in degrees: negative tilts left."),
    Binding("expression.blink", "Blink", "-20 closes the eyes, 0 as rendered, +5 opens them wide."),
    Binding("expression.eyebrow", "Eyebrow", "-10 frowns, +15 raises the brows."),
    Binding("expression.wink", "Wink", "Closes the person's right eye; 25 fully."),
    Binding("expression.pupil_x", "Pupil x", "Gaze: -15 to the viewer's left, +15 right."),
    Binding("expression.pupil_y", "Pupil y", "Gaze: -15 down, +15 up."),
    Binding("expression.aaa", "Aaa", "Opens the mouth: 120 wide open, negative presses it shut."),
    Binding("expression.eee", "Eee", "Lips spread as in 'eee'; negative purses them."),
    Binding("expression.woo", "Woo", "Lips rounded as in 'oo'; negative pulls them wide."),
    Binding("expression.smile", "Smile", "0 as rendered, 1 a full smile, negative a scowl."),
    Binding(
        "expression.src_ratio",
        "Source expression",
        "How much of the rendered face's own expression is kept (1 = all of it).",
    ),
    Binding(
        "expression.sample_parts",
        "Copy from the driving face",
        "What the driving photo gives: its expression, its head pose, only the mouth, only the "
        "eyes, or all of it. Applied before the sliders.",
        labels=(
            ("Expression", "OnlyExpression"),
            ("Head pose", "OnlyRotation"),
            ("Mouth", "OnlyMouth"),
            ("Eyes", "OnlyEyes"),
            ("All", "All"),
        ),
    ),
    Binding(
        "expression.sample_ratio",
        "Driving strength",
        "How much of the driving face is copied (1 = as it is).",
    ),
    Binding(
        "expression.crop_factor",
        "Crop factor",
        "Context around the detected face: larger keeps more hair and neck in the edit. "
        "Changing it finds and encodes the face again.",
    ),
)
