"""LoraStack: the Power LoRA Loader over the warm Flux transformer and CLIP-L.

A file is read once and kept as a peft adapter on both models (its transformer and CLIP
parts); strengths and on/off switches only change adapter weights (`set_adapters`), which
never touches the disk. Strength 0 or no slot on disables the adapters, which gives the
exact base output. Adapters on fp8-stored weights are kept in the compute dtype.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders import FluxLoraLoaderMixin
from diffusers.utils.peft_utils import (
    delete_adapter_layers,
    set_adapter_layers,
    set_weights_and_activate_adapters,
)
from peft.tuners.tuners_utils import BaseTunerLayer

from engine.errors import InputError
from engine.lora.files import LoraFiles, metadata_triggers
from engine.lora.formats import PARTS, ConvertedLora, convert
from engine.lora.library import library_match
from engine.recipe import LoraSlot

SHOWN_KEYS = 20  # unmatched keys named in a message
MAX_KEPT = 8  # adapters kept loaded (more if the slots use more): re-adding one is free
TEXT_KEY_PREFIXES = ("lora_te_", "lora_te1_", "text_encoder.", "text_encoders.clip_l.")


@dataclass(frozen=True)
class LoraMatch:
    """One file's load report: how many of its LoRA layers landed on a module."""

    file: str
    format: str  # "peft" | "kohya" | "comfyui" | "xlabs" | "diffusers"
    matched: int  # LoRA layers (down/up pairs) that landed on a module
    unmatched: tuple[str, ...]  # layers that did not, by their key in the file
    text_encoder: int  # matched layers on CLIP-L (Kohya lora_te1_*), 0 if none

    @property
    def complete(self) -> bool:
        return not self.unmatched

    def line(self) -> str:
        """e.g. "skin.safetensors (kohya): 494 of 494 keys matched (72 on CLIP-L)"."""
        total = self.matched + len(self.unmatched)
        text = f"{self.file} ({self.format}): {self.matched} of {total} keys matched"
        if self.text_encoder:
            text += f" ({self.text_encoder} on CLIP-L)"
        if self.unmatched:
            text += "; not applied: " + _some(self.unmatched)
        return text


@dataclass(frozen=True)
class LoraParams:
    """A stage's slice of the LoRA stack: its slots, and the file versions for its key."""

    slots: tuple[LoraSlot, ...] = ()
    files: tuple[str, ...] = ()  # name:size:mtime_ns, so an edited file re-runs the stage


@dataclass
class _Adapter:
    name: str  # the peft adapter name on the models
    identity: str  # the file version it was read from
    parts: tuple[str, ...]  # models it has layers for
    match: LoraMatch


class LoraStack:
    """LoRA files of one loras/ folder, kept loaded as adapters on the warm models."""

    def __init__(self, loras_dir: Path | None) -> None:
        self.files = LoraFiles(loras_dir)
        self.file_reads: Counter[str] = self.files.reads
        self._adapters: OrderedDict[str, _Adapter] = OrderedDict()  # file name -> adapter
        self._applied: dict[str, dict[str, float]] = {}  # part -> adapter weights last set
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
        """Make `part` ("transformer": strength_model, "text": strength_clip on CLIP-L)
        follow `slots`, loading files not loaded yet; one report per file in use."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, not {part!r}")
        models = {"transformer": bundle.transformer, "text": bundle.clip}
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
                # A load activates the new adapter on both models: the other one goes back
                # to what its own last apply() asked for.
                for each in PARTS if any(new for _, new in loaded) else (part,):
                    _set_weights(models[each], self._applied.get(each, {}))
            return [match for match, _ in loaded]

    def unload(self, bundle: Any) -> None:
        """Remove every adapter from the bundle's models (the next apply reads files again)."""
        models = {"transformer": bundle.transformer, "text": bundle.clip}
        with self._lock:
            for entry in self._adapters.values():
                _delete(entry, models)
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

    def _ensure(self, name: str, models: dict, compute: torch.dtype) -> tuple[LoraMatch, bool]:
        identity = self.files.identity(name)
        entry = self._adapters.get(name)
        if entry is not None and entry.identity != identity:  # the file changed on disk
            _delete(self._adapters.pop(name), models)
            entry = None
        if entry is not None:
            self._adapters.move_to_end(name)
            if all(_has_adapter(models[p], entry.name) for p in entry.parts):
                return entry.match, False
        tensors, metadata = self.files.read(name)
        converted = convert(tensors, metadata, models)
        if not converted.layers:
            raise InputError(_no_match_message(name, converted))
        adapter = entry.name if entry is not None else self._next_name(models)
        parts = tuple(p for p in PARTS if converted.pairs(p))
        injected: list[str] = []
        try:
            for part in parts:
                if not _has_adapter(models[part], adapter):
                    _inject(models[part], part, converted, adapter, compute)
                    injected.append(part)
        except Exception:  # no adapter may stay on one model without a record of it
            for part in injected:
                delete_adapter_layers(models[part], adapter)
            raise
        match = _report(name, converted, models, adapter)
        self._adapters[name] = _Adapter(adapter, identity, parts, match)
        if not match.matched:  # peft placed nothing after all: never a silent no-op
            _delete(self._adapters.pop(name), models)
            raise InputError(_no_match_message(name, converted))
        return match, True

    def _next_name(self, models: dict) -> str:
        """A fresh adapter name, also unused by anything else that loaded into the models."""
        while True:
            self._serial += 1
            name = f"lora{self._serial}"
            if not any(_has_adapter(model, name) for model in models.values()):
                return name

    def _evict(self, models: dict, keep: set[str]) -> None:
        """Drop the least recently used adapters beyond MAX_KEPT that no slot uses."""
        for name in list(self._adapters):
            if len(self._adapters) <= MAX_KEPT:
                break
            if name not in keep:
                _delete(self._adapters.pop(name), models)

    def _weights(self, part: str, active: list[LoraSlot]) -> dict[str, float]:
        """Adapter name -> summed strength for `part`; strength 0 is left out (exact base)."""
        weights: dict[str, float] = {}
        for slot in active:
            entry = self._adapters.get(slot.file)
            if entry is None or part not in entry.parts:
                continue
            value = slot.strength_model if part == "transformer" else slot.strength_clip
            weights[entry.name] = weights.get(entry.name, 0.0) + value
        return {name: w for name, w in weights.items() if w != 0.0}


