"""Tab "Upscale" (suite groups 8-9, seed 000 §9-§10, seed 003; specs §6): the captioner, then
Upscale 1 and Upscale final, two Ultimate SD Upscale passes, the final one with a LoRA stack
of its own and seed 003's quality tiers; the tile grid and a 100 % crop before/after.

A change here re-runs the result on screen in place from the first upscale stage it touches;
a tiled pass takes seconds, so sliders re-run when they are let go.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image, ImageDraw, ImageFont

from engine.errors import RecipeError, StudioError
from engine.recipe import LoraSlot, Recipe
from engine.recipe_upscale import UPSCALE_TIERS, UsduParams
from engine.upscale.usdu_plan import UsduSettings, plan_jobs
from studio.bindings import LORA_FIELDS, slot_path
from studio.bindings_upscale import EXTRA_OPTION_CHOICES, PASS_TITLES
from studio.controls import Controls, make_component, with_lora_rows
from studio.panels.loras import file_choices

TITLE = "Upscale"
PREFIX = "upscale."
NO_MODEL = ("(none: LANCZOS only)", "")
FINAL_LORA_ROWS = 4  # slot rows on the page; a recipe's further slots are kept as they are
REDRAW_COLOUR, SEAM_COLOUR = "#3fa9f5", "#ff9f1c"
CROP_SIDE = 512  # px of the 100 % crop
NO_STATUS = "Upscale models go in <models>/upscale_models/; without one the passes use LANCZOS."
# Rows of each pass's accordion after its switch: (caption, rows of field names).
PASS_ROWS: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("", (("steps", "denoise", "guidance"), ("sampler", "scheduler"))),
    ("", (("max_shift", "detail_amount"),)),
    ("Tiles", (("tile_width", "tile_height"), ("mask_blur", "tile_padding"))),
    ("", (("mode", "force_uniform_tiles"),)),
    ("Seam fix", (("seam_fix",), ("seam_fix_denoise", "seam_fix_width"))),
    ("", (("seam_fix_mask_blur", "seam_fix_padding"),)),
)
# Each final slot row placed as the main stack's rows are (trigger words on a line below).
SLOT_LAYOUT: dict[str, dict[str, Any]] = {
    "enabled": {"scale": 0, "min_width": 70},
    "file": {"scale": 3, "min_width": 180},
    "strength_model": {"scale": 1, "min_width": 90},
    "strength_clip": {"scale": 1, "min_width": 90},
    "trigger": {"show_label": False, "placeholder": "Trigger words (filled when a file is picked)"},
}
CAPTION_ROWS = (
    ("caption_type", "caption_length"),
    ("max_new_tokens", "top_p", "temperature"),
)


# -- the engine's Upscale API, tolerated when missing --------------------------------------


def list_upscalers(engine: Any) -> list[str]:
    """Upscale model files under <models>/upscale_models/ ([] when the engine lists none)."""
    method = getattr(engine, "list_upscalers", None)
    try:
        return list(method()) if method else []
    except (StudioError, OSError):
        return []


def upscale_status(engine: Any) -> str:
    """What the engine says about its upscale models and captioner."""
    method = getattr(engine, "upscale_status", None)
    return str(method()) if method else NO_STATUS


@dataclass
class FinalLoraRows:
    """The final pass's slot rows: the main stack's row widgets over `upscale.final_loras`."""

    rows: list[dict[str, gr.Component]]  # per row: slot field name -> component

    def components(self) -> list[gr.Component]:
        return [component for row in self.rows for component in row.values()]

    def read(self, recipe: Recipe, data: Mapping[Any, Any]) -> Recipe:
        """`recipe` with its final LoRA stack read from the rows in `data`, by the main
        stack's rules (a row without a file is left out). RecipeError names the slot."""
        values = {
            row: {name: data[c] for name, c in fields.items() if c in data}
            for row, fields in enumerate(self.rows)
        }
        if not any(values.values()):
            return recipe
        # The main stack's reader, pointed at the final stack.
        stack = dataclasses.replace(recipe.prompt, loras=recipe.upscale.final_loras)
        try:
            read = with_lora_rows(dataclasses.replace(recipe, prompt=stack), values, len(self.rows))
        except RecipeError as exc:
            raise RecipeError(f"Upscale final · {exc}") from exc
        upscale = dataclasses.replace(recipe.upscale, final_loras=read.prompt.loras)
        return dataclasses.replace(recipe, upscale=upscale)

    def show(self, recipe: Recipe) -> dict[gr.Component, Any]:
        """Component values that show `recipe`'s final LoRA stack."""
        slots = recipe.upscale.final_loras
        return {
            component: getattr(slots[row] if row < len(slots) else LoraSlot(), name)
            for row, fields in enumerate(self.rows)
            for name, component in fields.items()
        }


