"""The LoRA stack on the "Size / LoRA / Prompt" tab (the suite's Power LoRA Loader, seed 000
§4.3): slot rows of file, model and CLIP strength, on/off and trigger words; "toggle all";
the sum of the model strengths against the guide's 1.0; the guide's LoRA library; and the
match report of the last run. The rules behind the strength line, the prompt as encoded
and the report are in `studio.lora_rules`.

Engine methods are looked up with getattr, so an engine without LoRA support leaves an
empty file list instead of breaking the page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from engine.errors import StudioError
from engine.recipe import Recipe
from studio.bindings import LORAS, MAX_LORAS, slot_path
from studio.controls import Controls
from studio.lora_rules import effective_markdown, effective_prompt, total_markdown
from studio.session import LORA_ROWS_SHOWN, Session

NONE_CHOICE = ("(none)", "")
INLINE = ["ps-inline-button"]
SUBTLE = (0.05, 0.15)  # seed 000 §4.3: "subtle stylistic cues", where an entry gives no range

Updates = dict[gr.Component, Any]


# -- the engine's LoRA API, tolerated when missing --------------------------------------------


def list_loras(engine: Any) -> list[str]:
    """LoRA file names in <models>/loras ([] when the engine has none or cannot list)."""
    method = getattr(engine, "list_loras", None)
    try:
        return list(method()) if method else []
    except (StudioError, OSError):
        return []


def lora_triggers(engine: Any, name: str) -> list[str]:
    """Trigger words of a LoRA file (metadata, else the library); [] when unknown."""
    method = getattr(engine, "lora_triggers", None)
    if not name or method is None:
        return []
    try:
        return [str(w) for w in method(name)]
    except (StudioError, OSError):
        return []


@dataclass(frozen=True)
class LibraryEntry:
    """One LoRA of the guide's library as the page shows it."""

    name: str
    purpose: str
    trigger: str
    strength_range: tuple[float, float] | None
    default_strength: float | None

    def range_text(self) -> str:
        if self.strength_range is None:
            lo, hi = SUBTLE
            return f"the guide gives no range; {lo:g}–{hi:g} for subtle cues"
        lo, hi = self.strength_range
        return f"{lo:g}–{hi:g} recommended"

    def describe(self) -> str:
        trigger = f"trigger “{self.trigger}”" if self.trigger else "no trigger word"
        return f"**{self.name}**: {self.purpose}. {trigger.capitalize()}; {self.range_text()}."


def library_entries(engine: Any) -> list[LibraryEntry]:
    """The guide's LoRA library from the engine (empty when it offers none)."""
    method = getattr(engine, "lora_library", None)
    return [_entry(item) for item in (method() if method else ())]


def _entry(item: Mapping[str, Any]) -> LibraryEntry:
    raw = next(
        (item[k] for k in ("strength_range", "recommended_range", "range") if item.get(k)), None
    )
    span = (float(raw[0]), float(raw[1])) if raw else None
    default = item.get("default_strength")
    if default is None and span:
        default = round((span[0] + span[1]) / 2, 2)
    return LibraryEntry(
        name=str(item.get("name", "")),
        purpose=str(item.get("purpose", "")).rstrip("."),
        trigger=str(item.get("trigger", "")),
        strength_range=span,
        default_strength=float(default) if default is not None else None,
    )


def file_choices(files: Iterable[str]) -> list[tuple[str, str]]:
    return [NONE_CHOICE, *((f, f) for f in files)]


def rows_to_show(recipe: Recipe, rows: int) -> int:
    """Slot rows on show for a recipe: the first four, and every row that holds a slot."""
    return min(rows, max(LORA_ROWS_SHOWN, len(recipe.prompt.loras)))


# -- layout ----------------------------------------------------------------------------------


@dataclass
class LoraPanel:
    """The stack's components that are not recipe fields."""

    rows: list[gr.Group]  # one per slot row; rows past `Session.lora_rows` are hidden
    add: gr.Button
    refresh: gr.Button
    toggle_all: gr.Checkbox
    total: gr.Markdown
    library: gr.Dropdown
    library_slot: gr.Dropdown
    library_fill: gr.Button
    library_info: gr.Markdown
    report: gr.Markdown


