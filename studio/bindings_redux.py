"""The Redux blend tab's rows of the bindings table (suite group 1, specs §5)."""

from __future__ import annotations

from studio.binding_row import Binding


def redux_advanced(n: int) -> tuple[Binding, ...]:
    """Reference `n`'s ReduxAdvanced rows (the Redux tab shows them in an accordion)."""
    path = f"redux.advanced{n}"
    both = "In weighted average both references need the same {}; concatenation takes any."
    return (
        Binding(
            f"{path}.downsampling_factor",
            "Downsampling (1 = off; 3 ≈ 81 tokens, weaker reference)",
            "The reference's 27×27 token grid is resized to round(27 / f) per side: fewer "
            "tokens, so the prompt gets more say. " + both.format("factor"),
        ),
        Binding(
            f"{path}.downsampling_function",
            "Downsampling function",
            "How the grid is resized (with a factor above 1): area averages neighbouring "
            "tokens; nearest keeps some and drops the rest; bilinear and bicubic interpolate.",
            labels=(("nearest-exact", "nearest_exact"),),
        ),
        Binding(
            f"{path}.weight",
            "Weight (tokens × weight²)",
            "ReduxAdvanced's weight: the reference's tokens are multiplied by its square "
            "(0.7 gives 0.49). 1 = off.",
        ),
        Binding(
            f"{path}.image_mode",
            "Image mode",
            "What the vision encoder sees: the centre square, or the whole picture letterboxed "
            "onto black. Changing it re-encodes the reference.",
            widget="radio",
            labels=(("Center crop", "center_crop"), ("Keep aspect ratio", "keep_aspect")),
        ),
        Binding(
            f"{path}.attention_bias",
            "Attention bias (log; 0 = none)",
            "Added to this reference's attention bias after the prompt balance: −0.69 halves "
            "its weight in attention, +0.69 doubles it, −4 all but ignores it. "
            + both.format("bias"),
        ),
    )


REDUX_BINDINGS: tuple[Binding, ...] = (
    # Redux blend (suite group 1); the two reference digests are set by the uploads.
    Binding(
        "redux.enabled",
        "Redux references",
        "Blend the two reference portraits into the conditioning. Uploading a reference "
        "switches this on.",
    ),
    Binding(
        "redux.strength1",
        "Strength · reference 1",
        "1-100 → 0.01-1.00. In weighted average only the ratio of the two counts: 70/30 "
        "favours reference 1 and keeps traits of reference 2.",
    ),
    Binding(
        "redux.strength2",
        "Strength · reference 2",
        "1-100 → 0.01-1.00. In concatenation each reference keeps its own strength.",
    ),
    Binding(
        "redux.mode",
        "Blend mode",
        "Weighted average: one block of tokens, w·ref 1 + (1 − w)·ref 2 with "
        "w = s1 / (s1 + s2), at the magnitude Redux was trained with. Concatenation: both "
        "blocks one after the other, each scaled by its strength / 100; twice the tokens, "
        "each reference stays distinct, and each step costs a little more.",
        widget="radio",
        labels=(("Weighted average", "average"), ("Concatenation", "concat")),
    ),
    Binding(
        "redux.prompt_balance",
        "Prompt balance",
        "0.5 is neutral (Redux as trained). Toward 1 the references fade out and the text "
        "prompt leads (1 ignores them); toward 0 the references dominate (at 0 each counts "
        "twice).",
    ),
    *redux_advanced(1),
    *redux_advanced(2),
)
