"""Render size: width/height times the resolution multiplier, rounded to Flux's grid of 16."""

from __future__ import annotations

from engine.recipe import PromptParams

GRID = 16


def round_to_grid(value: float, grid: int = GRID) -> int:
    """Nearest multiple of `grid` (at least one grid cell)."""
    return max(grid, int(round(value / grid)) * grid)


def render_size(prompt: PromptParams) -> tuple[int, int]:
    """The (width, height) actually rendered."""
    return (
        round_to_grid(prompt.width * prompt.resolution),
        round_to_grid(prompt.height * prompt.resolution),
    )


def size_notes(prompt: PromptParams) -> list[str]:
    """Say so when the requested size was scaled or rounded."""
    width, height = render_size(prompt)
    asked_w, asked_h = prompt.width * prompt.resolution, prompt.height * prompt.resolution
    if (width, height) == (asked_w, asked_h):
        return []
    asked = f"{asked_w:g}×{asked_h:g}"
    return [f"Size {asked} rounded to {width}×{height}: Flux works on multiples of {GRID} px."]
