"""Settings that are valid but have no effect as combined: said in the report, never silently
dropped."""

from __future__ import annotations

from engine.lora.library import strength_warning
from engine.recipe import Recipe


def usage_notes(recipe: Recipe) -> list[str]:
    """Settings that are valid but have no effect as combined; said, not silently dropped."""
    notes = []
    generates = recipe.source.kind != "image"
    if generates and recipe.prompt.negative_prompt and recipe.settings.cfg == 1.0:
        notes.append(
            "The negative prompt is ignored at CFG 1: raise true CFG above 1 to use it "
            "(it doubles the work)."
        )
    warning = strength_warning(recipe.prompt.loras) if generates else None
    if warning:
        notes.append(warning)
    if recipe.source.kind == "generate" and recipe.settings.denoise < 1.0:
        notes.append("Denoise below 1 applies to img2img only; text-to-image uses 1.")
    return notes + upscale_notes(recipe)


def upscale_notes(recipe: Recipe) -> list[str]:
    """Upscale settings that do nothing as combined."""
    upscale = recipe.upscale
    if not upscale.enabled:
        return []
    if not upscale.active_passes():
        return ["The Upscale tab is on but both passes are off: nothing is upscaled."]
    first, caption = upscale.first, upscale.caption
    if not (caption.enabled and "first" in upscale.active_passes()):
        return []
    if first.mode == "none" and first.seam_fix == "none":
        return ["The captioner runs only when Upscale 1 samples (redraw or seam fix on)."]
    if first.prompt.strip():
        return ["Upscale 1 has its own prompt: the caption is shown but not used as its prompt."]
    return []
