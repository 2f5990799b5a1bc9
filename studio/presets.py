"""Presets: partial recipes in presets/*.json, laid over the current recipe in one click.

A preset file is a partial recipe (the same JSON as a saved recipe, any subset of it)
plus metadata keys at the top level that are stripped before the overlay: "label"
(required), "description", "order" (a sort key for the dropdown) and "lora_sources" (where
to get each LoRA file it names). Loading validates the partial recipe over the default
recipe, so a broken file is reported by name and never reaches a render.

Applying checks the preset's LoRA slots against the files in <models>/loras: a slot that
is on stays on when its file is there and is switched off, with a message saying what to
do, when it is not. Pure JSON and text: no gradio, no torch.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from engine.errors import RecipeError
from engine.recipe import Recipe
from engine.recipe_json import overlay, recipe_from_dict
from studio.preset_changes import bullets, md, settings_of

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
META_KEYS = ("label", "description", "order", "lora_sources")
LORAS_FOLDER = "<models>/loras"


@dataclass(frozen=True)
class LoraCheck:
    """A LoRA slot that a preset switches on, looked up among the files in <models>/loras."""

    slot: int  # counted from 1, as the page shows
    file: str  # as the preset names it
    found: str  # its name in loras/ ("" when the file is not there)
    source: str = ""  # where to get the file (the preset's "lora_sources")

    def missing(self) -> str:
        """What the person does to get the file."""
        source = f" (from {self.source})" if self.source else ""
        return f"Put {self.file}{source} in {LORAS_FOLDER}"

    def applied_text(self) -> str:
        """The line under an applied preset."""
        if not self.found:
            return (
                f"LoRA slot {self.slot} stays off: {self.file} is not in the loras/ folder of "
                f"the models folder. {self.missing()} and apply the preset again."
            )
        where = "" if self.found == self.file else f" as {self.found}"
        return f"LoRA slot {self.slot} is on: {self.file} is in {LORAS_FOLDER}{where}."

    def preview_text(self) -> str:
        """The line under the dropdown, before the preset is applied ("" when found)."""
        if self.found:
            return ""
        return (
            f"{self.file} is not in the loras/ folder of the models folder, so applying leaves "
            f"LoRA slot {self.slot} off. {self.missing()} first."
        )


@dataclass(frozen=True)
class AppliedPreset:
    """A recipe with a preset laid over it, and what became of the preset's LoRA slots."""

    recipe: Recipe
    loras: tuple[LoraCheck, ...] = ()


@dataclass(frozen=True)
class Preset:
    """One preset: its id (the file stem), what the dropdown shows, and the partial recipe."""

    id: str
    label: str
    description: str
    order: int
    partial: dict[str, Any]
    lora_sources: Mapping[str, str] = field(default_factory=dict)

    def apply(self, recipe: Recipe) -> Recipe:
        """`recipe` with this preset laid over it (lists such as the LoRA stack replace)."""
        return overlay(recipe, self.partial)

    def apply_checked(self, recipe: Recipe, lora_files: Iterable[str]) -> AppliedPreset:
        """`apply`, then every LoRA slot of the preset that is on stays on only if its file
        is among `lora_files` (the names in <models>/loras); a missing one is switched off."""
        applied = self.apply(recipe)
        if "loras" not in self.partial.get("prompt", {}):
            return AppliedPreset(applied)
        files = list(lora_files)
        slots, checks = [], []
        for number, slot in enumerate(applied.prompt.loras, start=1):
            if slot.enabled and slot.file:
                found = find_lora(slot.file, files)
                source = self.lora_sources.get(slot.file, "")
                checks.append(LoraCheck(number, slot.file, found, source))
                slot = dataclasses.replace(slot, file=found or slot.file, enabled=bool(found))
            slots.append(slot)
        prompt = dataclasses.replace(applied.prompt, loras=tuple(slots))
        return AppliedPreset(dataclasses.replace(applied, prompt=prompt), tuple(checks))

    def sets(self) -> dict[str, list[str]]:
        """What the preset sets, with its values, by recipe section (for the dropdown)."""
        return settings_of(self.apply(Recipe()), leaf_paths(self.partial))

    def preview_markdown(self, lora_files: Iterable[str]) -> str:
        """The description under the dropdown: the hand-written text, then every field the
        preset sets, then a warning for each LoRA file that is missing."""
        checks = self.apply_checked(Recipe(), lora_files).loras
        lines = bullets(self.sets())
        lines += [f"- ⚠ {md(text)}" for c in checks if (text := c.preview_text())]
        parts = [md(self.description)] if self.description else []
        return "\n\n".join([*parts, "**Sets:**\n" + "\n".join(lines)])


def find_lora(name: str, files: Iterable[str]) -> str:
    """`name` as it is listed in loras/: the same name, else the only file in a subfolder
    with that file name (case aside); "" when there is none."""
    files = list(files)
    if name in files:
        return name
    wanted = PurePosixPath(name).name.lower()
    matches = [f for f in files if PurePosixPath(f).name.lower() == wanted]
    return matches[0] if len(matches) == 1 else ""


def leaf_paths(partial: Mapping[str, Any], prefix: str = "") -> set[str]:
    """The dotted paths a partial recipe names (a list, such as the LoRA stack, is one)."""
    out: set[str] = set()
    for key, value in partial.items():
        path = f"{prefix}.{key}" if prefix else key
        out |= leaf_paths(value, path) if isinstance(value, dict) else {path}
    return out


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
    sources = data.get("lora_sources", {})
    if not isinstance(label, str) or not label.strip():
        raise RecipeError(f'Preset {preset_id!r}: needs a non-empty "label" string.')
    if not isinstance(description, str):
        raise RecipeError(f'Preset {preset_id!r}: "description" must be a string.')
    if order is None:
        order = 1000
    if not isinstance(order, int) or isinstance(order, bool):
        raise RecipeError(f'Preset {preset_id!r}: "order" must be an integer.')
    if not isinstance(sources, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in sources.items()
    ):
        raise RecipeError(f'Preset {preset_id!r}: "lora_sources" must map LoRA file names to text.')
    try:
        recipe_from_dict(partial, Recipe())
    except RecipeError as exc:
        raise RecipeError(f"Preset {preset_id!r}: {exc}") from exc
    return Preset(preset_id, label.strip(), description.strip(), order, partial, sources)


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