# -- layout ---------------------------------------------------------------------------------


@dataclass
class UpscalePanel:
    """The tab's components that are not recipe fields."""

    caption: gr.Textbox
    use_caption: gr.Button
    tiers: dict[str, gr.Button]
    final_loras: FinalLoraRows
    tiles: gr.Image
    ab: gr.ImageSlider
    upload: gr.File


def build_upscale_tab(
    controls: Controls, recipe: Recipe, upscalers: list[str], loras: list[str], status: str
) -> UpscalePanel:
    """Lay out the tab (inside the current Tab context); `upscalers` and `loras` are the
    model files the engine found, `status` what it says about them."""
    gr.Markdown(
        "Enlarge the finished portrait: an upscale model, then Flux re-renders it tile by "
        "tile at low denoise. Switch Upscale on; each change re-runs the image on screen from "
        "the first pass it touches.",
        elem_classes=["ps-hint"],
    )
    gr.Markdown(status, elem_classes=["ps-hint"], elem_id="ps-upscale-models")
    controls.add("upscale.enabled", recipe)
    caption, use_caption = _captioner(controls, recipe)
    models = [NO_MODEL, *((name, name) for name in upscalers)]
    with gr.Accordion(PASS_TITLES["first"], open=True, elem_id="ps-upscale-first"):
        _pass(controls, recipe, "first", models)
    with gr.Accordion(PASS_TITLES["final"], open=False, elem_id="ps-upscale-final"):
        controls.add("upscale.final.enabled", recipe)
        tiers = _tier_buttons()
        _pass(controls, recipe, "final", models, switch=False)
        final_loras = _final_loras(recipe, file_choices(loras))
    tiles = gr.Image(label="Tiles", interactive=False, height=320, elem_id="ps-upscale-tiles")
    ab = gr.ImageSlider(
        label="Before / after upscaling (100 % crop)", interactive=False, elem_id="ps-upscale-ab"
    )
    upload = gr.File(
        label="Upscale an uploaded photo", file_types=["image"], file_count="single",
        elem_id="ps-upscale-upload", height=110,
    )  # fmt: skip
    return UpscalePanel(caption, use_caption, tiers, final_loras, tiles, ab, upload)


def _captioner(controls: Controls, recipe: Recipe) -> tuple[gr.Textbox, gr.Button]:
    at = "upscale.caption."
    with gr.Accordion("Captioner", open=False, elem_id="ps-upscale-caption"):
        controls.add(at + "enabled", recipe)
        for row in CAPTION_ROWS:
            controls.add_in_row(recipe, *(at + name for name in row))
        controls.add(at + "user_prompt", recipe)
        controls.add(at + "extra_options", recipe, choices=EXTRA_OPTION_CHOICES, multiselect=True)
        controls.add_in_row(recipe, at + "name", at + "seed")
        caption = gr.Textbox(
            label="Last caption", interactive=False, lines=4, max_lines=12,
            placeholder="The caption of the image on screen shows here after a run with the "
            "captioner on.", elem_id="ps-upscale-caption-text",
        )  # fmt: skip
        use = gr.Button("Use as Upscale 1 prompt", size="sm", elem_id="ps-upscale-use-caption")
    return caption, use


def _pass(
    controls: Controls,
    recipe: Recipe,
    name: str,
    models: list[tuple[str, str]],
    switch: bool = True,
) -> None:
    at = f"upscale.{name}."
    if switch:
        controls.add(at + "enabled", recipe)
    with gr.Row():
        controls.add(at + "model", recipe, choices=models, scale=2)
        controls.add(at + "upscale_by", recipe, scale=1)
    controls.add(at + "prompt", recipe)
    for caption, rows in PASS_ROWS:
        with gr.Group(elem_classes=["ps-refine-group"]):
            if caption:
                gr.Markdown(f"**{caption}**", elem_classes=["ps-hint"])
            for row in rows:
                controls.add_in_row(recipe, *(at + field for field in row))


def _tier_buttons() -> dict[str, gr.Button]:
    tiers = "; ".join(
        f"{tier} {t.denoise:g} / {t.steps} steps / LoRAs {t.lora_strength:g}"
        for tier, t in UPSCALE_TIERS.items()
    )
    text = f"**Quality tiers** (seed 003), denoise / steps / final LoRA strength: {tiers}."
    gr.Markdown(text, elem_classes=["ps-hint"])
    with gr.Row():
        return {
            tier: gr.Button(tier.capitalize(), size="sm", elem_id=f"ps-upscale-tier-{tier}")
            for tier in UPSCALE_TIERS
        }


