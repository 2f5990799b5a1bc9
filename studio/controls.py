"""The bound controls of a page: components made from the `bindings` table, and the way
back from component values to a Recipe.

Panels ask `Controls` for a component by field path; callbacks ask it to turn component
values into a Recipe (through `set_path`, so every value is validated like JSON input) and
a Recipe back into component values. LoRA slot rows ("prompt.loras.<row>.<field>") map to
the recipe's LoRA stack here too. A field no single component can show (the Regions panel's
tuple of regions) joins as a `FieldGroup`: components that read and show it together.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, Protocol

import gradio as gr

from engine.errors import RecipeError
from engine.fields import bounds_of, choices_of
from engine.recipe import LoraSlot, Recipe
from engine.recipe_json import field_paths, get_path, set_path
from studio.bindings import BINDINGS, LORA_FIELDS, SLOT_BINDINGS, Binding, slot_of, slot_path


@cache
def _fields() -> dict[str, tuple[dataclasses.Field, type]]:
    """Leaf path -> (dataclass field, python type of the default)."""
    defaults = Recipe()
    return {path: (f, type(get_path(defaults, path))) for path, f in field_paths()}


@cache
def _slot_fields() -> dict[str, tuple[dataclasses.Field, type]]:
    defaults = LoraSlot()
    return {f.name: (f, type(getattr(defaults, f.name))) for f in dataclasses.fields(LoraSlot)}


def _field(path: str) -> tuple[dataclasses.Field, type]:
    slot = slot_of(path)
    return _slot_fields()[slot[1]] if slot else _fields()[path]


def value_of(recipe: Recipe, path: str) -> Any:
    """The recipe value a component shows (an empty LoRA row shows a default slot)."""
    slot = slot_of(path)
    if slot is None:
        return get_path(recipe, path)
    row, name = slot
    loras = recipe.prompt.loras
    return getattr(loras[row] if row < len(loras) else LoraSlot(), name)


def binding(path: str) -> Binding:
    """The table row for a field path."""
    slot = slot_of(path)
    rows, key = (SLOT_BINDINGS, slot[1]) if slot else (BINDINGS, path)
    for row in rows:
        if row.path == key:
            return row
    raise KeyError(f"{path} has no binding")


def elem_id(path: str) -> str:
    """A stable DOM id for the component of a field path (used by tests and CSS).

    LoRA slot rows count from 1 as the page does: 'prompt.loras.0.file' -> 'ps-lora-1-file'.
    """
    slot = slot_of(path)
    if slot:
        return f"ps-lora-{slot[0] + 1}-{slot[1].replace('_', '-')}"
    return "ps-" + path.replace(".", "-").replace("_", "-")


def make_component(
    path: str, value: Any, choices: Iterable[Any] | None = None, **layout: Any
) -> gr.Component:
    """Create the component for `path` (inside the current Blocks context).

    `choices` replaces the field's own choices (the LUT list, for example); `layout` passes
    on placement arguments (scale, min_width, container, show_label).
    """
    row = binding(path)
    f, kind = _field(path)
    bounds, options = bounds_of(f), choices_of(f)
    slot = slot_of(path)
    common: dict[str, Any] = {
        "label": row.label.format(n=slot[0] + 1) if slot else row.label,
        "info": row.info or None,
        "elem_id": elem_id(path),
        "value": row.to_component(value),
        **layout,
    }
    if kind is bool or row.widget == "switch":
        return gr.Checkbox(**common)
    if options is not None or choices is not None:
        listed = list(choices) if choices is not None else list(options or ())
        if row.labels:
            shown = dict((v, k) for k, v in row.labels)
            listed = [(shown.get(c, c), c) if isinstance(c, str) else c for c in listed]
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


class FieldGroup(Protocol):
    """Components that together show one recipe field (`path`), e.g. the regions."""

    path: str

    def components(self) -> list[gr.Component]:
        """The components Generate reads and a restored recipe sets."""
        ...

    def read(self, recipe: Recipe, values: Mapping[gr.Component, Any]) -> Recipe:
        """`recipe` with the field read from `values` (unchanged when they lack the group)."""
        ...

    def show(self, recipe: Recipe) -> dict[gr.Component, Any]:
        """Component values that show `recipe`'s field."""
        ...


