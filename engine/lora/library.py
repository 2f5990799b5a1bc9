"""The LoRA library of the PortraitMaster guide (seed 000 §4.3.1/§4.4) and the Turbo LoRA
(seed 004), as data: triggers, recommended strengths, and how to recognise their files.

The files themselves are the person's downloads (civitai / Hugging Face); nothing here is
fetched. A file is matched to an entry by its name, so triggers can be offered for files
whose metadata carries none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from engine.recipe import LoraSlot

# Seed 000 §4.3: "0.05-0.15 subtle cues", used as a starting point where no range is given.
SUBTLE_DEFAULT = 0.1
MAX_TOTAL_STRENGTH = 1.0  # seed 000 §4.3: "Keep the total <= 1.0"


@dataclass(frozen=True)
class LibraryLora:
    """One recommended LoRA: what it is for, its trigger and the strengths the guide gives."""

    name: str
    purpose: str
    trigger: str  # "" when the LoRA needs none
    url: str
    strength_range: tuple[float, float] | None  # None: the guide gives no range
    default_strength: float
    file_hints: tuple[str, ...]  # lower-case letters+digits found in its usual file names


LORA_LIBRARY: tuple[LibraryLora, ...] = (
    LibraryLora(
        name="Flux Skin Texture",
        purpose="Pores and micro-imperfections with a natural look",
        trigger="flux skin texture",
        url="https://civitai.com/models/651043/flux-skin-texture",
        strength_range=(0.06, 0.12),
        default_strength=0.09,
        file_hints=("skintexture",),
    ),
    LibraryLora(
        name="Photorealistic Skin (No Plastic)",
        purpose="Removes plastic sheen; preserves organic micro-contrast",
        trigger="photorealistic skin",
        url="https://civitai.com/models/1157318/photorealistic-skin-no-plastic-flux",
        strength_range=None,
        default_strength=SUBTLE_DEFAULT,
        file_hints=("photorealisticskin", "noplastic"),
    ),
    LibraryLora(
        name="Skin Tone Glamour",
        purpose="Editorial colour balance for soft-lit glamour shots",
        trigger="glamour skin tone",
        url=(
            "https://civitai.com/models/562884/"
            "skin-tone-glamour-photography-style-human-skin-color-xl-f1d-sd15-pony-illu"
        ),
        strength_range=(0.04, 0.08),
        default_strength=0.06,
        file_hints=("skintoneglamour", "glamourskintone", "skintone"),
    ),
    LibraryLora(
        name="Female Face Macro",
        purpose="Macro close-ups with eyelash and reflection fidelity (1024 px or more)",
        trigger="macro female portrait",
        url=(
            "https://civitai.com/models/1019792/"
            "female-face-portraits-detailed-skin-closeup-macro-flux"
        ),
        strength_range=(0.3, 0.5),  # §4.3: "0.3-0.5 ... suitable for macro skin LoRAs"
        default_strength=0.4,
        file_hints=("facemacro", "macrofemale", "femalefaceportrait"),
    ),
    LibraryLora(
        name="Luscious Lips",
        purpose="Lip volume and symmetry for beauty visuals",
        trigger="luscious lips",
        url="https://civitai.com/models/951276/luscious-lips-and-detailed-faces",
        strength_range=None,
        default_strength=SUBTLE_DEFAULT,
        file_hints=("lusciouslips",),
    ),
    LibraryLora(
        name="ESC Makeup",
        purpose="Photo-real makeup accents without over-processing",
        trigger="ESC makeup",
        url="https://civitai.com/models/1060990/esc-makeup",
        strength_range=None,
        default_strength=SUBTLE_DEFAULT,
        file_hints=("escmakeup",),
    ),
)

# Seed 004: FLUX.1-Turbo-Alpha at 0.75 for 8-12 steps; 0.7 is "more stable", 0.8 "less".
TURBO_LORA = LibraryLora(
    name="FLUX.1 Turbo Alpha",
    purpose="8-12 step generation (Euler / simple, 10 steps)",
    trigger="",
    url="https://huggingface.co/alimama-creative/FLUX.1-Turbo-Alpha",
    strength_range=(0.7, 0.8),
    default_strength=0.75,
    file_hints=("turboalpha", "flux1turbo"),
)


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def library_match(file_name: str) -> LibraryLora | None:
    """The library entry whose usual file name `file_name` looks like, if any."""
    stem = _normalise(PurePosixPath(file_name.replace("\\", "/")).stem)
    for entry in (*LORA_LIBRARY, TURBO_LORA):
        if any(hint in stem for hint in entry.file_hints):
            return entry
    return None


def strength_warning(slots: Sequence[LoraSlot]) -> str | None:
    """Seed 000 §4.3: the strengths of the slots that are on should add up to 1.0 at most."""
    total = sum(s.strength_model for s in slots if s.enabled and s.file)
    if total <= MAX_TOTAL_STRENGTH + 1e-9:
        return None
    return (
        f"The LoRA strengths add up to {total:.2f}; the guide keeps the total at "
        f"{MAX_TOTAL_STRENGTH:.1f} or less to avoid texture clashes and saturated attention. "
        "Lower some strengths."
    )
