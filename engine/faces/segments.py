"""Impact-Pack's FaceDetailer detection -> segment pipeline (specs/algorithms.md §8), as
pure functions over numpy arrays: which boxes count, the crop region around each, its
mask (bbox rectangle or segm mask, dilated), SAM refinement, the feathered paste, and
the scale a segment is refined at.

Matched against ltdrdata/ComfyUI-Impact-Pack @727295b (2024-10): modules/impact/utils.py,
core.py, impact_pack.py; and its detectors in ltdrdata/ComfyUI-Impact-Subpack @bd4dedc
(2024-09, the Pack's `subpack` submodule then): impact/subcore.py. Names below cite them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.faces.boxes import FaceBox
from engine.faces.yolo_segm import Detection

CropRegion = tuple[int, int, int, int]  # x1, y1, x2, y2: whole pixels, x2/y2 exclusive
Bbox = tuple[float, float, float, float]  # x1, y1, x2, y2 as the detector gave them
FEATHER_SIGMA = 10.0  # tensor_gaussian_blur_mask's default, which both of its callers keep


@dataclass(frozen=True)
class SegmentParams:
    """The FaceDetailer's detection settings (its defaults)."""

    bbox_threshold: float = 0.5
    dilation: int = 10
    crop_factor: float = 3.0
    drop_size: int = 10


@dataclass(frozen=True, eq=False)
class Segment:
    """Impact's SEG without its image copy: where to crop, the detected box, the crop-sized
    float32 mask in [0, 1], the class name and the detector's confidence."""

    crop_region: CropRegion
    bbox: Bbox
    mask: np.ndarray
    label: str
    confidence: float

    @property
    def is_empty(self) -> bool:
        """DetailerForEach.do_detail skips such a segment ("segment skip [empty mask]")."""
        return not bool(np.any(self.mask))


@dataclass(frozen=True)
class CropScale:
    """The scale a crop is refined at, and the crop's size at that scale."""

    upscale: float
    width: int
    height: int


def keeps_box(box: FaceBox, threshold: float, drop_size: int) -> bool:
    """subcore inference_bbox + UltraBBoxDetector.detect: ultralytics keeps score > threshold
    (its NMS compares conf > conf_thres); the detector then keeps a box only when both sides
    exceed max(drop_size, 1), i.e. drops it when width or height <= drop_size."""
    drop = max(drop_size, 1)
    return box.score > threshold and box.width > drop and box.height > drop


def crop_region(width: int, height: int, bbox: Bbox, crop_factor: float) -> CropRegion:
    """utils.make_crop_region (crop_min_size unset): the bbox scaled by crop_factor about its
    centre, the start truncated with int() (towards zero), then shifted inside the image and
    clipped by normalize_region."""
    x1, y1, x2, y2 = bbox
    crop_w = (x2 - x1) * crop_factor
    crop_h = (y2 - y1) * crop_factor
    start_x = int(x1 + (x2 - x1) / 2 - crop_w / 2)
    start_y = int(y1 + (y2 - y1) / 2 - crop_h / 2)
    left, right = _fit_span(width, start_x, crop_w)
    top, bottom = _fit_span(height, start_y, crop_h)
    return left, top, right, bottom


def _fit_span(limit: int, start: int, size: float) -> tuple[int, int]:
    """utils.normalize_region: a span starting before 0 moves to 0, one ending past the limit
    moves back to end there, and either end is cut to [0, limit]; both ends int()-truncated."""
    if start < 0:
        return 0, int(min(limit, size))
    if start + size > limit:
        return int(max(0, limit - size)), int(limit)
    return int(start), int(min(limit, start + size))


def bbox_mask(height: int, width: int, bbox: Bbox) -> np.ndarray:
    """subcore inference_bbox's mask: cv2.rectangle filled between the int()-truncated corners,
    both corners included (so int(x2) - int(x1) + 1 columns), at the image's size, float32."""
    import cv2

    mask = np.zeros((height, width), np.uint8)
    x1, y1, x2, y2 = (int(v) for v in bbox)
    cv2.rectangle(mask, (x1, y1), (x2, y2), 255, -1)
    return mask.astype(bool).astype(np.float32)


def dilate_mask(mask: np.ndarray, dilation: int) -> np.ndarray:
    """utils.dilate_mask / dilate_masks: cv2.dilate with a square |dilation| kernel of ones
    (cv2.erode when negative; unchanged when 0), one iteration, OpenCV's default anchor and
    border (so an even kernel reaches one pixel further to the top-left)."""
    import cv2

    if dilation == 0:
        return mask
    kernel = np.ones((abs(dilation), abs(dilation)), np.uint8)
    morph = cv2.dilate if dilation > 0 else cv2.erode
    return morph(mask, kernel, iterations=1)


