"""The Refine tab's rows of the bindings table (suite group 7, seed 000 §8; specs §8).

Every region has the same Impact-Pack detailer settings, so its rows are made from one
template; the labels stay short because the page shows them inside the region's accordion,
and `preset_changes.field_label` names them with their region ("Face detailer denoise").
The identity guard's reference photo is an image digest with an upload box of its own.
"""

from __future__ import annotations

from engine.recipe_refine import REFINE_REGIONS
from studio.binding_row import Binding

REGION_TITLES = {
    "face": "Face detailer",
    "eyes": "Eyes detailer",
    "hands": "Hands detailer",
    "hair": "Hair detailer",
    "skin": "Skin detailer",
}
REGION_NOTES = {
    "face": "each detected face",
    "eyes": "each detected eye",
    "hands": "each detected hand",
    "hair": "the detected hair",
    "skin": "the detected skin",
}

FILL_NOTE = (
    "Renders the pass with FLUX.1 Fill (flux1-fill-dev in diffusion_models/), which sees the "
    "masked crop; it wants guidance around 30 and allows denoise up to 1. Without the file "
    "the base model renders and the report says so."
)


def _region(region: str) -> tuple[Binding, ...]:
    """One region's rows: its switch, the pass, detection, SAM, blending and sizes."""
    at = f"refine.{region}."
    return (
        Binding(
            at + "enabled",
            REGION_TITLES[region],
            f"Re-renders {REGION_NOTES[region]} at a larger size and pastes it back. Each "
            "region on costs one short Flux pass per detection.",
        ),
        Binding(
            at + "detector",
            "Detector",
            "The YOLOv8 model (ultralytics/bbox or segm) that finds the region; empty uses the "
            "usual one for this region.",
        ),
        Binding(
            at + "prompt",
            "Region prompt",
            "Added after the main prompt for this pass only ('detailed iris', 'natural "
            "knuckles'). Empty keeps the main prompt.",
            widget="textbox",
            lines=2,
        ),
        Binding(
            at + "denoise",
            "Denoise",
            "The critical dial: 0.10-0.20 sharpens and keeps the likeness; above 0.40 the "
            "region is rebuilt and the likeness goes.",
        ),
        Binding(at + "steps", "Steps", "20-30 for a finished portrait."),
        Binding(
            at + "guidance",
            "Guidance",
            "The pass's distilled Flux guidance (not CFG: it costs nothing extra); around the "
            "portrait's own value, 1.8-2.0.",
        ),
        Binding(
            at + "bbox_threshold",
            "Box threshold",
            "Keep detections scoring above this (suite: 0.5). Raise it if stray boxes appear.",
        ),
        Binding(at + "drop_size", "Drop size", "Ignore boxes whose side is this many px or less."),
        Binding(
            at + "crop_factor",
            "Crop factor",
            "Context cropped around each box, as a multiple of the box (suite: 2.5-3.0). More "
            "context blends better and costs more.",
        ),
        Binding(
            at + "dilation",
            "Dilation",
            "Grows the box mask by this many px (negative shrinks it) before the pass.",
        ),
        Binding(
            at + "sam",
            "SAM mask",
            "Shapes the mask with Segment Anything inside the box instead of repainting the "
            "whole rectangle.",
        ),
        Binding(
            at + "sam_threshold",
            "SAM threshold",
            "Keep SAM masks scoring at least this (suite: 0.93); none passing keeps the best.",
        ),
        Binding(
            at + "feather",
            "Feather",
            "Softens the paste-back edge, in px (suite: 5-10). Too low shows a seam.",
        ),
        Binding(
            at + "noise_mask",
            "Noise mask",
            "Only the masked pixels are re-noised inside the crop (suite: on).",
        ),
        Binding(
            at + "noise_mask_feather",
            "Noise mask feather",
            "Softens the noise mask (px); above 0 the pass blends differentially.",
        ),
        Binding(
            at + "guide_size",
            "Guide size",
            "The region is enlarged until its box (or crop) is this many px before the pass "
            "(suite: 512).",
        ),
        Binding(
            at + "guide_size_for",
            "Guide size for",
            "What the guide size measures: the detected box or the whole crop region.",
            widget="radio",
            labels=(("Box", "bbox"), ("Crop region", "crop_region")),
        ),
        Binding(
            at + "max_size",
            "Max size",
            "Upper limit of the enlarged crop's longer side, in px (suite: 1024).",
        ),
        Binding(
            at + "force_inpaint",
            "Force inpaint",
            "Refine even regions already larger than the guide size (suite: on).",
        ),
        Binding(
            at + "cycles",
            "Cycles",
            "Runs the pass this many times in a row; each cycle sharpens and drifts a little.",
        ),
        Binding(at + "fill_model", "FLUX.1 Fill", FILL_NOTE),
    )


