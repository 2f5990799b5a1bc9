"""The Refine section of the recipe (suite group 7, seed 000 §8; specs §8): one Impact-Pack
detailer per region, the chin crop-and-stitch pass, and the identity guard.

Schema 2 replaced schema 1's single detailer (a `targets` list sharing one set of settings)
by one section per region; `migrate_refine_v1` carries schema-1 recipes over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.fields import bounded, choice, file_ref, text
from engine.input_limits import DIGEST, MAX_PROMPT_CHARS, RELATIVE_NAME

REFINE_REGIONS = ("face", "eyes", "hands", "hair", "skin")
GUIDE_SIZE_FOR = ("bbox", "crop_region")
JAW_MASK_SOURCES = ("landmarks", "text")


@dataclass(frozen=True, kw_only=True)
class DetailerParams:
    """One region's detailer with Impact-Pack FaceDetailer's settings and defaults, except
    denoise: the suite's 0.15 (above 0.40 the region is rebuilt and the likeness goes)."""

    enabled: bool = False
    detector: str = file_ref(RELATIVE_NAME)  # under <models>/ultralytics/; "" = the usual one
    prompt: str = text("", MAX_PROMPT_CHARS)  # added after the main prompt for this region
    denoise: float = bounded(0.15, 0.0, 1.0, 0.01)
    steps: int = bounded(20, 1, 100, 1)
    guidance: float = bounded(1.9, 0.0, 100.0, 0.1)
    bbox_threshold: float = bounded(0.5, 0.0, 1.0, 0.01)
    drop_size: int = bounded(10, 1, 1024, 1)
    crop_factor: float = bounded(3.0, 1.0, 10.0, 0.1)
    dilation: int = bounded(10, -512, 512, 1)
    sam: bool = False
    sam_threshold: float = bounded(0.93, 0.0, 1.0, 0.01)
    feather: int = bounded(5, 0, 100, 1)
    guide_size: int = bounded(512, 64, 2048, 8)
    guide_size_for: str = choice("bbox", GUIDE_SIZE_FOR)
    max_size: int = bounded(1024, 64, 4096, 8)
    noise_mask: bool = True
    noise_mask_feather: int = bounded(20, 0, 100, 1)
    force_inpaint: bool = True
    cycles: int = bounded(1, 1, 10, 1)
    # Impact's inpaint_model: sample with FLUX.1 Fill (given the masked crop) when the models
    # folder has it; it wants a high guidance (~30) and denoise up to 1
    fill_model: bool = False


@dataclass(frozen=True, kw_only=True)
class ChinParams:
    """The chin optimiser: the jaw masked from landmarks (or found by GroundingDINO from a text
    prompt and shaped by SAM, as the suite's GroundingDinoSAMSegment does), cropped,
    rendered at size² and stitched back (InpaintCropAndStitch). Defaults from seed 000
    §8.1: denoise 1 inside the pass, 6 px mask expansion, context extend factor 1.26, a
    1024² render, text threshold 0.30."""

    enabled: bool = False
    mask_source: str = choice("landmarks", JAW_MASK_SOURCES)
    text_prompt: str = text("chin", 200)
    text_threshold: float = bounded(0.3, 0.0, 1.0, 0.01)
    prompt: str = text("", MAX_PROMPT_CHARS)
    denoise: float = bounded(1.0, 0.0, 1.0, 0.01)
    steps: int = bounded(20, 1, 100, 1)
    guidance: float = bounded(1.9, 0.0, 100.0, 0.1)
    size: int = bounded(1024, 256, 2048, 32)
    mask_expand: int = bounded(6, 0, 128, 1)
    context_factor: float = bounded(1.26, 1.0, 3.0, 0.01)
    blend_pixels: int = bounded(32, 0, 128, 1)
    fill_model: bool = False  # render the jaw with FLUX.1 Fill when the models folder has it


@dataclass(frozen=True, kw_only=True)
class IdentityGuardParams:
    """Similarity of each refined face to itself before refining (and to a reference photo
    when one is given), on one cosine scale. Below the threshold (0: the backend's own
    same-person line) the face is flagged, and kept unrefined when `keep_below` is on."""

    enabled: bool = True
    reference: str = file_ref(DIGEST)  # "" = the first identity reference (recipe.identity)
    threshold: float = bounded(0.0, 0.0, 1.0, 0.01)
    keep_below: bool = False


@dataclass(frozen=True, kw_only=True)
class RefineParams:
    """Group 7: per-region detailers, the chin pass and the identity guard. On by default
    with every region off, so nothing runs until a region is switched on."""

    enabled: bool = True
    face: DetailerParams = field(default_factory=DetailerParams)
    eyes: DetailerParams = field(default_factory=DetailerParams)
    hands: DetailerParams = field(default_factory=DetailerParams)
    hair: DetailerParams = field(default_factory=DetailerParams)
    skin: DetailerParams = field(default_factory=DetailerParams)
    chin: ChinParams = field(default_factory=ChinParams)
    identity: IdentityGuardParams = field(default_factory=IdentityGuardParams)

    def region(self, name: str) -> DetailerParams:
        return getattr(self, name)

    def active_regions(self) -> tuple[str, ...]:
        """The regions that will run, in the order they run."""
        if not self.enabled:
            return ()
        return tuple(name for name in REFINE_REGIONS if self.region(name).enabled)


V1_SHARED = (
    "denoise", "steps", "guide_size", "max_size", "bbox_threshold", "sam_threshold",
    "crop_factor", "dilation", "feather",
)  # fmt: skip


def migrate_refine_v1(data: dict) -> dict:
    """Schema 1 -> 2: the single detailer's settings go to each region of its `targets`."""
    refine = data.get("refine")
    if not isinstance(refine, dict):
        return data
    old = dict(refine)
    targets = old.pop("targets", ["face"])
    enabled = old.pop("enabled", False)
    shared = {key: old.pop(key) for key in V1_SHARED if key in old}
    new: dict = dict(old)  # anything else is reported as unknown by the loader
    for target in targets if isinstance(targets, list) else [targets]:
        new[str(target)] = {**shared, "enabled": bool(enabled)}
    return {**data, "refine": new}