def crop_array(array: np.ndarray, region: CropRegion) -> np.ndarray:
    """utils.crop_ndarray2 / crop_ndarray4 for (H, W) and (H, W, C) arrays."""
    x1, y1, x2, y2 = region
    return array[y1:y2, x1:x2]


def segments_from_detections(
    detections: Sequence[Detection],
    height: int,
    width: int,
    params: SegmentParams,
    *,
    use_masks: bool = True,
) -> list[Segment]:
    """subcore UltraSegmDetector.detect (detections with masks, when `use_masks`) or
    UltraBBoxDetector.detect (bbox rectangles): per kept box, an image-sized mask, dilated
    only when dilation > 0 (both detectors ignore a negative bbox_dilation), then cropped to
    the box's crop region."""
    segments = []
    for found in detections:
        if not keeps_box(found.box, params.bbox_threshold, params.drop_size):
            continue
        box = found.box
        bbox = (box.x1, box.y1, box.x2, box.y2)
        if use_masks and found.mask is not None:
            mask = found.mask.astype(np.float32)  # create_segmasks: astype(np.float32)
        else:
            mask = bbox_mask(height, width, bbox)
        if params.dilation > 0:
            mask = dilate_mask(mask, params.dilation)
        region = crop_region(width, height, bbox, params.crop_factor)
        cropped = np.ascontiguousarray(crop_array(mask, region))
        segments.append(Segment(region, bbox, cropped, found.label, box.score))
    return segments


def select_sam_masks(
    masks: Sequence[np.ndarray], scores: Sequence[float], threshold: float
) -> list[np.ndarray]:
    """core.sam_predict: the masks scoring >= threshold; if none does, the first of the
    highest-scoring ones, provided its score is > 0 (the running maximum starts at 0)."""
    selected = [mask for mask, score in zip(masks, scores, strict=True) if score >= threshold]
    if selected:
        return selected
    best, best_score = None, 0.0
    for mask, score in zip(masks, scores, strict=True):
        if score > best_score:
            best, best_score = mask, score
    return [] if best is None else [best]


def sam_mask(selected: Sequence[np.ndarray], height: int, width: int, dilation: int) -> np.ndarray:
    """core.make_sam_mask's merge: combine_masks2 (astype(uint8), bitwise OR) over every
    segment's selected masks, as float32, then dilate_mask(sam_dilation); all zeros when
    nothing was selected. (combine_masks2 skips a mask of another shape; we refuse it.)"""
    union = np.zeros((height, width), np.uint8)
    for mask in selected:
        if mask.shape != union.shape:
            raise ValueError(f"SAM mask of shape {mask.shape} for an image of {union.shape}")
        union |= np.asarray(mask).astype(np.uint8)
    if not selected:
        return union.astype(np.float32)
    return dilate_mask(union.astype(np.float32), dilation)


def and_with_mask(segments: Sequence[Segment], mask: np.ndarray) -> list[Segment]:
    """core.segs_bitwise_and_mask: each segment's mask ANDed with the image mask's window over
    its crop region, as Impact does it on uint8 (x255, truncated) values; exact AND for 0/1."""
    image_mask = (mask * 255).astype(np.uint8)
    anded = []
    for segment in segments:
        own = (segment.mask * 255).astype(np.uint8)
        both = np.bitwise_and(own, crop_array(image_mask, segment.crop_region))
        anded.append(_with_mask(segment, both.astype(np.float32) / 255.0))
    return anded


def refine_with_sam(
    segments: Sequence[Segment],
    predictions: Sequence[tuple[Sequence[np.ndarray], Sequence[float]]],
    threshold: float,
    dilation: int,
    shape: tuple[int, int],
) -> list[Segment]:
    """FaceDetailer.enhance_face with a SAM model: for each segment's SAM prediction (image-size
    masks and their scores) keep what select_sam_masks keeps, union all of them (sam_mask),
    and AND every segment's mask with it (and_with_mask)."""
    kept = [m for masks, scores in predictions for m in select_sam_masks(masks, scores, threshold)]
    return and_with_mask(segments, sam_mask(kept, shape[0], shape[1], dilation))


