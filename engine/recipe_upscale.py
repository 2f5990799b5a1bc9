"""The Upscale section of the recipe (suite groups 8-9, seed 000 §9-§10, seed 003; specs §6):
two Ultimate SD Upscale passes — "Upscale 1" after the captioner, "Upscale final" with a LoRA
stack of its own that acts only there — and seed 003's quality tiers.

Schema 3 replaced schema 2's single pass (its fields at the top of `upscale`) by the two
passes; `migrate_upscale_v2` carries schema-2 recipes over into `upscale.first`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from engine.fields import bounded, choice, file_ref, items, text
from engine.input_limits import MAX_PROMPT_CHARS, RELATIVE_NAME
from engine.recipe_lora import MAX_SEED, SAMPLERS, SCHEDULERS, LoraSlot
from engine.upscale.caption_prompts import CAPTION_LENGTHS, CAPTION_TYPES, WORD_COUNT_CHOICES

REDRAW_MODES = ("linear", "chess", "none")
SEAM_FIX_MODES = ("none", "band_pass", "half_tile", "half_tile_intersections")
CAPTION_LENGTH_CHOICES = (*CAPTION_LENGTHS, *(str(n) for n in WORD_COUNT_CHOICES))


@dataclass(frozen=True, kw_only=True)
class UsduParams:
    """One Ultimate SD Upscale pass: the upscale model (then LANCZOS to the target), then a
    tiled low-denoise Flux img2img with the node's tile and seam-fix settings (specs §6),
    sampled with this pass's own steps, sampler, schedule shift and Detail Daemon amount
    (the suite's BasicScheduler / ModelSamplingFlux / Detail Daemon override, seed 000 §10)."""

    enabled: bool = True
    model: str = file_ref(RELATIVE_NAME)  # under <models>/upscale_models/; "" = LANCZOS only
    upscale_by: float = bounded(2.0, 1.0, 4.0, 0.05)
    prompt: str = text("", MAX_PROMPT_CHARS)  # "" = the caption (when on), else the main prompt
    steps: int = bounded(30, 1, 100, 1)
    denoise: float = bounded(0.25, 0.0, 1.0, 0.01)
    guidance: float = bounded(1.9, 0.0, 100.0, 0.1)
    sampler: str = choice("euler", SAMPLERS)
    scheduler: str = choice("simple", SCHEDULERS)
    max_shift: float = bounded(1.15, 0.0, 100.0, 0.01)
    detail_amount: float = bounded(0.0, -1.0, 1.0, 0.01)  # Detail Daemon; 0 = off
    tile_width: int = bounded(1024, 64, 4096, 16)
    tile_height: int = bounded(1024, 64, 4096, 16)
    mask_blur: int = bounded(8, 0, 64, 1)
    tile_padding: int = bounded(32, 0, 512, 8)
    mode: str = choice("linear", REDRAW_MODES)
    seam_fix: str = choice("none", SEAM_FIX_MODES)
    # 0 = the pass's denoise, as ComfyUI's node samples seams; above 0 the seams' own
    # denoise, as the original A1111 script does
    seam_fix_denoise: float = bounded(0.0, 0.0, 1.0, 0.01)
    seam_fix_width: int = bounded(64, 8, 512, 8)
    seam_fix_mask_blur: int = bounded(8, 0, 64, 1)
    seam_fix_padding: int = bounded(16, 0, 512, 8)
    force_uniform_tiles: bool = True


@dataclass(frozen=True, kw_only=True)
class CaptionParams:
    """JoyCaption Beta One before Upscale 1 (seed 000 §9.2): its caption becomes the pass's
    prompt unless the pass has a prompt of its own. The trigger words of the active LoRAs
    are passed along (engine/upscale/caption_prompts.py validates the options)."""

    enabled: bool = False
    caption_type: str = choice("Descriptive", tuple(CAPTION_TYPES))
    caption_length: str = choice("long", CAPTION_LENGTH_CHOICES)
    max_new_tokens: int = bounded(512, 1, 2048, 1)
    top_p: float = bounded(0.9, 0.0, 1.0, 0.01)
    temperature: float = bounded(0.6, 0.0, 2.0, 0.05)
    user_prompt: str = text("", MAX_PROMPT_CHARS)
    extra_options: tuple[str, ...] = items(tuple, max_items=32)
    name: str = text("", 200)  # the person's name for the "refer to the character" option
    seed: int = bounded(0, 0, MAX_SEED, 1)


def _final_pass() -> UsduParams:
    """Seed 000 §10's final pass: 15 steps at denoise 0.27, Detail Daemon 0.30, at the size
    Upscale 1 left (raise upscale_by for 4x)."""
    return UsduParams(enabled=False, upscale_by=1.0, steps=15, denoise=0.27, detail_amount=0.3)


@dataclass(frozen=True, kw_only=True)
class UpscaleParams:
    """Groups 8-9: the captioner, Upscale 1 and Upscale final. Off by default."""

    enabled: bool = False
    caption: CaptionParams = field(default_factory=CaptionParams)
    first: UsduParams = field(default_factory=UsduParams)
    final: UsduParams = field(default_factory=_final_pass)
    final_loras: tuple[LoraSlot, ...] = items(tuple, max_items=16)  # acting in the final pass

    def active_passes(self) -> tuple[str, ...]:
        """ "first" and/or "final", in the order they run."""
        if not self.enabled:
            return ()
        return tuple(name for name in ("first", "final") if getattr(self, name).enabled)


@dataclass(frozen=True)
class UpscaleTier:
    """Seed 003's quality tiers for the final pass: denoise, steps and LoRA strength."""

    denoise: float
    steps: int
    lora_strength: float


UPSCALE_TIERS = {
    "conservative": UpscaleTier(0.15, 8, 0.3),
    "balanced": UpscaleTier(0.3, 12, 0.5),
    "aggressive": UpscaleTier(0.5, 20, 0.8),
}


def apply_tier(upscale: UpscaleParams, tier: str) -> UpscaleParams:
    """The final pass switched on with the tier's denoise and steps, and every final LoRA
    slot at the tier's model and CLIP strength."""
    chosen = UPSCALE_TIERS[tier]
    final = dataclasses.replace(
        upscale.final, enabled=True, denoise=chosen.denoise, steps=chosen.steps
    )
    loras = tuple(
        dataclasses.replace(
            slot, strength_model=chosen.lora_strength, strength_clip=chosen.lora_strength
        )
        for slot in upscale.final_loras
    )
    return dataclasses.replace(upscale, enabled=True, final=final, final_loras=loras)


V2_PASS_FIELDS = tuple(f.name for f in dataclasses.fields(UsduParams))


def migrate_upscale_v2(data: dict) -> dict:
    """Schema 2 -> 3: the single pass's settings move to `upscale.first` (`enabled` stays on
    the section; the pass itself is on)."""
    upscale = data.get("upscale")
    if not isinstance(upscale, dict):
        return data
    old = dict(upscale)
    new: dict = {"enabled": old.pop("enabled", False)}
    first = {key: old.pop(key) for key in list(old) if key in V2_PASS_FIELDS}
    if first.get("seam_fix_denoise") == 1.0:  # schema 2's default, which ComfyUI ignores
        del first["seam_fix_denoise"]
    if first:
        new["first"] = first
    new.update(old)  # anything else is reported as unknown by the loader
    return {**data, "upscale": new}
