"""The LoRA stack's rules as the page states them (seed 000 §4.3): the sum of the model
strengths against the guide's 1.0, the trigger words at the front of the prompt, and the
LoRA lines of a run's report. Pure functions of the slots; no Gradio here.

The engine places the trigger words of the slots that are on at the front of the prompt;
`effective_prompt` applies the same rule so the page shows what will be encoded before the
run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from engine.recipe import LoraSlot

MAX_TOTAL = 1.0  # seed 000 §4.3: "Keep the total <= 1.0"


def active(slots: Iterable[LoraSlot]) -> list[LoraSlot]:
    return [s for s in slots if s.enabled and s.file]


def enabled_total(slots: Iterable[LoraSlot]) -> float:
    """The sum of the model strengths of the slots that are on."""
    return sum(s.strength_model for s in active(slots))


def total_markdown(slots: Sequence[LoraSlot]) -> str:
    """The strength line under the stack, with the guide's warning above 1.0."""
    on = active(slots)
    if not on:
        return "No LoRA is on." if slots else ""
    total = enabled_total(on)
    text = f"Model strengths of the {len(on)} LoRA(s) on add up to **{total:.2f}**"
    if total > MAX_TOTAL + 1e-9:
        return (
            f"⚠ {text}: keep the total ≤ {MAX_TOTAL:.1f}. Above it LoRAs start to fight "
            "(texture clashes, burnt contrast); lower some strengths."
        )
    return text + f" (the guide keeps it ≤ {MAX_TOTAL:.1f})."


def slot_triggers(slot: LoraSlot, triggers_of: Callable[[str], list[str]]) -> list[str]:
    """The words a slot puts in front: the typed ones, else the file's own."""
    typed = [w.strip() for w in slot.trigger.split(",") if w.strip()]
    return typed or triggers_of(slot.file)


def effective_prompt(
    prompt: str, slots: Iterable[LoraSlot], triggers_of: Callable[[str], list[str]]
) -> str:
    """The prompt as the engine encodes it: trigger words of the slots that are on first,
    in slot order, each once and only if the prompt does not contain it already."""
    words: list[str] = []
    for slot in active(slots):
        words += slot_triggers(slot, triggers_of)
    lowered = prompt.lower()
    front = [w for w in dict.fromkeys(words) if w.lower() not in lowered]
    return ", ".join([*front, prompt]) if front and prompt else ", ".join(front) or prompt


def effective_markdown(prompt: str, encoded: str) -> str:
    """The line under the prompt box; empty while the triggers add nothing."""
    if encoded == prompt:
        return ""
    return (
        f"**Prompt as encoded** (trigger words of the LoRAs that are on go first): {_md(encoded)}"
    )


def lora_notes(notes: Iterable[str]) -> list[str]:
    """The run-report notes about the LoRA stack (match lines, strength warning, prompt)."""
    return [n for n in notes if "LoRA" in n or n.startswith("Prompt as encoded")]


def report_markdown(notes: Iterable[str]) -> str:
    lines = lora_notes(notes)
    if not lines:
        return ""
    return "**Last run:**\n" + "\n".join(f"- {_md(line)}" for line in lines)


def _md(text: str) -> str:
    """Plain text shown literally in Markdown."""
    return re.sub(r"([\\`*_\[\]<>#|~])", r"\\\1", text)