def build_lora_stack(controls: Controls, recipe: Recipe, engine: Any) -> LoraPanel:
    """Lay out the stack (inside the current Tab context)."""
    choices = file_choices(list_loras(engine))
    shown = rows_to_show(recipe, MAX_LORAS)
    with gr.Group(elem_id="ps-loras", elem_classes=["ps-loras"]):
        gr.Markdown(
            "**LoRA stack** · files from `<models>/loras`. A strength multiplies that LoRA's "
            "change: 0.05–0.15 subtle cues, 0.3–0.5 dominant, above 0.6 it overrides the base "
            "model. The trigger words of the LoRAs that are on go at the front of the prompt.",
            elem_classes=["ps-hint"],
        )
        with gr.Row(equal_height=True):
            toggle_all = gr.Checkbox(
                value=True, label="All on", elem_id="ps-lora-all", scale=0, min_width=110
            )
            refresh = gr.Button(
                "↻ Refresh file list", size="sm", elem_id="ps-lora-refresh", scale=0
            )
            add = gr.Button(
                "+ Add slot",
                size="sm",
                elem_id="ps-lora-add",
                scale=0,
                visible=shown < MAX_LORAS,
            )
        rows = [_slot_row(controls, recipe, row, choices, row < shown) for row in range(MAX_LORAS)]
        total = gr.Markdown(
            total_markdown(recipe.prompt.loras), elem_id="ps-lora-total", elem_classes=["ps-hint"]
        )
    library = _library(engine)
    report = gr.Markdown("", elem_id="ps-lora-report", elem_classes=["ps-report"])
    return LoraPanel(rows, add, refresh, toggle_all, total, *library, report)


def _slot_row(
    controls: Controls, recipe: Recipe, row: int, choices: list[tuple[str, str]], visible: bool
) -> gr.Group:
    css = ["ps-lora-slot"]
    with gr.Group(visible=visible, elem_id=f"ps-lora-{row + 1}", elem_classes=css) as group:
        with gr.Row(equal_height=True):
            controls.add(slot_path(row, "enabled"), recipe, scale=0, min_width=70)
            controls.add(slot_path(row, "file"), recipe, choices, scale=3, min_width=180)
            controls.add(slot_path(row, "strength_model"), recipe, scale=1, min_width=90)
            controls.add(slot_path(row, "strength_clip"), recipe, scale=1, min_width=90)
        controls.add(
            slot_path(row, "trigger"),
            recipe,
            show_label=False,
            placeholder=f"Trigger words of LoRA {row + 1} (filled when a file is picked)",
        )
    return group


def _library(engine: Any) -> tuple[gr.Dropdown, gr.Dropdown, gr.Button, gr.Markdown]:
    entries = library_entries(engine)
    with gr.Accordion("LoRA library (the guide's picks)", open=False, elem_id="ps-lora-library"):
        with gr.Row(equal_height=True):
            library = gr.Dropdown(
                label="Library LoRA",
                info="Fills a slot's trigger words and sets its model strength to the "
                "recommended value. The file itself is yours to download into loras/.",
                choices=[(f"{e.name} · {e.trigger or 'no trigger'}", e.name) for e in entries],
                value=None,
                elem_id="ps-lora-library-pick",
                scale=3,
            )
            slot = gr.Dropdown(
                label="Into slot",
                choices=[str(n) for n in range(1, MAX_LORAS + 1)],
                value="1",
                elem_id="ps-lora-library-slot",
                scale=1,
                min_width=90,
            )
            fill = gr.Button(
                "Fill slot",
                size="sm",
                elem_id="ps-lora-library-fill",
                elem_classes=["ps-inline-button"],
            )
        info = gr.Markdown("", elem_id="ps-lora-library-info", elem_classes=["ps-hint"])
    return library, slot, fill, info


# -- handlers --------------------------------------------------------------------------------


