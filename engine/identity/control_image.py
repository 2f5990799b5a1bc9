"""The control image for a pose: an OpenPose skeleton picture, VAE-encoded and packed to tokens.

A pose comes either as an uploaded skeleton picture or as a JSON of OpenPose keypoints (COCO-18,
or OpenPose's BODY_25 mapped onto it; DWPose and controlnet_aux save the same), drawn
here in OpenPose's 18-keypoint body layout with its standard limb colours and stick width (the
pictures pose ControlNets were trained on). As FluxControlNetPipeline prepares it for the
InstantX / Shakker-Labs ControlNets, the picture is resized to the render size, encoded by the
Flux VAE, shifted and scaled, and packed into 2x2 patch tokens like the latents.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from engine.errors import InputError, RecipeError
from engine.flux.latents import pack
from engine.images import open_checked, to_rgb
from engine.input_limits import parse_json_document

# OpenPose COCO-18 body keypoints, in the order of its pose_keypoints_2d arrays.
KEYPOINT_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
# The 17 limbs OpenPose draws (keypoint index pairs); limb i and keypoint i share colour i.
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
STICK_WIDTH = 4  # half-width in pixels of each limb's ellipse
KEYPOINT_RADIUS = 4
LIMB_DIMMING = 0.6  # limbs are drawn at 60 % of their colour, keypoints at full colour
# BODY_25's index of each COCO-18 keypoint (BODY_25 adds the mid-hip at 8 and six foot points).
BODY_25 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
BODY_25_POINTS = 25
MAX_PEOPLE = 64
OUTSIDE = 1.0  # a keypoint more than one canvas beyond the canvas's edge is an error
MAX_POSE_JSON_BYTES = 1_000_000
# Our names for how a picture meets the render size -> diffusers' VaeImageProcessor modes.
FITS = {"crop": "crop", "stretch": "default"}
GRID = 16  # Flux renders are multiples of 16 px (8x VAE, 2x2 patches)


@dataclass(frozen=True)
class PosePerson:
    """One person's 18 keypoints as (x, y) fractions of the canvas, None where not seen."""

    points: tuple[tuple[float, float] | None, ...]

    def __post_init__(self) -> None:
        if len(self.points) != len(KEYPOINT_NAMES):
            raise ValueError(f"{len(self.points)} keypoints; OpenPose's body has 18")


@dataclass(frozen=True)
class PoseJson:
    """An OpenPose JSON's people and its canvas size in pixels (None: keypoints as fractions)."""

    people: tuple[PosePerson, ...]
    canvas: tuple[float, float] | None


def parse_pose_json(text: str | bytes) -> tuple[PosePerson, ...]:
    """People from an OpenPose JSON (see parse_pose_document)."""
    return parse_pose_document(text).people


def parse_pose_document(text: str | bytes) -> PoseJson:
    """An OpenPose JSON ({"people": [{"pose_keypoints_2d": [x, y, c, ...]}],
    "canvas_width", "canvas_height"}, or a list holding one such frame). Pixel coordinates
    need the canvas size; coordinates all within [0, 1] are read as fractions."""
    try:
        data = parse_json_document(text, "The pose JSON", max_bytes=MAX_POSE_JSON_BYTES)
    except RecipeError as exc:
        raise InputError(str(exc)) from None
    frame = data[0] if isinstance(data, list) and len(data) == 1 else data
    people = frame.get("people") if isinstance(frame, dict) else None
    if not isinstance(people, list) or not 0 < len(people) <= MAX_PEOPLE:
        raise InputError(
            'The pose JSON needs a "people" list (1 to 64 people), each with "pose_keypoints_2d", '
            "as OpenPose and the ControlNet pose editors save it."
        )
    size = (frame.get("canvas_width"), frame.get("canvas_height"))
    found = tuple(_person(person, index, size) for index, person in enumerate(people))
    if all(point is None for person, _ in found for point in person.points):
        raise InputError(
            "The pose JSON has no keypoint seen (every confidence is 0): nothing to draw."
        )
    canvas = None if all(scale == (1.0, 1.0) for _, scale in found) else found[0][1]
    return PoseJson(tuple(person for person, _ in found), canvas)