def _final_loras(recipe: Recipe, files: list[tuple[str, str]]) -> FinalLoraRows:
    gr.Markdown(
        "**Final LoRAs** act only in this pass, at the final resolution: push skin, fabric "
        "or colour LoRAs here and keep the earlier render clean. Keep the total at or below 1.0.",
        elem_classes=["ps-hint"],
    )
    slots = recipe.upscale.final_loras
    rows = []
    for row in range(FINAL_LORA_ROWS):
        slot = slots[row] if row < len(slots) else LoraSlot()
        with gr.Group(elem_id=f"ps-upscale-lora-{row + 1}", elem_classes=["ps-lora-slot"]):
            with gr.Row(equal_height=True):
                made = {
                    name: _slot(row, name, slot, files) for name in LORA_FIELDS if name != "trigger"
                }
            made["trigger"] = _slot(row, "trigger", slot, files)
        rows.append(made)
    return FinalLoraRows(rows)


def _slot(row: int, name: str, slot: LoraSlot, files: list[tuple[str, str]]) -> gr.Component:
    """One field of a final slot row, made from the main stack's binding for it."""
    elem = f"ps-upscale-lora-{row + 1}-{name.replace('_', '-')}"
    choices = files if name == "file" else None
    return make_component(
        slot_path(row, name), getattr(slot, name), choices, elem_id=elem, **SLOT_LAYOUT[name]
    )


# -- what the passes worked on: the tile grid and a 100 % crop before/after ---------------


@dataclass(frozen=True)
class TileBox:
    """One job of a pass on its canvas: `order` from 1 as sampled, redraw tile or seam fix."""

    order: int
    seam_fix: bool
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive)


def tile_boxes(params: UsduParams, size: tuple[int, int]) -> list[TileBox]:
    """Every job of a pass with `params` on a canvas of `size` (its output), in order."""
    shared = {
        f.name: getattr(params, f.name)
        for f in dataclasses.fields(UsduSettings)
        if hasattr(params, f.name)
    }
    settings = UsduSettings(**shared, seam_fix_mode=params.seam_fix)
    return [
        TileBox(
            order, job.pass_name != "redraw", (job.tile.x1, job.tile.y1, job.tile.x2, job.tile.y2)
        )
        for order, job in enumerate(plan_jobs(settings, *size), start=1)
    ]


def draw_tiles(image: Image.Image, boxes: list[TileBox]) -> Image.Image:
    """A copy of `image` with every job outlined (redraw tiles and seam fixes in their own
    colours) and numbered in the order the pass samples them."""
    drawn = image.convert("RGB")
    draw = ImageDraw.Draw(drawn)
    line = max(2, round(min(drawn.size) / 256))
    font = ImageFont.load_default(size=max(12, round(min(drawn.size) / 32)))
    for tile in boxes:
        colour = SEAM_COLOUR if tile.seam_fix else REDRAW_COLOUR
        x1, y1, x2, y2 = tile.box
        inset = line if tile.seam_fix else 0  # seams inside their box, tiles on the grid
        draw.rectangle((x1 + inset, y1 + inset, x2 - 1 - inset, y2 - 1 - inset), None, colour, line)
        # Tiles numbered at their corner, seams in their middle (on the tile lines).
        at = ((x1 + x2) / 2, (y1 + y2) / 2) if tile.seam_fix else (x1 + 3 * line, y1 + 2 * line)
        anchor = "mm" if tile.seam_fix else "la"
        draw.text(at, str(tile.order), colour, font, anchor, stroke_width=2, stroke_fill="black")
    return drawn


def crop_window(
    size: tuple[int, int], centre: tuple[float, float] | None, side: int = CROP_SIDE
) -> tuple[int, int, int, int]:
    """A `side`-px window (smaller on a smaller image) around `centre` (default the middle),
    moved inside the image."""
    width, height = size
    crop_w, crop_h = min(side, width), min(side, height)
    cx, cy = centre or (width / 2, height / 2)
    left = min(max(0, round(cx - crop_w / 2)), width - crop_w)
    top = min(max(0, round(cy - crop_h / 2)), height - crop_h)
    return left, top, left + crop_w, top + crop_h


def largest_face_centre(faces: list[dict], scale: float) -> tuple[float, float] | None:
    """The centre of the largest detected face box, scaled by `scale`; None without one."""
    if not faces:
        return None
    x1, y1, x2, y2 = max(
        (tuple(float(v) for v in face["box"]) for face in faces),
        key=lambda b: (b[2] - b[0]) * (b[3] - b[1]),
    )
    return (x1 + x2) / 2 * scale, (y1 + y2) / 2 * scale
