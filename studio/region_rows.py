"""The regions of the Regions accordion (`regions.regions`): how many there are, and per region
its prompt, its LoRA rows (the main stack's row widgets) and its painted mask's digest.

One binding cannot show a tuple of sections, so `RegionRows` is a `FieldGroup` of the page's
`Controls`: Generate reads it, a restored recipe or an applied preset sets it, like any bound
field. The paint box of each region is not part of it (Generate never uploads a picture):
its handler stores the picture and puts the digest in the region's hidden box.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from engine.errors import RecipeError
from engine.recipe import LoraSlot, Recipe
from engine.recipe_json import set_path
from engine.recipe_regions import MAX_REGIONS, RegionParams
from studio.bindings import LORA_FIELDS, slot_path
from studio.bindings_regions import REGIONS
from studio.controls import make_component, slots_from_rows

LORA_ROWS = 2  # LoRA rows per region on the page; a recipe's further slots are kept
# A new region LoRA: seed 001's per-branch strengths (model 0.70, CLIP 0.90).
REGION_SLOT = LoraSlot(strength_model=0.7, strength_clip=0.9)
REGION_TITLES = ("Region 1 — left / top", "Region 2 — right / bottom", "Region 3", "Region 4")
PROMPT_INFO = (
    "What is in this region (a character's trigger word first). The LoRAs' trigger words go "
    "in front of it, as on the main stack."
)
MASK_INFO = "white is the region (paint, or upload a mask)"
CANVAS_SIZE = (512, 512)  # the blank paint canvas; a mask is resized to the render size
SLOT_LAYOUT: dict[str, dict[str, Any]] = {
    "enabled": {"scale": 0, "min_width": 70},
    "file": {"scale": 3, "min_width": 180},
    "strength_model": {"scale": 1, "min_width": 90},
    "strength_clip": {"scale": 1, "min_width": 90},
}
ROW_FIELDS = tuple(name for name in LORA_FIELDS if name in SLOT_LAYOUT)  # no trigger box


@dataclass
class RegionRow:
    """One region's components."""

    group: gr.Group
    prompt: gr.Textbox
    loras: list[dict[str, gr.Component]]  # per LoRA row: slot field name -> component
    mask: gr.ImageEditor  # the paint box (layout "painted"); not read by Generate
    digest: gr.Textbox  # hidden: the stored mask's digest

    def components(self) -> list[gr.Component]:
        return [self.prompt, *(c for row in self.loras for c in row.values()), self.digest]


@dataclass
class RegionRows:
    """The regions as a `FieldGroup` of `regions.regions`: `count` regions on show."""

    count: gr.Slider
    regions: list[RegionRow]
    path: str = REGIONS

    def components(self) -> list[gr.Component]:
        return [self.count, *(c for region in self.regions for c in region.components())]

    def read(self, recipe: Recipe, values: Mapping[gr.Component, Any]) -> Recipe:
        """`recipe` with its regions read from `values`: the first `count` rows (a region's
        LoRA row without a file is left out). RecipeError names the region and the field."""
        if self.count not in values:
            return recipe
        old = recipe.regions.regions
        count = int(values[self.count] or len(old) or 1)
        regions = tuple(
            _read_region(n, row, values, old[n - 1] if n <= len(old) else RegionParams())
            for n, row in enumerate(self.regions[:count], start=1)
        )
        section = dataclasses.replace(recipe.regions, regions=regions)
        return dataclasses.replace(recipe, regions=section)

    def show(self, recipe: Recipe) -> dict[gr.Component, Any]:
        """Component values that show `recipe`'s regions (rows past them empty)."""
        regions = recipe.regions.regions
        out: dict[gr.Component, Any] = {self.count: shown_count(len(regions))}
        for n, row in enumerate(self.regions):
            region = regions[n] if n < len(regions) else RegionParams()
            out[row.prompt] = region.prompt
            out[row.digest] = region.mask
            for r, fields in enumerate(row.loras):
                slot = region.loras[r] if r < len(region.loras) else REGION_SLOT
                out.update({c: getattr(slot, name) for name, c in fields.items()})
        return out


