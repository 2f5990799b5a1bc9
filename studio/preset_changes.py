"""What a recipe change is called on the page: the lines under an applied preset and the
"Sets:" list under the preset dropdown. Plain text; `md` escapes it for Markdown."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from engine.recipe import Recipe
from engine.recipe_json import field_paths, get_path
from studio.bindings import BINDINGS, LORAS, LORAS_LABEL, Binding
from studio.bindings_regions import REGIONS
from studio.bindings_upscale import FINAL_LORAS

if TYPE_CHECKING:
    from studio.presets import AppliedPreset

# -- what a recipe change is called on the page (plain text; `md` escapes it) -------------

# Section titles: the tab that shows the section where there is one (studio/panels/*.TITLE).
SECTION_NAMES = {
    "model": "Model",
    "source": "Source image",
    "redux": "Redux blend",
    "prompt": "Size / LoRA / Prompt",
    "settings": "Settings",
    "latent": "Latent",
    "regions": "Regions",
    "expression": "Expression",
    "refine": "Refine",
    "upscale": "Upscale",
    "color": "Color",
}
LONG_TEXT = 40  # characters: a longer text value is named, never quoted
# LoRA stacks: what one of their slots is called, and the whole stack.
SLOT_NAMES = {LORAS: "LoRA slot", FINAL_LORAS: "Upscale final LoRA slot"}
STACK_NAMES = {LORAS: LORAS_LABEL, FINAL_LORAS: "Upscale final LoRA stack"}


@cache
def _bindings() -> dict[str, Binding]:
    return {b.path: b for b in BINDINGS}


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _humanize(part: str) -> str:
    return part.replace("_", " ")


def field_label(path: str) -> str:
    """The name a person sees for a recipe field: its control's label, made unambiguous
    inside a group ("First-block cache start"), else the field name in words."""
    parts = path.split(".")
    bound = _bindings().get(path)
    if bound is None and parts[-1] == "enabled":  # a switch with no control of its own
        return _group_name(parts[:-1])
    label = bound.label if bound else _humanize(parts[-1]).capitalize()
    if len(parts) < 3 or parts[-1] == "enabled":
        return label
    group = _group_name(parts[:-1])
    return label if label.split()[0].lower() in group.lower() else f"{group} {_lower_first(label)}"


def _group_name(parts: list[str]) -> str:
    """A section's title, or a group's name: the label of its on/off switch where it has one."""
    if len(parts) == 1:
        return SECTION_NAMES.get(parts[0], parts[0])
    switch = _bindings().get(".".join([*parts, "enabled"]))
    return switch.label if switch else _humanize(parts[-1]).capitalize()


def _is_long_text(path: str, value: Any) -> bool:
    bound = _bindings().get(path)
    return isinstance(value, str) and (
        (bound is not None and bound.widget == "textbox") or len(value) > LONG_TEXT
    )


def format_value(path: str, value: Any) -> str:
    """A short value as the page would show it: on/off, numbers without noise, choice labels."""
    bound = _bindings().get(path)
    if bound is not None and bound.widget == "switch":
        return "on" if value == bound.on else "off"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value) or "(none)"
    if value == "":
        return "(none)"
    shown = dict((choice, label) for label, choice in bound.labels) if bound else {}
    return shown.get(value, str(value))


def _strengths(slot: Any) -> str:
    return f"model {slot.strength_model:g}, CLIP {slot.strength_clip:g}"


def slot_text(number: int, slot: Any, name: str = SLOT_NAMES[LORAS]) -> str:
    """One LoRA slot in full: 'LoRA slot 1 x.safetensors (model 0.75, CLIP 0.75, on)'."""
    trigger = f", trigger words {slot.trigger}" if slot.trigger else ""
    state = "on" if slot.enabled else "off"
    return f"{name} {number} {slot.file} ({_strengths(slot)}, {state}{trigger})"


def lora_changes(old: tuple, new: tuple, name: str = SLOT_NAMES[LORAS]) -> list[str]:
    """Each LoRA slot that differs, by slot number."""
    out = []
    for i in range(max(len(old), len(new))):
        a, b = (old[i] if i < len(old) else None), (new[i] if i < len(new) else None)
        if a == b:
            continue
        if b is None:
            out.append(f"{name} {i + 1} {a.file} removed")
        elif a is None or a.file != b.file:
            out.append(slot_text(i + 1, b, name))
        else:
            out.append(f"{name} {i + 1} {b.file}: " + ", ".join(_slot_diffs(a, b)))
    return out


def _slot_diffs(a: Any, b: Any) -> list[str]:
    diffs = [
        f"{name} {getattr(a, key):g} → {getattr(b, key):g}"
        for key, name in (("strength_model", "model"), ("strength_clip", "CLIP"))
        if getattr(a, key) != getattr(b, key)
    ]
    if a.enabled != b.enabled:
        diffs.append("off → on" if b.enabled else "on → off")
    if a.trigger != b.trigger:
        diffs.append("trigger words changed")
    return diffs


def change_text(path: str, old: Any, new: Any) -> list[str]:
    """How one changed field is named: 'Steps 25 → 10', 'Negative prompt set', LoRA slots."""
    if path in SLOT_NAMES:
        return lora_changes(old, new, SLOT_NAMES[path])
    if path == REGIONS:  # prompts, LoRAs and masks of the Regions panel, not one value
        return [f"Regions' prompts, LoRAs or masks ({len(old)} → {len(new)} regions)"]
    label = field_label(path)
    if _is_long_text(path, old) or _is_long_text(path, new):
        return [f"{label} {'set' if not old else 'cleared' if not new else 'replaced'}"]
    return [f"{label} {format_value(path, old)} → {format_value(path, new)}"]


def setting_text(path: str, value: Any) -> list[str]:
    """How one field a preset sets is named, with its value: 'Steps 10'."""
    if path in SLOT_NAMES:
        slots = [slot_text(n, s, SLOT_NAMES[path]) for n, s in enumerate(value, start=1)]
        return slots or [f"{STACK_NAMES[path]} empty"]
    if path == REGIONS:
        return [f"Regions' prompts, LoRAs and masks ({len(value)} regions)"]
    if _is_long_text(path, value):
        return [f"{field_label(path)} ({'its own text' if value else 'empty'})"]
    return [f"{field_label(path)} {format_value(path, value)}"]


def _section(path: str) -> str:
    head = path.split(".")[0]
    return SECTION_NAMES.get(head, head)


def grouped_changes(before: Recipe, after: Recipe) -> dict[str, list[str]]:
    """Every field that differs, named as the page names it, by recipe section."""
    out: dict[str, list[str]] = {}
    for path, _ in field_paths():
        old, new = get_path(before, path), get_path(after, path)
        if old != new:
            out.setdefault(_section(path), []).extend(change_text(path, old, new))
    return out


def changed_fields(before: Recipe, after: Recipe) -> list[str]:
    """Every field that differs, in recipe order (see `grouped_changes`)."""
    return [item for items in grouped_changes(before, after).values() for item in items]


def settings_of(recipe: Recipe, paths: set[str]) -> dict[str, list[str]]:
    """The named fields (`paths`, leaf paths of a partial recipe) with their values."""
    out: dict[str, list[str]] = {}
    for path, _ in field_paths():
        if path in paths:
            out.setdefault(_section(path), []).extend(setting_text(path, get_path(recipe, path)))
    return out


def md(text: str) -> str:
    """Plain text shown literally in Markdown."""
    return re.sub(r"([\\`*_\[\]<>#|~])", r"\\\1", text)


def bullets(groups: Mapping[str, list[str]]) -> list[str]:
    """One Markdown bullet per section: '- **Settings:** Steps 25 → 10, ...'."""
    return [f"- **{md(section)}:** {md(', '.join(items))}" for section, items in groups.items()]


def applied_markdown(label: str, before: Recipe, applied: AppliedPreset) -> str:
    """The message after a preset was applied: every change by section, then the LoRA
    slots it switched on or had to leave off."""
    groups = grouped_changes(before, applied.recipe)
    count = sum(len(items) for items in groups.values())
    lines = bullets(groups)
    lines += [f"- {'' if c.found else '⚠ '}{md(c.applied_text())}" for c in applied.loras]
    if not count:
        head = f"Applied **{md(label)}**: nothing changed, the tabs already hold its values."
    else:
        head = f"Applied **{md(label)}**, {count} change{'s' if count > 1 else ''}:"
    return "\n".join([head, *lines])
