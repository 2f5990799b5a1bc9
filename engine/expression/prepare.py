"""Per-image work of the Expression Editor: detect and crop the face, run the appearance and
motion networks once (cached by the stage graph), then, per slider move, the keypoints,
stitching, warp, generator and paste-back."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from engine.expression.crop import DRIVING_CROP_FACTOR, CropPlan, find_face, plan_crop
from engine.expression.editor import EditParams, apply_stitching, target_keypoints
from engine.expression.keypoints import KeypointInfo, refine_motion, source_keypoints
from engine.expression.networks import (
    LivePortraitNetworks,
    extract_features,
    motion_raw,
    stitching_delta,
    warp_decode,
)
from engine.expression.paste import paste_face
from engine.faces.boxes import FaceBox, FaceDetector

INPUT_SIZE = 256  # the networks' input side
DETECT_MAX_SIDE = 2048  # larger frames are detected on a downscaled copy


@dataclass(frozen=True)
class FacePrep:
    """What a slider move needs from one image: the crop plan, the source keypoint info,
    the appearance feature volume and the source keypoints x_s."""

    plan: CropPlan
    info: KeypointInfo
    features: torch.Tensor
    x_s: torch.Tensor


def frame_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, truncated as the node does."""
    return (image.detach().float().clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def detect_faces(detector: FaceDetector, frame: np.ndarray) -> list[FaceBox]:
    """The detector's boxes in frame pixels; a huge frame is searched at 2048 px."""
    height, width = frame.shape[:2]
    factor = max(height, width) / DETECT_MAX_SIDE
    if factor <= 1:
        return detector.detect(frame)
    size = (round(width / factor), round(height / factor))
    small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    return [_scaled_box(box, factor) for box in detector.detect(small)]


def _scaled_box(box: FaceBox, factor: float) -> FaceBox:
    x1, y1, x2, y2 = (value * factor for value in (box.x1, box.y1, box.x2, box.y2))
    return FaceBox(x1, y1, x2, y2, box.score)


def face_input(frame: np.ndarray, plan: CropPlan, device: torch.device) -> torch.Tensor:
    """The crop square (zero-padded where it leaves the image) at 256², (1, 3, 256, 256) in
    [0, 1]: INTER_AREA when shrinking, INTER_LINEAR when enlarging, as the node does."""
    square, region = plan.square, plan.region
    face = frame[region.y1 : region.y2, region.x1 : region.x2]
    if plan.clipped:
        canvas = np.zeros((square.y2 - square.y1, square.x2 - square.x1, 3), np.uint8)
        canvas[: face.shape[0], : face.shape[1]] = face
        face = canvas
    shrink = face.shape[0] > INPUT_SIZE
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    resized = cv2.resize(face, (INPUT_SIZE, INPUT_SIZE), interpolation=interpolation)
    tensor = torch.from_numpy(resized.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    return tensor.to(device)


def keypoint_info(nets: LivePortraitNetworks, face: torch.Tensor) -> KeypointInfo:
    return refine_motion(motion_raw(nets, face))


def prepare_face(
    nets: LivePortraitNetworks,
    detector: FaceDetector,
    image: torch.Tensor,
    crop_factor: float,
    what: str,
) -> FacePrep:
    """Detect, crop and encode the face of one (3, H, W) image."""
    frame = frame_uint8(image)
    height, width = frame.shape[:2]
    box = find_face(detect_faces(detector, frame), width, height, what)
    plan = plan_crop(box, crop_factor, width, height)
    face = face_input(frame, plan, image.device)
    info = keypoint_info(nets, face)
    return FacePrep(plan, info, extract_features(nets, face).float(), source_keypoints(info))


def driving_info(
    nets: LivePortraitNetworks, detector: FaceDetector, image: torch.Tensor
) -> KeypointInfo:
    """Keypoint info of the driving face, cropped with the node's fixed factor 1.7."""
    frame = frame_uint8(image)
    height, width = frame.shape[:2]
    box = find_face(detect_faces(detector, frame), width, height, "the driving image")
    plan = plan_crop(box, DRIVING_CROP_FACTOR, width, height)
    return keypoint_info(nets, face_input(frame, plan, image.device))


def edited_face(
    nets: LivePortraitNetworks,
    prep: FacePrep,
    edit: EditParams,
    driving: KeypointInfo | None,
) -> torch.Tensor:
    """The generator's (3, 512, 512) face with the edit applied (stitching included)."""
    x_d = target_keypoints(prep.info, edit, driving)
    x_d = apply_stitching(prep.x_s, x_d, stitching_delta(nets, prep.x_s, x_d).float())
    return warp_decode(nets, prep.features, prep.x_s, x_d)[0].float()


def edit_image(
    nets: LivePortraitNetworks,
    prep: FacePrep,
    image: torch.Tensor,
    edit: EditParams,
    driving: KeypointInfo | None,
    mask: torch.Tensor,
) -> torch.Tensor:
    """One (3, H, W) image with its face edited and pasted back."""
    face = edited_face(nets, prep, edit, driving)
    return paste_face(image, face, prep.plan, mask)
