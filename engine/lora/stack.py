"""LoraStack: the Power LoRA Loader over the warm Flux transformer, CLIP-L and T5.

A file is read once and kept: its LoRA pairs as a peft adapter on each model they touch, its
LoHa / LoKr / full-diff layers as merged weight updates (merged.py). Strengths and on/off
switches only change adapter weights (`set_adapters`) or re-merge from the kept factors,
which never touches the disk. Strength 0 or no slot on gives the exact base output. Adapters
on fp8-stored weights are kept in the compute dtype. A slot's CLIP strength drives CLIP-L
and T5, as ComfyUI's LoraLoader does.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from engine.errors import InputError
from engine.lora import peft_adapters as peft
from engine.lora.files import LoraFiles, metadata_triggers
from engine.lora.formats import MODEL_PARTS, PARTS, DeltaPart, LoraPair, convert
from engine.lora.library import library_match
from engine.lora.merged import MergedDeltas
from engine.lora.report import LoraMatch, build_report, no_match_message
from engine.recipe import LoraSlot

MAX_KEPT = 8  # adapters kept loaded (more if the slots use more): re-adding one is free
TEXT_KEY_PREFIXES = ("lora_te_", "lora_te1_", "lora_te2_", "text_encoder.", "text_encoders.")
# The model parts each strength drives.
DRIVES = {"transformer": ("transformer",), "text": ("text", "t5")}


@dataclass(frozen=True)
class LoraParams:
    """A stage's slice of the LoRA stack: its slots, and the file versions for its key."""

    slots: tuple[LoraSlot, ...] = ()
    files: tuple[str, ...] = ()  # name:size:mtime_ns, so an edited file re-runs the stage


@dataclass
class _Adapter:
    name: str  # the adapter name on the models
    identity: str  # the file version it was read from
    peft_parts: tuple[str, ...]  # model parts holding its LoRA pairs as peft adapters
    merged_parts: tuple[str, ...]  # model parts with its merged LoHa / LoKr / diff layers
    match: LoraMatch | None

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.peft_parts + self.merged_parts))


def bundle_models(bundle: Any) -> dict[str, torch.nn.Module | None]:
    """The bundle's models by part (a bundle without T5, as in some tests, has None)."""
    return {
        "transformer": bundle.transformer,
        "text": bundle.clip,
        "t5": getattr(bundle, "t5", None),
    }