@dataclass(eq=False)
class LoraCallbacks:
    """The stack's events; no per-session data lives here."""

    engine: Any
    controls: Controls
    panel: LoraPanel
    state: gr.State
    prompt: gr.Textbox
    effective: gr.Markdown
    entries: dict[str, LibraryEntry] = field(init=False)

    def __post_init__(self) -> None:
        self.entries = {e.name: e for e in library_entries(self.engine)}

    def row(self, row: int) -> dict[str, gr.Component]:
        return self.controls.lora_row(row)

    def describe(self, data: Mapping[gr.Component, Any]) -> Updates:
        """The strength line and the prompt as encoded, for the values on the page."""
        prompt = str(data.get(self.prompt) or "")
        try:
            slots = self.controls.recipe(Recipe(), data, prefix=LORAS).prompt.loras
        except StudioError as exc:
            return {self.panel.total: f"⚠ {exc}", self.effective: ""}
        encoded = effective_prompt(prompt, slots, lambda name: lora_triggers(self.engine, name))
        return {
            self.panel.total: total_markdown(slots),
            self.effective: effective_markdown(prompt, encoded),
        }

    def pick_file(self, row: int) -> Callable[[str | None], Updates]:
        """A file picked in slot `row` brings its trigger words (editable afterwards)."""

        def handler(name: str | None) -> Updates:
            words = lora_triggers(self.engine, name or "")
            fields = self.row(row)
            return {
                fields["trigger"]: ", ".join(words),
                fields["strength_model"]: gr.update(info=""),  # a library hint no longer applies
            }

        return handler

    def toggle_all(self, on: bool) -> Updates:
        return {self.row(r)["enabled"]: bool(on) for r in range(self.controls.lora_rows())}

    def refresh(self) -> Updates:
        choices = file_choices(list_loras(self.engine))
        return {
            self.row(r)["file"]: gr.update(choices=choices)
            for r in range(self.controls.lora_rows())
        }

    def add_row(self, session: Session) -> Updates:
        session.lora_rows = min(self.controls.lora_rows(), session.lora_rows + 1)
        return self.visibility(session.lora_rows)

    def visibility(self, shown: int) -> Updates:
        """Slot rows 1..`shown` on show, the rest hidden behind "Add slot"."""
        updates: Updates = {g: gr.update(visible=i < shown) for i, g in enumerate(self.panel.rows)}
        updates[self.panel.add] = gr.update(visible=shown < len(self.panel.rows))
        return updates

    def restored(self, session: Session, recipe: Recipe) -> Updates:
        """Row visibility for a restored recipe: every slot it holds is on show."""
        session.lora_rows = rows_to_show(recipe, self.controls.lora_rows())
        return self.visibility(session.lora_rows)

    def describe_library(self, name: str | None) -> Updates:
        entry = self.entries.get(name or "")
        return {self.panel.library_info: entry.describe() if entry else ""}

    def fill_from_library(self, session: Session, name: str | None, slot: str | None) -> Updates:
        """Put a library entry's trigger and recommended strength into a slot."""
        entry = self.entries.get(name or "")
        if entry is None:
            return {self.panel.library_info: "Pick a LoRA from the library first."}
        row = max(0, min(int(slot or 1), self.controls.lora_rows()) - 1)
        fields = self.row(row)
        strength: dict[str, Any] = {"info": f"{entry.name}: {entry.range_text()}"}
        if entry.default_strength is not None:
            strength["value"] = entry.default_strength
        updates: Updates = {
            fields["trigger"]: entry.trigger,
            fields["strength_model"]: gr.update(**strength),
            self.panel.library_info: f"Slot {row + 1}: {entry.describe()} Pick its file "
            "in the slot if you have it.",
        }
        if row >= session.lora_rows:
            session.lora_rows = row + 1
            updates.update(self.visibility(session.lora_rows))
        return updates

    def wire(self) -> None:
        """Attach the stack's events: quick, never behind a render, not in the API."""
        p = self.panel
        quick: dict[str, Any] = {"concurrency_limit": None, "api_visibility": "private"}
        watched = [self.prompt]
        for r in range(self.controls.lora_rows()):
            fields = self.row(r)
            watched += [fields[n] for n in ("enabled", "file", "strength_model", "trigger")]
            fields["file"].input(
                self.pick_file(r),
                inputs=[fields["file"]],
                outputs=[fields["trigger"], fields["strength_model"]],
                **quick,
            )
        gr.on(
            [c.change for c in watched],
            self.describe,
            inputs={self.prompt, *self.controls.components(LORAS)},
            outputs=[p.total, self.effective],
            trigger_mode="always_last",
            show_progress="hidden",
            **quick,
        )
        enabled = [self.row(r)["enabled"] for r in range(self.controls.lora_rows())]
        files = [self.row(r)["file"] for r in range(self.controls.lora_rows())]
        p.toggle_all.input(self.toggle_all, inputs=[p.toggle_all], outputs=enabled, **quick)
        p.refresh.click(self.refresh, outputs=files, **quick)
        p.add.click(self.add_row, inputs=[self.state], outputs=[*p.rows, p.add], **quick)
        p.library.input(
            self.describe_library, inputs=[p.library], outputs=[p.library_info], **quick
        )
        triggers = [self.row(r)["trigger"] for r in range(self.controls.lora_rows())]
        strengths = [self.row(r)["strength_model"] for r in range(self.controls.lora_rows())]
        p.library_fill.click(
            self.fill_from_library,
            inputs=[self.state, p.library, p.library_slot],
            outputs=[*triggers, *strengths, p.library_info, *p.rows, p.add],
            **quick,
        )