def _person(
    person: Any, index: int, size: tuple[Any, Any]
) -> tuple[PosePerson, tuple[float, float]]:
    """One person's keypoints as fractions of the canvas, and the canvas scale used."""
    values = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
    count = len(KEYPOINT_NAMES) * 3
    counts = (count, BODY_25_POINTS * 3)
    if not isinstance(values, list) or len(values) not in counts or not all(map(_number, values)):
        raise InputError(
            f"Person {index + 1} of the pose JSON needs pose_keypoints_2d with {count} numbers "
            f"(18 OpenPose body keypoints as x, y, confidence) or {counts[1]} (BODY_25)."
        )
    triples = [values[i : i + 3] for i in range(0, len(values), 3)]
    if len(triples) == BODY_25_POINTS:
        triples = [triples[i] for i in BODY_25]
    seen = [(x, y) for x, y, c in triples if c > 0]
    scale = _canvas_scale(size, seen)
    points = tuple((x / scale[0], y / scale[1]) if c > 0 else None for x, y, c in triples)
    for name, point in zip(KEYPOINT_NAMES, points, strict=True):
        if point is not None and not all(-OUTSIDE <= v <= 1 + OUTSIDE for v in point):
            raise InputError(
                f"Person {index + 1} of the pose JSON has the {name.replace('_', ' ')} far "
                "outside its canvas; check canvas_width and canvas_height (the size of the "
                "picture the keypoints were taken from)."
            )
    return PosePerson(points), scale


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _canvas_scale(size: tuple[Any, Any], seen: list[tuple[float, float]]) -> tuple[float, float]:
    if all(_number(v) and v > 0 for v in size):
        return float(size[0]), float(size[1])
    if all(0 <= v <= 1 for point in seen for v in point):
        return 1.0, 1.0
    raise InputError(
        "The pose JSON gives pixel coordinates without canvas_width and canvas_height; add "
        "them (the size of the picture the keypoints were taken from)."
    )


def draw_pose(people: Sequence[PosePerson], width: int, height: int) -> Image.Image:
    """The OpenPose skeleton picture (black background) of `people` at width x height."""
    import cv2

    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for person in people:
        for limb, (a, b) in enumerate(LIMBS):
            ends = (person.points[a], person.points[b])
            if ends[0] is not None and ends[1] is not None:
                polygon = _limb_polygon(ends[0], ends[1], width, height)
                dimmed = [int(c * LIMB_DIMMING) for c in COLORS[limb]]
                cv2.fillConvexPoly(canvas, polygon, dimmed)
    for person in people:
        for index, point in enumerate(person.points):
            if point is not None:
                centre = (int(point[0] * width), int(point[1] * height))
                cv2.circle(canvas, centre, KEYPOINT_RADIUS, COLORS[index], thickness=-1)
    return Image.fromarray(canvas, "RGB")


def _limb_polygon(
    start: tuple[float, float], end: tuple[float, float], width: int, height: int
) -> np.ndarray:
    """OpenPose's limb: an ellipse between the two keypoints, STICK_WIDTH px half-wide."""
    import cv2

    x0, y0, x1, y1 = start[0] * width, start[1] * height, end[0] * width, end[1] * height
    length = math.hypot(x0 - x1, y0 - y1)
    angle = math.degrees(math.atan2(y0 - y1, x0 - x1))
    centre = (int((x0 + x1) / 2), int((y0 + y1) / 2))
    return cv2.ellipse2Poly(centre, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)


def open_pose_image(data: bytes) -> Image.Image:
    """An uploaded pose picture, checked like every upload, as RGB."""
    return to_rgb(open_checked(data, "The pose image"))


def control_pixels(image: Image.Image, width: int, height: int, fit: str = "crop") -> torch.Tensor:
    """(1, 3, height, width) in [-1, 1], as FluxControlNetPipeline's image processor prepares
    the control image; "crop" keeps the pose's proportions, "stretch" is the pipeline's default."""
    from diffusers.image_processor import VaeImageProcessor

    if fit not in FITS:
        raise ValueError(f"fit must be one of {sorted(FITS)}, not {fit!r}")
    if width % GRID or height % GRID or width <= 0 or height <= 0:
        raise ValueError(f"render size {width}x{height} is not a multiple of {GRID} px")
    processor = VaeImageProcessor(vae_scale_factor=GRID)
    return processor.preprocess(to_rgb(image), height=height, width=width, resize_mode=FITS[fit])


@torch.inference_mode()
def encode_control(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Packed control tokens (B, H/16 * W/16, 64) from pixels in [-1, 1], as the pipeline
    encodes them for latent-input ControlNets: VAE latents, shifted, scaled, packed."""
    parameter = next(vae.parameters())
    encoded = vae.encode(pixels.to(parameter.device, parameter.dtype)).latent_dist
    # The latent mean, not a sample: the same pose gives the same tokens (ComfyUI also uses it).
    latents = encoded.mode()
    config = vae.config
    return pack((latents - config.shift_factor) * config.scaling_factor)


def pose_control_tokens(
    vae: Any, image: Image.Image, width: int, height: int, fit: str = "crop"
) -> torch.Tensor:
    """The packed control tokens of a pose picture for a width x height render."""
    return encode_control(vae, control_pixels(image, width, height, fit))
