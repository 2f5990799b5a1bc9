"""Real photos that ship inside pip packages, as the tests use them."""

from __future__ import annotations

import io

from PIL import Image


def astronaut() -> Image.Image:
    """skimage's astronaut: one face at about x 182-269, y 63-174 of 512², public domain."""
    from skimage import data

    return Image.fromarray(data.astronaut())


def six_people() -> Image.Image:
    """insightface's t1.jpg: six people, none of them the astronaut."""
    from importlib import resources

    path = resources.files("insightface") / "data" / "images" / "t1.jpg"
    return Image.open(str(path)).convert("RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
