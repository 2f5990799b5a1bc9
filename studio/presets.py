"""Presets: partial recipes in presets/*.json, laid over the current recipe in one click.

A preset file is a partial recipe (the same JSON as a saved recipe, any subset of it)
plus three metadata keys at the top level that are stripped before the overlay:
"label" (required), "description" and "order" (a sort key for the dropdown). Loading
validates the partial recipe over the default recipe, so a broken file is reported by
name and never reaches a render. Pure JSON: no gradio, no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import RecipeError
from engine.recipe import Recipe
from engine.recipe_json import overlay, recipe_from_dict

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
META_KEYS = ("label", "description", "order")


@dataclass(frozen=True)
class Preset:
    """One preset: its id (the file stem), what the dropdown shows, and the partial recipe."""

    id: str
    label: str
    description: str
    order: int
    partial: dict[str, Any]

    def apply(self, recipe: Recipe) -> Recipe:
        """`recipe` with this preset laid over it (lists such as the LoRA stack replace)."""
        return overlay(recipe, self.partial)


@dataclass
class PresetLibrary:
    """Every preset that loaded, and a message for every file that did not."""

    presets: list[Preset] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def get(self, preset_id: str) -> Preset:
        for preset in self.presets:
            if preset.id == preset_id:
                return preset
        raise RecipeError(f"There is no preset {preset_id!r}. Pick one from the list.")

    def choices(self) -> list[tuple[str, str]]:
        """(label, id) pairs for a dropdown, in display order."""
        return [(p.label, p.id) for p in self.presets]


def parse_preset(preset_id: str, data: Any) -> Preset:
    """A Preset from a decoded JSON document; RecipeError says what is wrong."""
    if not isinstance(data, dict):
        raise RecipeError(f"Preset {preset_id!r}: expected a JSON object at the top level.")
    partial = {k: v for k, v in data.items() if k not in META_KEYS}
    label, description, order = data.get("label"), data.get("description", ""), data.get("order")
    if not isinstance(label, str) or not label.strip():
        raise RecipeError(f'Preset {preset_id!r}: needs a non-empty "label" string.')
    if not isinstance(description, str):
        raise RecipeError(f'Preset {preset_id!r}: "description" must be a string.')
    if order is None:
        order = 1000
    if not isinstance(order, int) or isinstance(order, bool):
        raise RecipeError(f'Preset {preset_id!r}: "order" must be an integer.')
    try:
        recipe_from_dict(partial, Recipe())
    except RecipeError as exc:
        raise RecipeError(f"Preset {preset_id!r}: {exc}") from exc
    return Preset(preset_id, label.strip(), description.strip(), order, partial)


def load_preset(path: Path) -> Preset:
    """Read and validate one preset file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecipeError(f"Preset file {path.name} cannot be read: {exc.strerror}.") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"Preset file {path.name} is not valid JSON ({exc}).") from exc
    return parse_preset(path.stem, data)


def load_presets(folder: Path = PRESETS_DIR) -> PresetLibrary:
    """Every *.json preset in `folder`, sorted by (order, label); bad files become problems."""
    library = PresetLibrary()
    if not folder.is_dir():
        return library
    for path in sorted(folder.glob("*.json")):
        try:
            library.presets.append(load_preset(path))
        except RecipeError as exc:
            library.problems.append(str(exc))
    library.presets.sort(key=lambda p: (p.order, p.label.lower()))
    return library