class LoraStack:
    """LoRA files of one loras/ folder, kept loaded on the warm models."""

    def __init__(self, loras_dir: Path | None) -> None:
        self.files = LoraFiles(loras_dir)
        self.file_reads: Counter[str] = self.files.reads
        self._adapters: OrderedDict[str, _Adapter] = OrderedDict()  # file name -> adapter
        self._applied: dict[str, dict[str, float]] = {}  # strength part -> weights last set
        self._merged: dict[str, MergedDeltas] = {}  # model part -> merged updates
        self._serial = 0
        self._lock = threading.RLock()

    def list_files(self) -> list[str]:
        return self.files.list()

    def identity(self, name: str) -> str:
        return self.files.identity(name)

    def trigger_words(self, name: str) -> list[str]:
        """From the file's metadata, else from the LoRA library entry its name matches."""
        words = metadata_triggers(self.files.header(name).metadata)
        if words:
            return words
        entry = library_match(name)
        return [entry.trigger] if entry and entry.trigger else []

    def apply(self, bundle: Any, slots: Sequence[LoraSlot], *, part: str) -> list[LoraMatch]:
        """Make `part` ("transformer": strength_model; "text": strength_clip on CLIP-L and
        T5) follow `slots`, loading files not loaded yet; one report per file in use."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, not {part!r}")
        models = bundle_models(bundle)
        active = [slot for slot in slots if slot.enabled and slot.file]
        with self._lock:
            names = list(dict.fromkeys(slot.file for slot in active))
            loaded: list[tuple[LoraMatch, bool]] = []
            try:
                for name in names:
                    loaded.append(self._ensure(name, models, bundle.compute_dtype))
                self._evict(models, keep=set(names))
            finally:  # also after a bad file: what did load must not stay half-applied
                self._applied[part] = self._weights(part, active)
                # A load activates the new adapter on every model: the other strength's
                # models go back to what their own last apply() asked for.
                for each in PARTS if any(new for _, new in loaded) else (part,):
                    self._set(models, each)
            return [match for match, _ in loaded]

    def apply_regions(
        self, bundle: Any, slots: Sequence[LoraSlot], regions: Sequence[Sequence[LoraSlot]]
    ) -> tuple[list[LoraMatch], list[dict[str, float]]]:
        """The transformer follows `slots`; each region's files are loaded as well but left
        off, and returned per region as adapter -> model strength (regions/lora_tokens.py
        applies them to the region's tokens only)."""
        region_active = [[s for s in region if s.enabled and s.file] for region in regions]
        flat = [slot for region in region_active for slot in region]
        matches = self.apply(bundle, [*slots, *flat], part="transformer")
        with self._lock:
            for slot in flat:
                if "transformer" in self._adapters[slot.file].merged_parts:
                    raise InputError(
                        f"{slot.file} holds LoHa / LoKr / full layers, which change the "
                        "model's weights for the whole image: a region takes LoRA files "
                        "(down/up pairs). Put it in the main LoRA stack instead."
                    )
            active = [slot for slot in slots if slot.enabled and slot.file]
            self._applied["transformer"] = self._weights("transformer", active)
            self._set(bundle_models(bundle), "transformer")
            return matches, [self._weights("transformer", region) for region in region_active]

    def unload(self, bundle: Any) -> None:
        """Remove every adapter from the bundle's models (the next apply reads files again)."""
        models = bundle_models(bundle)
        with self._lock:
            for entry in self._adapters.values():
                self._delete(entry, models)
            self._adapters.clear()
            self._applied.clear()

    def stage_params(self, slots: Sequence[LoraSlot], part: str) -> LoraParams:
        """What a stage using `part` must key on and pass to apply(): the slots that are on,
        with the other part's strength and the trigger blanked (changing those must not
        re-run it), CLIP-less files left out for "text", and each file's identity."""
        keep = []
        for slot in slots:
            if not (slot.enabled and slot.file):
                continue
            if part == "text" and self.has_text_encoder_keys(slot.file):
                keep.append(replace(slot, strength_model=0.0, trigger=""))
            elif part == "transformer":
                keep.append(replace(slot, strength_clip=0.0, trigger=""))
        return LoraParams(tuple(keep), tuple(self.identity(s.file) for s in keep))

    def has_text_encoder_keys(self, name: str) -> bool:
        """Whether the file has CLIP-L layers (read from its header, no tensors)."""
        return any(k.startswith(TEXT_KEY_PREFIXES) for k in self.files.header(name).keys)

    def prompt_with_triggers(self, prompt: str, slots: Sequence[LoraSlot]) -> str:
        """The prompt with the trigger words of the slots that are on put in front.

        A typed trigger wins over the file's metadata and the library; words already in
        the prompt are not repeated.
        """
        words: list[str] = []
        for slot in slots:
            if not (slot.enabled and slot.file):
                continue
            typed = [w.strip() for w in slot.trigger.split(",") if w.strip()]
            words += typed or self.trigger_words(slot.file)
        lowered = prompt.lower()
        front = [w for w in dict.fromkeys(words) if w.lower() not in lowered]
        return ", ".join([*front, prompt]) if front and prompt else ", ".join(front) or prompt

    def _set(self, models: dict, part: str) -> None:
        weights = self._applied.get(part, {})
        for model_part in DRIVES[part]:
            model = models.get(model_part)
            if model is None:
                continue
            peft.set_weights(model, weights)
            merged = self._merged.get(model_part)
            if merged is not None and merged.serves(model):
                merged.apply(weights)

    def _merged_on(self, part: str, model: torch.nn.Module) -> MergedDeltas:
        """The merged updates of this model (a newly loaded model starts afresh)."""
        merged = self._merged.get(part)
        if merged is None or not merged.serves(model):
            merged = self._merged[part] = MergedDeltas.over(model)
        return merged

    def _loaded(self, entry: _Adapter, models: dict) -> bool:
        """Whether every model the entry touches still carries it."""
        if any(models.get(p) is None for p in entry.parts):
            return False
        peft_ok = all(peft.has_adapter(models[p], entry.name) for p in entry.peft_parts)
        return peft_ok and all(
            self._merged_on(p, models[p]).has(entry.name) for p in entry.merged_parts
        )

    def _ensure(self, name: str, models: dict, compute: torch.dtype) -> tuple[LoraMatch, bool]:
        identity = self.files.identity(name)
        entry = self._adapters.get(name)
        if entry is not None and entry.identity != identity:  # the file changed on disk
            self._delete(self._adapters.pop(name), models)
            entry = None
        if entry is not None:
            self._adapters.move_to_end(name)
            if self._loaded(entry, models):
                return entry.match, False
        tensors, metadata = self.files.read(name)
        present = {part: model for part, model in models.items() if model is not None}
        converted = convert(tensors, metadata, present)
        if not converted.layers:
            raise InputError(no_match_message(name, converted.format, converted.unmatched))
        adapter = entry.name if entry is not None else self._next_name(models)
        entry = self._load(name, identity, adapter, converted, models, compute)
        self._adapters[name] = entry
        if not entry.match.matched:  # nothing landed after all: never a silent no-op
            self._delete(self._adapters.pop(name), models)
            raise InputError(no_match_message(name, converted.format, entry.match.unmatched))
        return entry.match, True

    def _load(self, name, identity, adapter, converted, models, compute) -> _Adapter:
        """Put the converted file on the models as `adapter` (all of it, or none of it)."""
        peft_parts = tuple(p for p in MODEL_PARTS if converted.pairs(p))
        merged_parts = tuple(p for p in MODEL_PARTS if converted.deltas(p))
        entry = _Adapter(adapter, identity, peft_parts, merged_parts, match=None)
        try:
            for part in peft_parts:
                if not peft.has_adapter(models[part], adapter):
                    peft.inject(models[part], part, converted, adapter, compute)
            for part in merged_parts:
                self._merged_on(part, models[part]).add(adapter, converted.deltas(part))
        except Exception:  # no adapter may stay on one model without a record of it
            self._delete(entry, models)
            raise
        entry.match = build_report(
            name, converted, lambda placed: self._landed(placed, models, adapter)
        )
        return entry

    def _landed(self, placed: list, models: dict, adapter: str) -> bool:
        for p in placed:
            if isinstance(p, LoraPair) and not peft.carries(models[p.part], p.module, adapter):
                return False
            if isinstance(p, DeltaPart) and not self._merged_on(p.part, models[p.part]).has(
                adapter
            ):
                return False
        return True

    def _delete(self, entry: _Adapter, models: dict) -> None:
        for part in entry.peft_parts:
            if models.get(part) is not None:
                peft.delete_adapter(models[part], entry.name)
        for part in entry.merged_parts:
            merged = self._merged.get(part)
            if merged is not None and models.get(part) is not None and merged.serves(models[part]):
                merged.remove(entry.name)

    def _next_name(self, models: dict) -> str:
        """A fresh adapter name, also unused by anything else that loaded into the models."""
        while True:
            self._serial += 1
            name = f"lora{self._serial}"
            if not any(peft.has_adapter(m, name) for m in models.values() if m is not None):
                return name

    def _evict(self, models: dict, keep: set[str]) -> None:
        """Drop the least recently used adapters beyond MAX_KEPT that no slot uses."""
        for name in list(self._adapters):
            if len(self._adapters) <= MAX_KEPT:
                break
            if name not in keep:
                self._delete(self._adapters.pop(name), models)

    def _weights(self, part: str, active: list[LoraSlot]) -> dict[str, float]:
        """Adapter name -> summed strength for `part`; strength 0 is left out (exact base)."""
        weights: dict[str, float] = {}
        for slot in active:
            entry = self._adapters.get(slot.file)
            if entry is None or not set(entry.parts) & set(DRIVES[part]):
                continue
            value = slot.strength_model if part == "transformer" else slot.strength_clip
            weights[entry.name] = weights.get(entry.name, 0.0) + value
        return {name: w for name, w in weights.items() if w != 0.0}
