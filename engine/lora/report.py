"""What a LoRA file did: layers placed per kind and model, and every family not applied."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from engine.lora.formats import ConvertedLora

SHOWN_KEYS = 20  # unmatched names in a message


@dataclass(frozen=True)
class LoraMatch:
    """One file's load report: how many of its layers landed on a module."""

    file: str
    format: str  # the key layout: "peft", "kohya", "comfyui", "onetrainer", "lycoris", ...
    matched: int  # source layers that landed on a module
    unmatched: tuple[str, ...]  # layers that did not, by their name in the file
    text_encoder: int  # matched layers on CLIP-L, 0 if none
    t5: int = 0  # matched layers on T5-XXL
    kinds: tuple[tuple[str, int], ...] = ()  # ("LoRA", 490), ("LoKr", 4)
    families: tuple[tuple[str, int], ...] = ()  # not applied, by family

    @property
    def complete(self) -> bool:
        return not self.unmatched

    def line(self) -> str:
        """e.g. "skin.safetensors (kohya): 494 of 494 layers matched (72 on CLIP-L)"."""
        total = self.matched + len(self.unmatched)
        text = f"{self.file} ({self.format}): {self.matched} of {total} layers matched"
        details = []
        if len(self.kinds) > 1 or any(kind != "LoRA" for kind, _ in self.kinds):
            details.append(", ".join(f"{kind} {n}" for kind, n in self.kinds))
        if self.text_encoder:
            details.append(f"{self.text_encoder} on CLIP-L")
        if self.t5:
            details.append(f"{self.t5} on T5")
        if details:
            text += f" ({'; '.join(details)})"
        if self.families:
            shown = [f"{family} ×{n}" for family, n in self.families]
            text += "; not applied: " + some(shown)
        return text


def build_report(name: str, converted: ConvertedLora, landed: Callable[[list], bool]):
    """The report, counting a layer as matched only if `landed(its placements)` says so."""
    unmatched = list(converted.unmatched)
    matched: dict[str, list] = {}
    for layer, placed in converted.layers.items():
        if landed(placed):
            matched[layer] = placed
        else:
            unmatched.append(layer)
    kinds: dict[str, int] = {}
    for layer in matched:
        kinds[converted.kinds[layer]] = kinds.get(converted.kinds[layer], 0) + 1
    on = [placed[0].part for placed in matched.values()]
    return LoraMatch(
        name,
        converted.format,
        len(matched),
        tuple(sorted(unmatched)),
        on.count("text"),
        on.count("t5"),
        tuple(sorted(kinds.items())),
        tuple(sorted(converted.families(unmatched).items())),
    )


def no_match_message(name: str, layout: str, unmatched: Sequence[str]) -> str:
    if layout == "unknown":
        what = (
            "has no LoRA layers in a layout we know (diffusers/peft, Kohya, ComfyUI, "
            "OneTrainer, XLabs, LyCORIS)"
        )
    else:
        what = (
            f"({layout} layout) matches no layer of this Flux.1 transformer, "
            f"CLIP-L or T5: none of its {len(unmatched)} layers fits"
        )
    return (
        f"The LoRA {name!r} {what}; first keys: {some(sorted(unmatched), 3)}. It "
        "is probably made for another model (SDXL, SD 1.5, Flux.2, ...): choose a Flux.1 "
        "LoRA or clear the slot."
    )


def some(keys: Sequence[str], limit: int = SHOWN_KEYS) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