class Controls:
    """The components of the bound fields of one page, by path, in creation order."""

    def __init__(self) -> None:
        self.by_path: dict[str, gr.Component] = {}
        self.groups: list[FieldGroup] = []

    def add(
        self, path: str, recipe: Recipe, choices: Iterable[Any] | None = None, **layout: Any
    ) -> gr.Component:
        """Create, register and return the component for `path` showing `recipe`'s value."""
        component = make_component(path, value_of(recipe, path), choices, **layout)
        self.by_path[path] = component
        return component

    def add_in_row(self, recipe: Recipe, *paths: str) -> list[gr.Component]:
        """Create and register the components for `paths` side by side in one row."""
        with gr.Row():
            return [self.add(path, recipe) for path in paths]

    def add_group(self, group: FieldGroup) -> None:
        """Register a group of components that read and show one field together."""
        self.groups.append(group)

    def __getitem__(self, path: str) -> gr.Component:
        return self.by_path[path]

    def components(self, prefix: str = "") -> list[gr.Component]:
        """The components whose path starts with `prefix` (all of them by default)."""
        own = [c for p, c in self.by_path.items() if p.startswith(prefix)]
        grouped = [c for g in self.groups if g.path.startswith(prefix) for c in g.components()]
        return own + grouped

    def lora_rows(self) -> int:
        """How many LoRA slot rows the page has."""
        return len({slot[0] for p in self.by_path if (slot := slot_of(p))})

    def lora_row(self, row: int) -> dict[str, gr.Component]:
        """The components of one LoRA slot row, by field name."""
        return {n: self.by_path[p] for n in LORA_FIELDS if (p := slot_path(row, n)) in self.by_path}

    def recipe(self, base: Recipe, values: Mapping[gr.Component, Any], prefix: str = "") -> Recipe:
        """`base` with every bound field under `prefix` set from `values` (a Gradio input dict).

        Raises RecipeError naming the control when a value cannot be used.
        """
        recipe = base
        rows: dict[int, dict[str, Any]] = {}
        for path, component in self.by_path.items():
            if not path.startswith(prefix) or component not in values:
                continue
            if slot := slot_of(path):
                rows.setdefault(slot[0], {})[slot[1]] = values[component]
            else:
                recipe = recipe_with(recipe, path, values[component])
        for group in self.groups:
            if group.path.startswith(prefix):
                recipe = group.read(recipe, values)
        return with_lora_rows(recipe, rows, self.lora_rows()) if rows else recipe

    def updates(self, recipe: Recipe) -> dict[gr.Component, Any]:
        """Component values that show `recipe` (a Gradio output dict)."""
        out = {c: binding(p).to_component(value_of(recipe, p)) for p, c in self.by_path.items()}
        for group in self.groups:
            out.update(group.show(recipe))
        return out


def recipe_with(recipe: Recipe, path: str, value: Any) -> Recipe:
    """`recipe` with one bound field set from a component value (coerced to the field type)."""
    _, kind = _fields()[path]
    if value is None:
        return recipe  # an emptied number box keeps the last good value
    value = binding(path).from_component(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return set_path(recipe, path, value)
    except RecipeError as exc:
        raise RecipeError(f"{binding(path).label}: {exc}") from exc


def with_lora_rows(recipe: Recipe, rows: Mapping[int, Mapping[str, Any]], shown: int) -> Recipe:
    """`recipe` with its LoRA stack read from slot rows (row -> field -> component value).

    Rows without a file are left out; slots beyond the `shown` rows (a recipe with more
    slots than the page has rows) are kept as they were.
    """
    prompt = dataclasses.replace(
        recipe.prompt, loras=slots_from_rows(recipe.prompt.loras, rows, shown)
    )
    return dataclasses.replace(recipe, prompt=prompt)


def slots_from_rows(
    old: tuple[LoraSlot, ...], rows: Mapping[int, Mapping[str, Any]], shown: int
) -> tuple[LoraSlot, ...]:
    """A LoRA stack read from slot rows over the stack `old`, by `with_lora_rows`' rules."""
    slots = [
        _slot_from_row(row, values, old[row] if row < len(old) else LoraSlot())
        for row, values in sorted(rows.items())
        if str(values.get("file") or "").strip()
    ]
    return (*slots, *old[shown:])


def _slot_from_row(row: int, values: Mapping[str, Any], last: LoraSlot) -> LoraSlot:
    slot = LoraSlot()
    for name in LORA_FIELDS:
        value = values.get(name, getattr(last, name))
        if value is None:  # an emptied number box keeps the last good value
            value = getattr(last, name)
        if name in ("file", "trigger"):
            value = str(value).strip()
        elif name.startswith("strength") and isinstance(value, int | float):
            value = float(value)
        try:
            slot = set_path(slot, name, value)
        except RecipeError as exc:
            label = binding(slot_path(row, name)).label.format(n=row + 1)
            raise RecipeError(f"LoRA slot {row + 1} · {label}: {exc}") from exc
    return slot
