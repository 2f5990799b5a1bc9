"""The identity guard: each refined face compared with itself before refining (and with an
identity reference photo), on the encoder's cosine scale. A face below the threshold is
flagged in the report and, when asked, kept as it was."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import InputError
from engine.faces.boxes import FaceBox
from engine.faces.identity import IdentityEncoder, similarity
from engine.recipe_refine import IdentityGuardParams

GUARDED_REGIONS = ("face", "skin")  # the detailers that re-render a whole face


@dataclass(frozen=True)
class IdentityCheck:
    """One face's figures; `before` None when the encoder could not measure the face."""

    label: str
    before: float | None
    reference: float | None
    threshold: float

    @property
    def below(self) -> bool:
        return self.before is not None and self.before < self.threshold

    def describe(self) -> str:
        if self.before is None:
            return f"{self.label}: not measured (no face found inside the box)"
        text = f"{self.label} {self.before:.3f} vs before"
        if self.reference is not None:
            text += f", {self.reference:.3f} vs reference"
        return text + (" — BELOW the threshold" if self.below else "")


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def check_face(
    encoder: IdentityEncoder,
    params: IdentityGuardParams,
    label: str,
    box: FaceBox,
    before: np.ndarray,
    after: np.ndarray,
    reference: np.ndarray | None,
) -> IdentityCheck:
    """Compare the face in `box` before and after refining (float images in [0, 1])."""
    threshold = params.threshold or encoder.same_person
    try:
        refined = encoder.embed(to_uint8(after), box)
        kept = similarity(encoder.embed(to_uint8(before), box), refined)
    except InputError:
        return IdentityCheck(label, None, None, threshold)
    to_reference = similarity(reference, refined) if reference is not None else None
    return IdentityCheck(label, kept, to_reference, threshold)


def guard_note(encoder: IdentityEncoder, checks: list[IdentityCheck]) -> str:
    """One report line, e.g. 'Identity (dlib 128-d, same person >= 0.918): face 1 0.991…'."""
    line = "; ".join(check.describe() for check in checks)
    return f"Identity ({encoder.label}, same person ≥ {checks[0].threshold:.3f}): {line}"