CHIN_BINDINGS: tuple[Binding, ...] = (
    Binding(
        "refine.chin.enabled",
        "Chin optimiser",
        "Masks the jaw from the face's landmarks, renders it on its own at a large size and "
        "stitches it back (InpaintCropAndStitch). The extra crop doubles the memory used.",
    ),
    Binding(
        "refine.chin.mask_source",
        "Jaw mask from",
        "The face's 68 landmarks (always available), or a text prompt found by GroundingDINO "
        "(grounding-dino/ in the models folder) and shaped by SAM, as in the suite.",
        widget="radio",
        labels=(("Landmarks", "landmarks"), ("Text prompt", "text")),
    ),
    Binding(
        "refine.chin.text_prompt",
        "Find",
        "What GroundingDINO looks for when the jaw mask comes from text ('chin', 'jawline').",
    ),
    Binding(
        "refine.chin.text_threshold",
        "Text threshold",
        "GroundingDINO's box threshold (suite: 0.30); lower finds more.",
    ),
    Binding(
        "refine.chin.prompt",
        "Chin prompt",
        "Added after the main prompt for the chin pass only ('defined jawline').",
        widget="textbox",
        lines=2,
    ),
    Binding(
        "refine.chin.denoise",
        "Denoise",
        "Keep 1.0 inside the chin pass (suite); lower Settings > Denoise instead to keep "
        "the likeness.",
    ),
    Binding("refine.chin.steps", "Steps", "20 as in the suite."),
    Binding(
        "refine.chin.guidance", "Guidance", "The chin pass's distilled Flux guidance (not CFG)."
    ),
    Binding(
        "refine.chin.size",
        "Render size",
        "The cropped jaw is rendered at this size² and scaled back (suite: 1024).",
    ),
    Binding(
        "refine.chin.mask_expand",
        "Mask expand",
        "Grows the jaw mask by this many px, which prevents halos (suite's detail dilate: 6).",
    ),
    Binding(
        "refine.chin.context_factor",
        "Context factor",
        "Context around the jaw mask for a seamless stitch (suite's mask extend factor: 1.26).",
    ),
    Binding(
        "refine.chin.blend_pixels",
        "Blend",
        "Width of the soft edge where the rendered chin meets the image, in px.",
    ),
    Binding("refine.chin.fill_model", "FLUX.1 Fill", FILL_NOTE),
)

IDENTITY_BINDINGS: tuple[Binding, ...] = (
    Binding(
        "refine.identity.enabled",
        "Identity guard",
        "Compares each refined face with itself before refining (and with the reference "
        "photo, if one is given); the figures show under the run report.",
    ),
    Binding(
        "refine.identity.threshold",
        "Threshold",
        "Cosine similarity below which a face is flagged; 0 uses the face backend's own "
        "same-person line.",
    ),
    Binding(
        "refine.identity.keep_below",
        "Revert below threshold",
        "A flagged face is put back as it was before refining instead of only being reported.",
    ),
)

REFINE_BINDINGS: tuple[Binding, ...] = (
    Binding(
        "refine.enabled",
        "Refine",
        "Off shows the image as it came out of the Expression tab. On with every region off "
        "runs nothing.",
    ),
    *(row for region in REFINE_REGIONS for row in _region(region)),
    *CHIN_BINDINGS,
    *IDENTITY_BINDINGS,
)
