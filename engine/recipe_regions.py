"""The Regions section of the recipe (seed 001): two or more characters in one image.

The prompt tab's prompt stays the base prompt, read by the whole canvas. Each region adds
its own prompt, its own LoRA slots (the model strength acts on the region's tokens only, the
CLIP strength on the region's own text encoding) and its share of the canvas: a left/right
or top/bottom split softened by a gradient and a blur, or a painted mask per region.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.fields import bounded, choice, file_ref, items, text
from engine.input_limits import DIGEST, MAX_PROMPT_CHARS
from engine.recipe_lora import LoraSlot

MAX_REGIONS = 4
MAX_REGION_LORAS = 4
REGION_LAYOUTS = ("left_right", "top_bottom", "painted")


@dataclass(frozen=True, kw_only=True)
class RegionParams:
    """One region: what is in it and which LoRAs shape it."""

    prompt: str = text("", MAX_PROMPT_CHARS)
    loras: tuple[LoraSlot, ...] = items(tuple, max_items=MAX_REGION_LORAS)
    mask: str = file_ref(DIGEST)  # the painted or uploaded mask (layout "painted")


def _two_regions() -> tuple[RegionParams, ...]:
    return (RegionParams(), RegionParams())


@dataclass(frozen=True, kw_only=True)
class RegionsParams:
    """Regional prompting over the base pass.

    `blur` is ComfyUI_essentials' MaskBlur+ amount (a Gaussian of sigma = amount): seed 001
    used 88 at 1216², 48 at 896², 32 at 768². `start` / `end` bound the fraction of the steps
    in which the regional attention mask acts (the layout forms early; afterwards every token
    sees every other); the region LoRAs act on their tokens in every step. `text_tokens` is
    the T5 length of each region's prompt (0: the model's own, 512 for dev, 256 for schnell;
    shorter is cheaper, every region adds its length to each attention call).
    """

    enabled: bool = False
    layout: str = choice("left_right", REGION_LAYOUTS)
    regions: tuple[RegionParams, ...] = field(
        default_factory=_two_regions, metadata={"max_items": MAX_REGIONS}
    )
    gradient: int = bounded(0, 0, 1024, 1)
    blur: float = bounded(48.0, 0.0, 256.0, 1.0)
    start: float = bounded(0.0, 0.0, 1.0, 0.01)
    end: float = bounded(1.0, 0.0, 1.0, 0.01)
    isolate: bool = True  # inside the window, a region's image tokens see only their region
    text_tokens: int = bounded(0, 0, 512, 64)

    def active(self) -> bool:
        """Regions act when switched on with at least one region."""
        return self.enabled and bool(self.regions)

    def count(self) -> int:
        return len(self.regions) if self.active() else 0
