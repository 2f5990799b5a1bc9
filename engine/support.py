"""Which recipe features this build of the engine can render; the rest are refused clearly."""

from __future__ import annotations

from engine.errors import NotAvailableError
from engine.recipe import Recipe


def unsupported_features(recipe: Recipe) -> list[str]:
    """Human names of the features a recipe switches on that have no stage yet."""
    s = recipe.settings
    post = [
        (recipe.expression.enabled, "the Expression editor (expression.enabled)"),
        (recipe.refine.enabled, "Refine / detailers (refine.enabled)"),
        (recipe.upscale.enabled, "Upscale (upscale.enabled)"),
    ]
    diffusion = [
        (recipe.redux.enabled, "Redux blend (redux.enabled)"),
        (recipe.latent.enabled, "the Latent second pass (latent.enabled)"),
        (s.detail_daemon.enabled, "Detail Daemon (settings.detail_daemon.enabled)"),
        (s.lying_sigma.enabled, "Lying Sigma (settings.lying_sigma.enabled)"),
        (s.first_block_cache.enabled, "the first-block cache (settings.first_block_cache)"),
        (s.cfg != 1.0, "true CFG (settings.cfg other than 1)"),
        (bool(recipe.prompt.negative_prompt), "a negative prompt (needs true CFG)"),
        (any(slot.enabled for slot in recipe.prompt.loras), "LoRAs (prompt.loras)"),
    ]
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