def blank_canvas() -> Image.Image:
    """The paint box of a region without a mask: black, nothing painted."""
    return Image.new("RGB", CANVAS_SIZE, (0, 0, 0))


def shown_count(regions: int) -> int:
    """The count control's value for a recipe with `regions` regions (1 to 4)."""
    return max(1, min(MAX_REGIONS, regions))


def _read_region(
    number: int, row: RegionRow, values: Mapping[gr.Component, Any], last: RegionParams
) -> RegionParams:
    rows = {
        r: {name: values[c] for name, c in fields.items() if c in values}
        for r, fields in enumerate(row.loras)
    }
    prompt = values.get(row.prompt)
    digest = values.get(row.digest)
    try:
        region = set_path(last, "prompt", last.prompt if prompt is None else str(prompt))
        region = set_path(region, "mask", last.mask if digest is None else str(digest).strip())
        loras = slots_from_rows(last.loras, rows, len(row.loras))
    except RecipeError as exc:
        raise RecipeError(f"Region {number} · {exc}") from exc
    return dataclasses.replace(region, loras=loras)


# -- layout ------------------------------------------------------------------------------------


def build_region_rows(
    recipe: Recipe, files: list[tuple[str, str]], painted: bool
) -> list[RegionRow]:
    """Every region's group (those past the recipe's regions hidden); `files` are the LoRA
    file choices, `painted` shows the paint boxes."""
    regions = recipe.regions.regions
    shown = shown_count(len(regions))
    return [
        _region(n, regions[n] if n < len(regions) else RegionParams(), files, n < shown, painted)
        for n in range(MAX_REGIONS)
    ]


def _region(
    index: int, region: RegionParams, files: list[tuple[str, str]], visible: bool, painted: bool
) -> RegionRow:
    n = index + 1
    with gr.Group(visible=visible, elem_id=f"ps-region-{n}", elem_classes=["ps-region"]) as group:
        gr.Markdown(f"**{REGION_TITLES[index]}**", elem_classes=["ps-hint"])
        prompt = gr.Textbox(
            value=region.prompt, label=f"Region {n} prompt", info=PROMPT_INFO, lines=2,
            max_lines=8, elem_id=f"ps-region-{n}-prompt",
        )  # fmt: skip
        loras = [_lora_row(n, r, region, files) for r in range(LORA_ROWS)]
        # A black canvas under a white brush: the picture is the mask as the engine reads it
        # (luminance); on Gradio's own blank canvas (opaque white) white paint would vanish.
        mask = gr.ImageEditor(
            value=blank_canvas(), label=f"Region {n} mask: {MASK_INFO}", type="filepath",
            format="png", image_mode="RGBA", sources=("upload", "clipboard"), layers=False,
            transforms=(), height=260, canvas_size=CANVAS_SIZE, visible=painted,
            brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff", color_mode="fixed"),
            elem_id=f"ps-region-{n}-mask",
        )  # fmt: skip
        digest = gr.Textbox(
            value=region.mask, visible=False, label=f"Region {n} mask digest",
            elem_id=f"ps-region-{n}-mask-digest",
        )  # fmt: skip
    return RegionRow(group, prompt, loras, mask, digest)


def _lora_row(
    region_number: int, row: int, region: RegionParams, files: list[tuple[str, str]]
) -> dict[str, gr.Component]:
    """One LoRA row of a region: the main stack's row widgets, seed 001's strengths."""
    slot = region.loras[row] if row < len(region.loras) else REGION_SLOT
    at = f"ps-region-{region_number}-lora-{row + 1}"
    with gr.Row(equal_height=True, elem_id=at, elem_classes=["ps-lora-slot"]):
        return {
            name: make_component(
                slot_path(row, name),
                getattr(slot, name),
                files if name == "file" else None,
                elem_id=f"{at}-{name.replace('_', '-')}",
                **SLOT_LAYOUT[name],
            )  # fmt: skip
            for name in ROW_FIELDS
        }