def combined_mask(segments: Sequence[Segment], height: int, width: int) -> np.ndarray:
    """core.segs_to_combined_mask: every segment's mask ORed (as x255 uint8) into an image-size
    float32 mask; enhance_face ANDs bbox segments with this mask of a segm detector's."""
    mask = np.zeros((height, width), np.uint8)
    for segment in segments:
        x1, y1, x2, y2 = segment.crop_region
        mask[y1:y2, x1:x2] |= (segment.mask * 255).astype(np.uint8)
    return mask.astype(np.float32) / 255.0


def feather_kernel_size(feather: int, height: int, width: int) -> int | None:
    """utils.tensor_gaussian_blur_mask's kernel: 2*feather + 1, or, when the mask's short side
    is <= that, int(short/2) made odd; None (no blur) for feather <= 0 or a kernel under 3."""
    if feather <= 0:
        return None
    kernel = feather * 2 + 1
    shortest = min(height, width)
    if shortest <= kernel:
        kernel = int(shortest / 2)
        if kernel % 2 == 0:
            kernel += 1
        if kernel < 3:
            return None
    return kernel


def feather_mask(mask: np.ndarray, feather: int) -> np.ndarray:
    """utils.tensor_gaussian_blur_mask(mask, feather) with its sigma = 10: torchvision's
    GaussianBlur (reflect padding). DetailerForEach.do_detail blurs each segment mask so for
    the paste (`feather`), enhance_detail the noise mask (`noise_mask_feather`). This is not
    utils.feather_mask (sigma = thickness/3, zero padding), which the detailers never call."""
    import torch
    from torchvision.transforms.functional import gaussian_blur

    kernel = feather_kernel_size(feather, *mask.shape[:2])
    if kernel is None:
        return mask.astype(np.float32)
    # torchvision's blur rather than ours: it is the one Impact calls, padding and all.
    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    blurred = gaussian_blur(tensor, [kernel, kernel], [FEATHER_SIGMA, FEATHER_SIGMA])
    return blurred[0, 0].numpy()


def paste_segment(
    image: np.ndarray, refined: np.ndarray, region: CropRegion, mask: np.ndarray
) -> np.ndarray:
    """utils.tensor_paste as do_detail calls it: image[crop] = (1 - m)*image[crop] + m*refined,
    with m the feathered segment mask; float32 (H, W, C) in, a new float32 image out."""
    if refined.shape[:2] != mask.shape[:2]:
        raise ValueError(f"refined crop {refined.shape[:2]} and mask {mask.shape[:2]} differ")
    out = np.array(image, dtype=np.float32)
    x, y = region[0], region[1]
    w = min(out.shape[1], x + refined.shape[1]) - x
    h = min(out.shape[0], y + refined.shape[0]) - y
    if w <= 0 or h <= 0:
        return out
    m = mask[:h, :w, None].astype(np.float32)
    window = out[y : y + h, x : x + w]
    out[y : y + h, x : x + w] = (1 - m) * window + m * refined[:h, :w].astype(np.float32)
    return out


def choose_crop_scale(
    bbox: Bbox,
    crop_width: int,
    crop_height: int,
    *,
    guide_size: float = 512,
    guide_size_for_bbox: bool = True,
    max_size: float = 1024,
    force_inpaint: bool = True,
) -> CropScale | None:
    """core.enhance_detail's scale: guide_size over the bbox's (or the crop's) short side,
    capped so the scaled crop's long side fits max_size; None where it skips the segment
    (without force_inpaint: bbox already >= guide_size on both sides, upscale <= 1, or a zero
    size), else force_inpaint's fallback of upscale 1 at the crop's own size."""
    bbox_w, bbox_h = bbox[2] - bbox[0], bbox[3] - bbox[1]
    if not force_inpaint and bbox_h >= guide_size and bbox_w >= guide_size:
        return None
    short = min(bbox_w, bbox_h) if guide_size_for_bbox else min(crop_width, crop_height)
    upscale = guide_size / short
    new_w, new_h = int(crop_width * upscale), int(crop_height * upscale)
    if new_w > max_size or new_h > max_size:
        upscale *= max_size / max(new_w, new_h)
        new_w, new_h = int(crop_width * upscale), int(crop_height * upscale)
    if upscale <= 1.0 or new_w == 0 or new_h == 0:
        return CropScale(1.0, crop_width, crop_height) if force_inpaint else None
    return CropScale(upscale, new_w, new_h)


def _with_mask(segment: Segment, mask: np.ndarray) -> Segment:
    return Segment(segment.crop_region, segment.bbox, mask, segment.label, segment.confidence)
