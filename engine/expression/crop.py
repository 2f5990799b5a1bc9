"""Face crop and paste-back geometry of the Expression Editor
(specs/weights/advanced_liveportrait_facecrop.md): which box, the square crop and where
the 512² generator output goes back in the full frame."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import InputError
from engine.faces.boxes import FaceBox

MIN_FACE_WIDTH = 30  # px; narrower boxes are dropped
OUTPUT_SIZE = 512  # the SPADE generator's output side
DRIVING_CROP_FACTOR = 1.7  # the driving image is always cropped with this factor


@dataclass(frozen=True)
class CropSquare:
    """The crop square (x1, y1, x2, y2), int pixels; may stick out past right/bottom."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def side(self) -> int:
        return self.x2 - self.x1


@dataclass(frozen=True)
class CropPlan:
    """Where the face is cut from and pasted back to, for one image."""

    square: CropSquare
    region: CropSquare  # the square clipped to the image (right/bottom only)
    face_scale: tuple[float, float]  # 512² output -> frame scale for the face (x, y)
    mask_scale: tuple[float, float]  # the same for the paste-back mask
    box: FaceBox

    @property
    def clipped(self) -> bool:
        return self.region != self.square


def choose_face(boxes: Sequence[FaceBox], image_width: int) -> FaceBox | None:
    """The box at least 30 px wide whose centre is closest to the image's horizontal
    centre (only x counts; the first of equals wins), or None."""
    best, best_distance = None, float(image_width)
    centre = image_width / 2
    for box in boxes:
        if box.width < MIN_FACE_WIDTH:
            continue
        distance = abs(centre - (box.x1 + box.width / 2))
        if distance < best_distance:
            best, best_distance = box, distance
    return best


def crop_square(box: FaceBox, crop_factor: float, width: int, height: int) -> CropSquare:
    """The node's square: max(w, h) * crop_factor around the box centre (ints truncated),
    shifted inside the image per axis, then both far sides cut by the smaller overshoot."""
    side = max(box.width * crop_factor, box.height * crop_factor)
    centre_x, centre_y = int(box.x1 + box.width / 2), int(box.y1 + box.height / 2)
    x1, x2 = _fit_axis(int(centre_x - side / 2), int(centre_x + side / 2), width)
    y1, y2 = _fit_axis(int(centre_y - side / 2), int(centre_y + side / 2), height)
    if x2 > width and y2 > height:
        over = min(x2 - width, y2 - height)
        x2, y2 = x2 - over, y2 - over
    return CropSquare(x1, y1, x2, y2)


def _fit_axis(start: int, end: int, size: int) -> tuple[int, int]:
    if start < 0:
        return 0, end - start
    if end > size:
        start, end = start - (end - size), size
        if start < 0:
            start, end = 0, end - start
    return start, end


def plan_crop(box: FaceBox, crop_factor: float, width: int, height: int) -> CropPlan:
    """The square, its visible region and the two paste-back scales (face and mask)."""
    square = crop_square(box, crop_factor, width, height)
    region = CropSquare(square.x1, square.y1, min(square.x2, width), min(square.y2, height))
    region_scale = (
        (region.x2 - region.x1) / OUTPUT_SIZE,
        (region.y2 - region.y1) / OUTPUT_SIZE,
    )
    # The node warps the mask with the visible region's scales but, when the square was
    # clipped, the face with the full square's one: both kept, to paste as it does.
    face_scale = region_scale
    if region != square:
        face_scale = (square.side / OUTPUT_SIZE, square.side / OUTPUT_SIZE)
    return CropPlan(square, region, face_scale, region_scale, box)


def find_face(boxes: Sequence[FaceBox], width: int, height: int, what: str) -> FaceBox:
    """choose_face, or an InputError that says why no face can be edited."""
    face = choose_face(boxes, width)
    if face is not None:
        return face
    if boxes:
        widest = max(box.width for box in boxes)
        raise InputError(
            f"The face in {what} is too small to edit ({widest:.0f} px wide; the Expression "
            f"editor needs at least {MIN_FACE_WIDTH} px). Use a larger image or a closer crop."
        )
    raise InputError(
        f"No face was found in {what} ({width}×{height}). The Expression editor needs a "
        "clearly visible face, roughly facing the camera; switch the editor off for this image."
    )
