"""The Upscale tab's rows of the bindings table (suite groups 8-9, seed 000 §9-§10; seed 003's
tiers; specs §6): the captioner, then Upscale 1 and Upscale final, two Ultimate SD Upscale
passes with the same settings, so their rows are made from one template. Labels stay short
because the page shows them inside each pass's accordion; `preset_changes.field_label` names
them with their pass ("Upscale 1 denoise").

The final pass's LoRA stack (`upscale.final_loras`) has no rows here: its slot rows use the
main stack's rows (`bindings.SLOT_BINDINGS`), laid out by the tab.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.upscale.caption_prompts import EXTRA_OPTIONS, NAME_OPTION
from engine.upscale.passes import PASS_LABELS
from studio.binding_row import Binding

FINAL_LORAS = "upscale.final_loras"
PASS_TITLES = PASS_LABELS  # the engine's names of the two passes
# The extra options the suite ticks (seed 000 §9.2) come first in the list, then the rest.
SUITE_OPTIONS = (NAME_OPTION, "include_camera_angle", "specify_lighting_sources")
OPTION_LABELS = {
    NAME_OPTION: "Refer to the character by name",
    "include_camera_angle": "Include camera angle",
    "specify_lighting_sources": "Specify lighting sources",
    "include_JPEG_artifacts": "Include JPEG artifacts",
    "include_exif": "Include EXIF (camera, aperture, ISO)",
    "include_nsfw": "Include sfw / nsfw",
}
EXTRA_OPTION_CHOICES = (*SUITE_OPTIONS, *(key for key in EXTRA_OPTIONS if key not in SUITE_OPTIONS))


def option_label(key: str) -> str:
    """How an extra option is listed: the suite's wording, else its key in words."""
    return OPTION_LABELS.get(key, key.replace("_", " ").capitalize())


@dataclass(frozen=True)
class ListBinding(Binding):
    """A row for a tuple field shown as a multiselect dropdown: Gradio wants a list."""

    def to_component(self, value: Any) -> Any:
        return list(value)


@dataclass(frozen=True)
class PassNotes:
    """The help texts that differ between Upscale 1 and Upscale final."""

    switch: str
    upscale_by: str
    steps: str
    denoise: str
    detail: str


PASS_NOTES = {
    "first": PassNotes(
        switch="Upscaler ONE: the upscale model, then Flux re-renders the enlarged image tile "
        "by tile at low denoise, keeping the skin.",
        upscale_by="2.0 turns 1024² into 2048² (suite). The model enlarges by its own factor, "
        "then LANCZOS resizes to this one.",
        steps="30 at 2× (suite); 40 for 8×. Each tile runs its share of them.",
        denoise="0.20 faithful – 0.50 creative (suite: 0.25). If it comes out soft, a sharper "
        "model and 0.35 help.",
        detail="Detail Daemon on the tiles; 0 = off.",
    ),
    "final": PassNotes(
        switch="Upscale Final: one more tiled Flux pass at the final resolution, with a LoRA "
        "stack of its own (below). Running both passes doubles memory and time.",
        upscale_by="1.0 re-renders at the size Upscale 1 left; 2.0 (or 4× with a heavier "
        "model) enlarges again.",
        steps="15 at denoise 0.27 (suite); 30 for 4×, 40 for 8×.",
        denoise="0.25 keeps the likeness, 0.35 adds a creative sheen; bump to 0.33 with "
        "stronger LoRAs.",
        detail="Detail Daemon on the tiles: 0.30 (suite); raise to 0.35 for 8×. 0 = off.",
    ),
}
SEAM_FIX_LABELS = (
    ("None", "none"),
    ("Band pass", "band_pass"),
    ("Half tile", "half_tile"),
    ("Half tile + intersections", "half_tile_intersections"),
)
MODE_LABELS = (("Linear", "linear"), ("Chess", "chess"), ("None", "none"))


def _pass_settings(name: str) -> tuple[Binding, ...]:
    """One pass's switch, model, size, prompt and sampling rows."""
    at, notes = f"upscale.{name}.", PASS_NOTES[name]
    return (
        Binding(at + "enabled", PASS_TITLES[name], notes.switch),
        Binding(
            at + "model",
            "Model",
            "A trained upscaler from <models>/upscale_models/: 4xFaceUpsharpDAT balanced and "
            "pore-sharp, 8x_NMKD-Faces for tight crops (more memory), 4xNomos8kSCHAT-L a soft "
            "magazine gloss. None: LANCZOS only.",
        ),
        Binding(at + "upscale_by", "Scale factor", notes.upscale_by),
        Binding(
            at + "prompt",
            "Prompt",
            "Empty uses the caption when the captioner is on, else the main prompt.",
            widget="textbox",
            lines=2,
        ),
        Binding(at + "steps", "Steps", notes.steps),
        Binding(at + "denoise", "Denoise", notes.denoise),
        Binding(
            at + "guidance",
            "Guidance",
            "The tiles' distilled Flux guidance (not CFG: it costs nothing extra); around the "
            "portrait's own, 1.6-2.1.",
            widget="number",
        ),
        Binding(at + "sampler", "Sampler", "Match the base render: euler or dpm++."),
        Binding(at + "scheduler", "Scheduler", "The tiles' sigma curve (suite: simple)."),
        Binding(
            at + "max_shift",
            "Max shift",
            "ModelSamplingFlux for the tiles: 1.15 (suite) hides grid artefacts.",
            widget="number",
        ),
        Binding(at + "detail_amount", "Detail amount", notes.detail),
    )


