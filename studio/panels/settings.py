"""Tab "Settings" (suite group 3, with group 2's micro-sampler controls): presets, sampler,
scheduler, steps, guidance, true CFG, denoise, seed control, golden seeds, shift and the
first-block cache.

Seed control follows the suite (seed 000 §5.3): "randomize each time" draws a new seed
before every Generate and shows it, "fixed" keeps the box as it is, "use last" takes the
previous run's seed; "New fixed random" draws one and switches to fixed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine.errors import StudioError
from engine.recipe import MAX_SEED, Recipe
from studio.controls import Controls
from studio.golden_seeds import GoldenSeeds
from studio.preset_changes import applied_markdown
from studio.presets import PresetLibrary
from studio.session import Session
from studio.toasts import inform, warn

TITLE = "Settings"
RANDOMIZE, FIXED, LAST = "randomize", "fixed", "last"
SEED_MODES = (("Randomize each time", RANDOMIZE), ("Fixed", FIXED), ("Use last", LAST))
DEFAULT_SEED_MODE = RANDOMIZE  # the suite starts exploring with seed -1
INLINE = ["ps-inline-button"]  # a button beside a field: natural size, on the field's baseline

Updates = dict[gr.Component, Any]


# -- seed control (pure) ----------------------------------------------------------------


def random_seed(rng: random.Random | None = None) -> int:
    """A fresh seed that a browser can hold exactly (0 to 2**53 - 1)."""
    return (rng or random.SystemRandom()).randint(0, MAX_SEED)


def draw_seed(previous: int | None, rng: random.Random | None = None) -> int:
    """A random seed other than `previous`."""
    while True:
        seed = random_seed(rng)
        if seed != previous:
            return seed


def seed_for_run(
    mode: str, current: int, last: int | None, rng: random.Random | None = None
) -> int:
    """The seed a Generate uses: drawn anew, the box's value, or the previous run's seed."""
    if mode == RANDOMIZE:
        return draw_seed(current, rng)
    if mode == LAST and last is not None:
        return last
    return current


# -- layout -----------------------------------------------------------------------------


@dataclass
class SettingsPanel:
    """The Settings tab's components that are not recipe fields."""

    preset: gr.Dropdown
    preset_info: gr.Markdown
    apply: gr.Button
    message: gr.Markdown
    seed_mode: gr.Radio
    new_seed: gr.Button
    golden: gr.Dropdown
    golden_name: gr.Textbox
    golden_note: gr.Textbox
    golden_save: gr.Button
    golden_delete: gr.Button


def build_settings_tab(controls: Controls, recipe: Recipe, presets: PresetLibrary) -> SettingsPanel:
    """Lay out the tab (inside the current Tab context)."""
    preset, preset_info, apply = _preset_row(presets)
    message = gr.Markdown(
        problems_markdown(presets.problems), elem_id="ps-settings-message", elem_classes=["ps-hint"]
    )
    controls.add_in_row(recipe, "settings.sampler", "settings.scheduler")
    controls.add("settings.steps", recipe)
    controls.add_in_row(recipe, "settings.guidance", "settings.cfg")
    controls.add("settings.denoise", recipe)
    seed_mode, new_seed = _seed_rows(controls, recipe)
    golden = _golden_seeds()
    with gr.Group(elem_classes=["ps-micro"]):
        gr.Markdown(
            "**Micro-sampler controls** · windows and shape on the Latent tab",
            elem_classes=["ps-hint"],
        )
        controls.add_in_row(
            recipe, "settings.detail_daemon.enabled", "settings.detail_daemon.amount"
        )
        controls.add_in_row(
            recipe, "settings.lying_sigma.enabled", "settings.lying_sigma.dishonesty"
        )
    controls.add_in_row(recipe, "settings.max_shift", "settings.base_shift")
    with gr.Accordion("First-block cache", open=False, elem_id="ps-fbcache"):
        controls.add("settings.first_block_cache.enabled", recipe)
        controls.add("settings.first_block_cache.threshold", recipe)
        controls.add_in_row(
            recipe, "settings.first_block_cache.start", "settings.first_block_cache.end"
        )
        controls.add("settings.first_block_cache.max_consecutive_hits", recipe)
    return SettingsPanel(preset, preset_info, apply, message, seed_mode, new_seed, *golden)


