"""A pose picture from an OpenPose keypoint JSON (OpenPose, DWPose, controlnet_aux and the
pose editors all save {"people": [{"pose_keypoints_2d": [x, y, c, ...]}], "canvas_width",
"canvas_height"}): the skeleton drawn at the render size, ready to be stored like an uploaded
pose picture."""

from __future__ import annotations

import io

from PIL import Image

from engine.identity.control_image import draw_pose, parse_pose_document

POSE_JSON_NAME = "The pose picture drawn from the JSON"


def pose_json_picture(data: bytes | str, width: int, height: int) -> Image.Image:
    """The OpenPose skeleton of every person in the JSON, width x height: the JSON's canvas
    scaled to fit inside and centred, its proportions kept (black around it); keypoints given
    as fractions (no canvas size) span the whole picture. InputError says what is wrong."""
    pose = parse_pose_document(data)
    if pose.canvas is None:
        return draw_pose(pose.people, width, height)
    canvas_w, canvas_h = pose.canvas
    scale = min(width / canvas_w, height / canvas_h)
    inner = (
        min(width, max(1, round(canvas_w * scale))),
        min(height, max(1, round(canvas_h * scale))),
    )
    picture = Image.new("RGB", (width, height))
    picture.paste(
        draw_pose(pose.people, *inner), ((width - inner[0]) // 2, (height - inner[1]) // 2)
    )
    return picture


def pose_json_png(data: bytes | str, width: int, height: int) -> bytes:
    """pose_json_picture as PNG bytes, for the image store."""
    buffer = io.BytesIO()
    pose_json_picture(data, width, height).save(buffer, format="PNG")
    return buffer.getvalue()
