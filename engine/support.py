"""Which recipe features this build of the engine can render; the rest are refused clearly."""

from __future__ import annotations

from engine.errors import NotAvailableError
from engine.lora.library import strength_warning
from engine.recipe import Recipe


def unsupported_features(recipe: Recipe) -> list[str]:
    """Human names of the features a recipe switches on that have no stage yet."""
    post = [
        (recipe.upscale.enabled, "Upscale (upscale.enabled)"),
    ]
    diffusion = []
    # An uploaded image skips diffusion: only the post stages apply to it.
    checks = post if recipe.source.kind == "image" else diffusion + post
    return [name for on, name in checks if on]


def check_supported(recipe: Recipe) -> None:
    """Raise NotAvailableError naming every feature the engine cannot render yet."""
    missing = unsupported_features(recipe)
    if missing:
        raise NotAvailableError(
            "This version of the studio cannot render yet: "
            + "; ".join(missing)
            + ". Switch them off (or load the recipe in a newer version)."
        )


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
    return notes