def _preset_row(presets: PresetLibrary) -> tuple[gr.Dropdown, gr.Markdown, gr.Button]:
    with gr.Column(elem_id="ps-presets", variant="panel"):
        with gr.Row():
            preset = gr.Dropdown(
                label="Preset",
                info="Variants and speed tiers, laid over the current settings in one click.",
                choices=presets.choices(),
                value=None,
                elem_id="ps-preset",
                scale=4,
            )
            apply = gr.Button(
                "Apply preset", elem_id="ps-apply-preset", size="sm", elem_classes=INLINE
            )
        info = gr.Markdown("", elem_id="ps-preset-info", elem_classes=["ps-hint"])
    return preset, info, apply


def _seed_rows(controls: Controls, recipe: Recipe) -> tuple[gr.Radio, gr.Button]:
    with gr.Column(elem_id="ps-seed-group", variant="panel"):
        with gr.Row():
            controls.add("settings.seed", recipe)
            new_seed = gr.Button(
                "New fixed random", size="sm", elem_id="ps-new-seed", elem_classes=INLINE
            )
        seed_mode = gr.Radio(
            choices=list(SEED_MODES),
            value=DEFAULT_SEED_MODE,
            label="Seed control",
            info="Randomize draws a new seed before each Generate; fixed keeps this one; "
            "use last takes the previous run's seed.",
            elem_id="ps-seed-mode",
        )
    return seed_mode, new_seed


def _golden_seeds() -> tuple[gr.Dropdown, gr.Textbox, gr.Textbox, gr.Button, gr.Button]:
    with gr.Accordion("Golden seeds", open=False, elem_id="ps-golden"):
        gr.Markdown(
            "Seeds that reliably frame a face well, shared by everyone using this studio. "
            "Picking one fixes the seed.",
            elem_classes=["ps-hint"],
        )
        with gr.Row():
            golden = gr.Dropdown(
                label="Golden seed", choices=[], value=None, elem_id="ps-golden-pick", scale=4
            )
            delete = gr.Button(
                "Delete", size="sm", variant="stop", elem_id="ps-golden-delete", elem_classes=INLINE
            )
        with gr.Row():
            name = gr.Textbox(label="Name", max_length=80, elem_id="ps-golden-name", scale=2)
            note = gr.Textbox(label="Note", max_length=300, elem_id="ps-golden-note", scale=3)
            save = gr.Button(
                "Save current seed", size="sm", elem_id="ps-golden-save", elem_classes=INLINE
            )
    return golden, name, note, save, delete


def problems_markdown(problems: list[str]) -> str:
    if not problems:
        return ""
    return "**Some presets could not be loaded:**\n" + "\n".join(f"- {p}" for p in problems)


# -- handlers ---------------------------------------------------------------------------


def no_lora_files() -> list[str]:
    """The LoRA file list of a studio without a models folder."""
    return []


