"""The Regions accordion's bound fields (seed 001, two characters in one portrait): the switch,
the layout, the masks' gradient and blur, the window of steps where the regional attention
mask acts, isolation and the regions' text length. The regions themselves (`regions.regions`:
prompt, LoRA slots and painted mask of each) have no rows here: one binding cannot show a
tuple of sections, so the panel's `RegionRows` (studio/region_rows.py) read and show them."""

from __future__ import annotations

from studio.binding_row import Binding

REGIONS = "regions.regions"
LAYOUT_LABELS = (
    ("Left | right", "left_right"),
    ("Top | bottom", "top_bottom"),
    ("Painted masks", "painted"),
)

REGIONS_BINDINGS: tuple[Binding, ...] = (
    Binding(
        "regions.enabled",
        "Regions",
        "Two or more characters in one image: each region has its own prompt and LoRAs over "
        "its share of the canvas, and the prompt above stays the base prompt of the whole "
        "picture. Acts from the next Generate.",
    ),
    Binding(
        "regions.layout",
        "Layout",
        "Left | right and Top | bottom split the canvas into equal bands (region 1 on the left "
        "or on top). Painted masks: one mask per region (white, or opaque paint, is the "
        "region).",
        widget="radio",
        labels=LAYOUT_LABELS,
    ),
    Binding(
        "regions.gradient",
        "Gradient",
        "Width in px of the ramp between two bands; 0 is a hard edge (the blur softens it).",
    ),
    Binding(
        "regions.blur",
        "Mask blur",
        "MaskBlur+ amount (a Gaussian of this sigma, in px). Seed 001: 88 at 1216², 48 at "
        "896², 32 at 768².",
    ),
    Binding(
        "regions.start",
        "Start",
        "Fraction of the steps before the regional mask acts; 0 from the first step, where "
        "the layout forms.",
    ),
    Binding(
        "regions.end",
        "End",
        "Fraction of the steps after which every token sees every other again; the region "
        "LoRAs act on their tokens in every step.",
    ),
    Binding(
        "regions.isolate",
        "Isolate regions",
        "Inside the window, a region's image tokens see only their own region: the "
        "characters do not blend.",
    ),
    Binding(
        "regions.text_tokens",
        "Region text length",
        "T5 tokens of each region's prompt; 0 is the model's own (512 dev, 256 schnell). "
        "Shorter is cheaper: each region adds its length to every attention call.",
    ),
)
