"""The one table between recipe field paths and UI components.

This is the only module that knows both sides: panels ask it for a component by field
path, callbacks ask it to turn component values into a Recipe (through `set_path`, so
every value is validated like JSON input) and a Recipe back into component values.
Ranges, steps and choices come from the recipe's field metadata, never from here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import gradio as gr

from engine.errors import RecipeError
from engine.fields import bounds_of, choices_of
from engine.recipe import Recipe
from engine.recipe_json import field_paths, get_path, set_path


@dataclass(frozen=True)
class Binding:
    """One row of the table: a recipe field, its label and help, and how it is shown.

    `widget` is "" (chosen from the field: slider for a bounded number, dropdown for a
    choice, checkbox for a bool, textbox for a string), or "number", "radio", "textbox".
    """

    path: str
    label: str
    info: str = ""
    widget: str = ""
    lines: int = 1


BINDINGS: tuple[Binding, ...] = (
    # Size / LoRA / Prompt (suite group 2)
    Binding(
        "prompt.prompt",
        "Prompt",
        "CLIP reads about 75 tokens, the rest goes to T5: concrete nouns and photographic "
        "terms first, LoRA trigger words at the very front.",
        widget="textbox",
        lines=4,
    ),
    Binding(
        "prompt.width", "Width", "Pixels. Flux works in multiples of 16; 1024 suits portraits."
    ),
    Binding("prompt.height", "Height", "Keep it equal to the width for square portrait frames."),
    Binding(
        "prompt.resolution",
        "Resolution multiplier",
        "Scales width and height before rendering; 1.0 renders the size as set.",
    ),
    Binding("prompt.batch_size", "Batch", "Images per run, 1 to 4; each one costs GPU memory."),
    # Settings (suite group 3)
    Binding("settings.sampler", "Sampler", "Euler is robust and forgiving for faces."),
    Binding(
        "settings.scheduler",
        "Scheduler",
        "How the noise level falls over the steps. Beta balances sharpness and colour; "
        "Karras decays more smoothly.",
    ),
    Binding("settings.steps", "Steps", "20 to 28 for finished portraits; fewer for previews."),
    Binding(
        "settings.guidance",
        "Guidance (Flux distilled)",
        "Flux dev's distilled guidance, fed to the model as an input: this is not CFG and "
        "costs nothing extra. 1.6 to 2.1 keeps portraits natural.",
    ),
    Binding(
        "settings.seed",
        "Seed",
        "Same recipe and seed give the same image: keep it fixed while you adjust the rest.",
        widget="number",
    ),
    Binding(
        "settings.max_shift",
        "Max shift",
        "ModelSamplingFlux: schedule shift at large sizes (default 1.15; above 1.5 can blur "
        "fine detail).",
        widget="number",
    ),
    Binding(
        "settings.base_shift",
        "Base shift",
        "ModelSamplingFlux: schedule shift at small sizes (default 0.5).",
        widget="number",
    ),
    # Color (suite group 10): pure RGB work, never re-runs diffusion.
    Binding(
        "color.enabled",
        "Colour chain",
        "Off shows the decoded image untouched; changes here never re-run diffusion.",
    ),
    Binding("color.exposure.enabled", "Exposure"),
    Binding(
        "color.exposure.exposure",
        "Exposure",
        "32 units are one stop. Leave at 0 unless the render is clearly under or over.",
    ),
    Binding("color.grain.enabled", "Grain"),
    Binding("color.grain.power", "Grain power", "Strength of the film grain (suite: 0.20)."),
    Binding("color.grain.scale", "Grain scale", "Size of the grain (suite: 0.40)."),
    Binding(
        "color.grain.saturation",
        "Grain saturation",
        "0 gives monochrome grain, 1 fully coloured grain (suite: 0.75).",
    ),
    Binding(
        "color.grain.seed",
        "Grain seed",
        "The grain pattern; the same seed gives the same grain.",
        widget="number",
    ),
    Binding("color.tone.enabled", "Brightness / contrast / saturation"),
    Binding("color.tone.brightness", "Brightness", "1.00 leaves the image as it is."),
    Binding("color.tone.contrast", "Contrast", "Around the image's mean luma (suite: 1.10)."),
    Binding("color.tone.saturation", "Saturation", "0 is greyscale (suite: 0.95)."),
    Binding("color.lut.enabled", "LUT"),
    Binding("color.lut.file", "LUT file", "A .cube film look from the LUT folders."),
    Binding("color.lut.strength", "LUT strength", "Percent of the LUT blended in (suite: 50)."),
    Binding(
        "color.lut.color_space",
        "LUT colour space",
        "log applies the LUT to gamma-encoded values (x^(1/2.2)); linear as they are.",
        widget="radio",
    ),
)

PATHS: tuple[str, ...] = tuple(b.path for b in BINDINGS)


@cache
def _fields() -> dict[str, tuple[dataclasses.Field, type]]:
    """Leaf path -> (dataclass field, python type of the default)."""
    defaults = Recipe()
    return {path: (f, type(get_path(defaults, path))) for path, f in field_paths()}


def binding(path: str) -> Binding:
    """The table row for a field path."""
    for row in BINDINGS:
        if row.path == path:
            return row
    raise KeyError(f"{path} has no binding")


def elem_id(path: str) -> str:
    """A stable DOM id for the component of a field path (used by tests and CSS)."""
    return "ps-" + path.replace(".", "-").replace("_", "-")


def make_component(path: str, value: Any, choices: Iterable[Any] | None = None) -> gr.Component:
    """Create the component for `path` (inside the current Blocks context).

    `choices` replaces the field's own choices (the LUT list, for example).
    """
    row = binding(path)
    f, kind = _fields()[path]
    bounds, options = bounds_of(f), choices_of(f)
    common: dict[str, Any] = {
        "label": row.label,
        "info": row.info or None,
        "elem_id": elem_id(path),
        "value": value,
    }
    if kind is bool:
        return gr.Checkbox(**common)
    if options is not None or choices is not None:
        listed = list(choices) if choices is not None else list(options or ())
        if row.widget == "radio":
            return gr.Radio(choices=listed, **common)
        return gr.Dropdown(choices=listed, allow_custom_value=choices is not None, **common)
    if bounds is not None:
        precision = 0 if kind is int else _decimals(bounds.step)
        if row.widget == "number":
            return gr.Number(
                minimum=bounds.lo,
                maximum=bounds.hi,
                step=bounds.step or 1,
                precision=precision,
                **common,
            )
        return gr.Slider(
            minimum=bounds.lo,
            maximum=bounds.hi,
            step=bounds.step,
            precision=precision,
            **common,
        )
    return gr.Textbox(lines=row.lines, max_lines=max(row.lines, 12), **common)


def _decimals(step: float | None) -> int | None:
    if not step or step >= 1:
        return None if not step else 0
    return max(0, math.ceil(-math.log10(step) - 1e-9))


class Controls:
    """The components of the bound fields of one page, by path, in creation order."""

    def __init__(self) -> None:
        self.by_path: dict[str, gr.Component] = {}

    def add(self, path: str, recipe: Recipe, choices: Iterable[Any] | None = None) -> gr.Component:
        """Create, register and return the component for `path` showing `recipe`'s value."""
        component = make_component(path, get_path(recipe, path), choices)
        self.by_path[path] = component
        return component

    def __getitem__(self, path: str) -> gr.Component:
        return self.by_path[path]

    def components(self, prefix: str = "") -> list[gr.Component]:
        """The components whose path starts with `prefix` (all of them by default)."""
        return [c for p, c in self.by_path.items() if p.startswith(prefix)]

    def recipe(self, base: Recipe, values: Mapping[gr.Component, Any], prefix: str = "") -> Recipe:
        """`base` with every bound field under `prefix` set from `values` (a Gradio input dict).

        Raises RecipeError naming the control when a value cannot be used.
        """
        recipe = base
        for path, component in self.by_path.items():
            if path.startswith(prefix) and component in values:
                recipe = recipe_with(recipe, path, values[component])
        return recipe

    def updates(self, recipe: Recipe) -> dict[gr.Component, Any]:
        """Component values that show `recipe` (a Gradio output dict)."""
        return {c: get_path(recipe, p) for p, c in self.by_path.items()}


def recipe_with(recipe: Recipe, path: str, value: Any) -> Recipe:
    """`recipe` with one bound field set from a component value (coerced to the field type)."""
    _, kind = _fields()[path]
    if value is None:
        return recipe  # an emptied number box keeps the last good value
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return set_path(recipe, path, value)
    except RecipeError as exc:
        raise RecipeError(f"{binding(path).label}: {exc}") from exc