def _pass_tiles(name: str) -> tuple[Binding, ...]:
    """One pass's tile grid and seam-fix rows."""
    at = f"upscale.{name}."
    return (
        Binding(
            at + "tile_width",
            "Tile width",
            "Keep a multiple of 64 (suite: 1280). On 12 GB GPUs lower tiles to 1024.",
        ),
        Binding(at + "tile_height", "Tile height", "As the width: a multiple of 64."),
        Binding(
            at + "mask_blur",
            "Mask blur",
            "Softens each tile's edge, in px; 64 gives soft seams. Raise mask blur to 64 "
            "before switching seam fix: often that is enough.",
        ),
        Binding(
            at + "tile_padding",
            "Tile padding",
            "Context around each tile, in px: more blends better and costs more.",
        ),
        Binding(
            at + "mode",
            "Redraw order",
            "Linear: row by row. Chess: a checkerboard, one colour of squares first. None: no "
            "redraw, only the seam fix.",
            widget="radio",
            labels=MODE_LABELS,
        ),
        Binding(
            at + "force_uniform_tiles",
            "Uniform tiles",
            "Every tile is sampled at the same size; edge tiles take more context instead of "
            "shrinking.",
        ),
        Binding(
            at + "seam_fix",
            "Seam fix",
            "None: fastest. Band pass: a band along every tile line. Half tile: tiles offset "
            "by half a tile, softer edges. Half tile + intersections: also every corner, no "
            "grid, slight blur.",
            widget="radio",
            labels=SEAM_FIX_LABELS,
        ),
        Binding(
            at + "seam_fix_denoise",
            "Seam fix denoise",
            "0 uses the pass's denoise, as ComfyUI samples seams; above 0 the seams' own.",
        ),
        Binding(at + "seam_fix_width", "Seam fix width", "The band-pass band's width, in px."),
        Binding(
            at + "seam_fix_mask_blur",
            "Seam fix mask blur",
            "Softens the half-tile and intersection masks, in px.",
        ),
        Binding(at + "seam_fix_padding", "Seam fix padding", "Context around each seam, in px."),
    )


CAPTION_BINDINGS: tuple[Binding, ...] = (
    Binding(
        "upscale.caption.enabled",
        "Captioner",
        "JoyCaption Beta One describes the image before Upscale 1; the caption becomes "
        "Upscale 1's prompt when that is empty. Its language model loads on first use.",
    ),
    Binding(
        "upscale.caption.caption_type",
        "Caption type",
        "Descriptive is neutral and token-dense (suite); Straightforward drops mood; the tag "
        "lists suit booru-style prompts.",
    ),
    Binding(
        "upscale.caption.caption_length",
        "Length",
        "A named length or a word count; any lets the model decide.",
    ),
    Binding(
        "upscale.caption.max_new_tokens",
        "Max tokens",
        "Upper limit of the caption, in tokens (512 default).",
    ),
    Binding("upscale.caption.top_p", "Top-p", "Sampling nucleus (0.9 default): lower is literal."),
    Binding(
        "upscale.caption.temperature",
        "Temperature",
        "0.6 default; 0 always takes the likeliest word.",
    ),
    Binding(
        "upscale.caption.user_prompt",
        "User prompt",
        "Replaces the caption type's instruction; the extra options still follow. Paste a "
        "template to steer the prose: Generic Visual Description stays neutral, Generic "
        "Portrait on White uses studio vocabulary.",
        widget="textbox",
        lines=2,
    ),
    ListBinding(
        "upscale.caption.extra_options",
        "Extra options",
        "Sentences added to the instruction. The suite uses the first three: the person's "
        "name (below), the camera angle and the lighting sources, for a richer vocabulary.",
        labels=tuple((option_label(key), key) for key in EXTRA_OPTION_CHOICES),
    ),
    Binding(
        "upscale.caption.name",
        "Name",
        "What the caption calls the person with 'Refer to the character by name'. Put the "
        "LoRA trigger here to anchor identity; empty uses the trigger words of the LoRAs on.",
    ),
    Binding(
        "upscale.caption.seed",
        "Caption seed",
        "The same seed and settings give the same caption.",
        widget="number",
    ),
)

UPSCALE_BINDINGS: tuple[Binding, ...] = (
    Binding(
        "upscale.enabled",
        "Upscale",
        "Enlarges the portrait with Ultimate SD Upscale after Refine. Off shows the image at "
        "the size it was rendered.",
    ),
    *CAPTION_BINDINGS,
    *(row for name in PASS_TITLES for row in (*_pass_settings(name), *_pass_tiles(name))),
)