def _set_weights(model: torch.nn.Module, weights: dict[str, float]) -> None:
    loaded = getattr(model, "peft_config", None)
    if not loaded:
        return  # no adapter was ever loaded: the model is the base model
    weights = {name: w for name, w in weights.items() if name in loaded}
    if not weights:
        set_adapter_layers(model, enabled=False)  # exact base output
        return
    if _disabled(model):  # enabling walks every layer again: only when switched off
        set_adapter_layers(model, enabled=True)
    set_weights_and_activate_adapters(model, list(weights), list(weights.values()))


def _disabled(model: torch.nn.Module) -> bool:
    """Whether the LoRA layers are switched off (all are switched together here)."""
    layer = next((m for m in model.modules() if isinstance(m, BaseTunerLayer)), None)
    return layer is not None and layer.disable_adapters


def _inject(
    model: torch.nn.Module, part: str, converted: ConvertedLora, adapter: str, compute: torch.dtype
) -> None:
    state = converted.state_dict(part)
    if part == "transformer":
        model.load_lora_adapter(
            state, prefix="transformer", adapter_name=adapter, low_cpu_mem_usage=True
        )
    else:
        FluxLoraLoaderMixin.load_lora_into_text_encoder(
            state,
            network_alphas=None,
            text_encoder=model,
            prefix="text_encoder",
            adapter_name=adapter,
            low_cpu_mem_usage=True,
        )
    _keep_compute_dtype(model, converted, part, adapter, compute)


def _keep_compute_dtype(
    model: torch.nn.Module, converted: ConvertedLora, part: str, adapter: str, compute: torch.dtype
) -> None:
    """peft gives a new adapter the dtype of its base weight: fp8 under layerwise casting.

    fp8 LoRA weights cannot run on CPU and round the low-rank update away, so an adapter
    added after casting is put back in the compute dtype with the file's values (the
    casting hooks stay on the base layers only).
    """
    for pair in converted.pairs(part):
        layer = model.get_submodule(pair.module)
        for holder, value in ((layer.lora_A[adapter], pair.down), (layer.lora_B[adapter], pair.up)):
            weight = holder.weight
            if weight.dtype != compute:
                holder.weight = torch.nn.Parameter(
                    value.to(weight.device, compute), requires_grad=False
                )


def _report(name: str, converted: ConvertedLora, models: dict, adapter: str) -> LoraMatch:
    """Count the layers whose every pair now carries the adapter (checked on the model)."""
    landed, unmatched = 0, list(converted.unmatched)
    text = 0
    for layer, pairs in converted.layers.items():
        ok = all(
            adapter in getattr(models[p.part].get_submodule(p.module), "lora_A", {}) for p in pairs
        )
        if ok:
            landed += 1
            text += pairs[0].part == "text"
        else:
            unmatched.append(layer)
    return LoraMatch(name, converted.format, landed, tuple(sorted(unmatched)), text)


def _has_adapter(model: torch.nn.Module, adapter: str) -> bool:
    return adapter in (getattr(model, "peft_config", None) or {})


def _delete(entry: _Adapter, models: dict) -> None:
    for part in entry.parts:
        if _has_adapter(models[part], entry.name):
            delete_adapter_layers(models[part], entry.name)


def _no_match_message(name: str, converted: ConvertedLora) -> str:
    if converted.format == "unknown":
        what = "has no LoRA layers in a layout we know (diffusers/peft, Kohya, ComfyUI, XLabs)"
    else:
        what = (
            f"({converted.format} layout) matches no layer of this Flux.1 transformer or "
            f"CLIP-L: none of its {len(converted.unmatched)} layers fits"
        )
    return (
        f"The LoRA {name!r} {what}; first keys: {_some(converted.unmatched, 3)}. It is "
        "probably made for another model (SDXL, SD 1.5, Flux.2, ...): choose a Flux.1 LoRA "
        "or clear the slot."
    )


def _some(keys: Sequence[str], limit: int = SHOWN_KEYS) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
