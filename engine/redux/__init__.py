"""Flux Redux: two reference portraits as extra conditioning tokens (specs §5).

`encoder` preprocesses images for SigLIP and runs SigLIP + the Redux MLP, `blend` holds the
pure token arithmetic (average, concatenation, prompt balance), `models` finds, loads and
keeps the two models warm. This module itself imports only Pillow, so the studio can call
`reference_hints` without loading torch.
"""

from __future__ import annotations

from PIL import Image

# The suite's image guidelines (seed 000 §3.3): >= 2048 px square recommended, and the
# studio's floor of 1024 px; SigLIP itself reads 384 x 384.
RECOMMENDED_SIDE = 2048
MIN_SIDE = 1024
SIGLIP_SIDE = 384
# Beyond this long/short ratio the centre crop cuts a good part of the picture away.
SQUARE_TOLERANCE = 1.25


def reference_hints(image: Image.Image) -> list[str]:
    """Advice on a Redux reference: resolution against the guidelines, and framing."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    hints = []
    if short < SIGLIP_SIDE:
        hints.append(
            f"This reference is only {width}×{height} px: smaller than the {SIGLIP_SIDE} px "
            "the vision encoder reads, so it is upscaled and its detail is guessed. Use a "
            f"portrait of at least {MIN_SIDE} px (ideally {RECOMMENDED_SIDE} px square)."
        )
    elif short < MIN_SIDE:
        hints.append(
            f"This reference is {width}×{height} px; the guidelines ask for at least "
            f"{MIN_SIDE} px on the short side ({RECOMMENDED_SIDE} px square recommended)."
        )
    if short > 0 and long / short > SQUARE_TOLERANCE:
        hints.append(
            f"This reference is far from square ({width}×{height}); the encoder sees only "
            "its centre square. Crop it to a square, shoulders-up framing with the face "
            "centred, or set its image mode to Keep aspect ratio (Advanced)."
        )
    return hints
