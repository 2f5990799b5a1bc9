"""Where the chin pass's jaw mask comes from: dlib's 68 landmarks (always there), or with
mask_source "text" the suite's GroundingDinoSAMSegment (seed 000 §8.1): GroundingDINO's
boxes for the text prompt, the best one near each face, shaped by SAM when the models folder
has a SAM file (else the box itself). Without GroundingDINO, or when nothing matches near a
face, that face's jaw comes from the landmarks and the report says so."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from engine.faces.boxes import FaceBox
from engine.faces.landmarks import region_mask
from engine.recipe_refine import ChinParams

# A text box belongs to a face when its centre lies in the face box grown by this share of
# its size on each side: the chin sits on the face box's lower edge, often just below it.
FACE_REACH = 0.25
Note = Callable[[str], None]


def box_near_face(face: FaceBox, boxes: list[FaceBox]) -> FaceBox | None:
    """The highest-scoring box whose centre is within the face box grown by FACE_REACH."""
    grow_x, grow_y = face.width * FACE_REACH, face.height * FACE_REACH
    for box in sorted(boxes, key=lambda b: b.score, reverse=True):
        cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
        if (
            face.x1 - grow_x <= cx <= face.x2 + grow_x
            and face.y1 - grow_y <= cy <= face.y2 + grow_y
        ):
            return box
    return None


def box_mask(box: FaceBox, height: int, width: int) -> np.ndarray:
    """The box as a bool (H, W) mask (pixels whose centres it covers)."""
    mask = np.zeros((height, width), dtype=bool)
    x1, y1 = max(0, round(box.x1)), max(0, round(box.y1))
    mask[y1 : max(y1, round(box.y2)), x1 : max(x1, round(box.x2))] = True
    return mask


def sam_box_mask(sam, rgb: np.ndarray, box: FaceBox) -> np.ndarray:
    """SAM's best-scoring mask for the box, kept inside the box. (The node asks SAM for its
    single-mask output; our segmenter returns the three multimask outputs, as the detailers
    use them, and the best of those is taken.)"""
    ((masks, scores),) = sam.segment(rgb, [(box.x1, box.y1, box.x2, box.y2)])
    return masks[int(np.argmax(scores))] & box_mask(box, *rgb.shape[:2])


class JawMasks:
    """The jaw mask of each face of one image, from the chin settings' source."""

    def __init__(self, models, chin: ChinParams, note: Note) -> None:
        self.models, self.chin, self.note = models, chin, note
        self.detector = models.grounding() if chin.mask_source == "text" else None
        if chin.mask_source == "text" and self.detector is None:
            note(
                "Chin pass: no GroundingDINO in the models folder's grounding-dino/ (e.g. "
                "groundingdino_swint_ogc.pth with bert-base-uncased/); the jaw is masked from "
                "the face's landmarks."
            )

    def for_image(self, rgb: np.ndarray, faces: list[FaceBox]) -> list[torch.Tensor]:
        """One float (H, W) mask per face, in the order of `faces`."""
        height, width = rgb.shape[:2]
        boxes = None
        if self.detector is not None:
            boxes = self.detector.detect(rgb, self.chin.text_prompt, self.chin.text_threshold)
        masks = []
        for number, face in enumerate(faces, 1):
            found = box_near_face(face, boxes) if boxes is not None else None
            if boxes is not None and found is None:
                self.note(
                    f"Chin pass: GroundingDINO found no {self.chin.text_prompt!r} near face "
                    f"{number}; its jaw is masked from the landmarks."
                )
            mask = self._text_mask(rgb, found) if found is not None else None
            if mask is None:
                points = self.models.landmarks().predict(rgb, face)
                mask = region_mask(points, "jaw", height, width)
            masks.append(torch.from_numpy(mask.astype(np.float32)))
        return masks

    def _text_mask(self, rgb: np.ndarray, box: FaceBox) -> np.ndarray:
        sam = self.models.sam()
        return box_mask(box, *rgb.shape[:2]) if sam is None else sam_box_mask(sam, rgb, box)
