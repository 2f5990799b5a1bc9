"""A/B between any two images: both fitted into one frame, with a line that says so.

Gradio's ImageSlider lays B over A at A's size, so a B of another size draws outside the
frame; fitting both first keeps the comparison honest and visible.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

BACKDROP = (24, 24, 27)


@dataclass(frozen=True)
class FittedPair:
    a: Image.Image
    b: Image.Image
    note: str  # empty when both had the same size


def fit_into(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` scaled to fit `size` keeping its aspect, centred on a dark backdrop."""
    if image.size == size:
        return image
    scale = min(size[0] / image.width, size[1] / image.height)
    inner = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    frame = Image.new("RGB", size, BACKDROP)
    offset = ((size[0] - inner[0]) // 2, (size[1] - inner[1]) // 2)
    frame.paste(image.convert("RGB").resize(inner, Image.Resampling.LANCZOS), offset)
    return frame


def fit_pair(a: Image.Image, b: Image.Image) -> FittedPair:
    """Both images in the frame of the larger one (no detail of the larger is lost)."""
    if a.size == b.size:
        return FittedPair(a, b, "")
    frame = a.size if a.width * a.height >= b.width * b.height else b.size
    note = (
        f"A is {a.width}×{a.height}, B is {b.width}×{b.height}: both are shown fitted "
        f"into {frame[0]}×{frame[1]}."
    )
    return FittedPair(fit_into(a, frame), fit_into(b, frame), note)