@dataclass(eq=False)
class SettingsCallbacks:
    """Presets, seed control and golden seeds; no per-session data lives here."""

    controls: Controls
    panel: SettingsPanel
    state: gr.State
    presets: PresetLibrary
    golden: GoldenSeeds
    # File names in <models>/loras (the engine's list_loras); studio never imports the engine.
    lora_files: Callable[[], list[str]] = no_lora_files

    def describe_preset(self, preset_id: str | None) -> Updates:
        """The preset's description and every field it sets, with missing LoRA files."""
        try:
            text = self.presets.get(preset_id).preview_markdown(self._loras()) if preset_id else ""
        except StudioError as exc:
            text = str(exc)
        return {self.panel.preset_info: text}

    def apply_preset(self, data: Mapping[gr.Component, Any]) -> Updates:
        """Lay the chosen preset over the recipe on the tabs, switch its LoRA slots on where
        the file is in <models>/loras, and say every field that changed."""
        session: Session = data[self.state]
        preset_id = data.get(self.panel.preset)
        if not preset_id:
            return self._say("Pick a preset first.")
        try:
            preset = self.presets.get(preset_id)
            current = self.controls.recipe(session.base, data)
            applied = preset.apply_checked(current, self._loras())
        except StudioError as exc:
            return self._say(f"**Preset not applied.** {exc}")
        session.base = applied.recipe
        updates: Updates = self.controls.updates(applied.recipe)
        updates.update(self._say(applied_markdown(preset.label, current, applied)))
        return updates

    def new_fixed_seed(self, current: int | None) -> Updates:
        """Draw a fresh seed and lock it (the suite's "New Fixed Random")."""
        return {self.controls["settings.seed"]: draw_seed(current), self.panel.seed_mode: FIXED}

    def refresh_golden(self) -> Updates:
        """The golden seeds as they are on disk now (page load)."""
        try:
            return {self.panel.golden: gr.update(choices=self._golden_choices())}
        except StudioError as exc:
            return self._say(str(exc))

    def pick_golden(self, name: str | None) -> Updates:
        if not name:
            return {}
        try:
            entry = self.golden.get(name)
        except StudioError as exc:
            return self._say(str(exc))
        return {
            self.controls["settings.seed"]: entry.seed,
            self.panel.seed_mode: FIXED,
            self.panel.golden_name: entry.name,
            self.panel.golden_note: entry.note,
            **self._say(f"Seed {entry.seed} ({entry.name}) is fixed. {entry.note}".strip()),
        }

    def save_golden(self, name: str, note: str, seed: float | None) -> Updates:
        try:
            entry = self.golden.save(name, seed, note)
            choices = self._golden_choices()
        except StudioError as exc:
            warn(f"Golden seed not saved. {exc}")
            return self._say(f"**Not saved.** {exc}")
        inform(f"Saved golden seed {entry.name} = {entry.seed}.")
        return {
            self.panel.golden: gr.update(choices=choices, value=entry.name),
            **self._say(f"Saved golden seed **{entry.name}** = {entry.seed}."),
        }

    def delete_golden(self, name: str | None) -> Updates:
        if not name:
            return self._say("Pick the golden seed to delete first.")
        try:
            self.golden.delete(name)
            choices = self._golden_choices()
        except StudioError as exc:
            return self._say(f"**Not deleted.** {exc}")
        return {
            self.panel.golden: gr.update(choices=choices, value=None),
            self.panel.golden_name: "",
            self.panel.golden_note: "",
            **self._say(f"Deleted golden seed **{name}**."),
        }

    def _loras(self) -> list[str]:
        """The LoRA files there are now; none when the folder cannot be listed."""
        try:
            return list(self.lora_files())
        except (StudioError, OSError):
            return []

    def _golden_choices(self) -> list[tuple[str, str]]:
        return [(g.label(), g.name) for g in self.golden.list_seeds()]

    def _say(self, text: str) -> Updates:
        return {self.panel.message: text}

    def wire(self, demo: gr.Blocks) -> None:
        """Attach the tab's events; none of them waits behind a render or shows in the API."""
        p, seed = self.panel, self.controls["settings.seed"]
        quick: dict[str, Any] = {"concurrency_limit": None, "api_visibility": "private"}
        everything = [*self.controls.components(), p.message]
        p.preset.input(self.describe_preset, inputs=[p.preset], outputs=[p.preset_info], **quick)
        p.apply.click(
            self.apply_preset,
            inputs={self.state, p.preset, *self.controls.components()},
            outputs=everything,
            **quick,
        )
        p.new_seed.click(self.new_fixed_seed, inputs=[seed], outputs=[seed, p.seed_mode], **quick)
        golden_out = [seed, p.seed_mode, p.golden, p.golden_name, p.golden_note, p.message]
        demo.load(self.refresh_golden, outputs=[p.golden, p.message], **quick)
        p.golden.input(self.pick_golden, inputs=[p.golden], outputs=golden_out, **quick)
        p.golden_save.click(
            self.save_golden,
            inputs=[p.golden_name, p.golden_note, seed],
            outputs=golden_out,
            **quick,
        )
        p.golden_delete.click(self.delete_golden, inputs=[p.golden], outputs=golden_out, **quick)
