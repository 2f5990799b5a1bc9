"""A LoRA file -> updates placed on the Flux transformer, CLIP-L and T5, with provenance.

Each source layer (its tensors grouped by name) becomes one Update (updates.py: LoRA, LoHa,
LoKr or a full diff, alpha as ComfyUI applies it) and lands on the modules keys.py names.
LoRA updates become peft pairs (W += up @ down, alpha folded into down); the others are
merged into the weights by merged.py. Every layer is either placed or listed as not applied
with its family, so a partly applied file is never reported as complete.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
from peft.utils.other import get_pattern_key

from engine.errors import StudioError
from engine.input_limits import MAX_METADATA_JSON_BYTES, parse_json_document
from engine.lora.keys import KeyMap, Rows, Target, split_prefix
from engine.lora.updates import (
    ALL_SUFFIXES,
    LORA,
    NotApplicable,
    Update,
    parse_update,
)

PARTS = ("transformer", "text")  # what a slot's two strengths drive
MODEL_PARTS = ("transformer", "text", "t5")  # "text" is CLIP-L; T5 follows its strength
METADATA_KEY = "lora_adapter_metadata"  # where diffusers writes a peft LoraConfig
_SUFFIX_PATTERN = "|".join(re.escape(s) for s in sorted(ALL_SUFFIXES, key=len, reverse=True))
_KEY = re.compile(rf"^(.+?)\.({_SUFFIX_PATTERN})$")
_LAYOUTS = (  # key prefix -> the layout's name in reports, first match wins
    ("lora_transformer_", "onetrainer"),
    ("lycoris_", "lycoris"),
    ("lora_unet_", "kohya"),
    ("lora_te", "kohya"),
    ("diffusion_model.", "comfyui"),
    ("text_encoders.", "comfyui"),
)


@dataclass(frozen=True)
class LoraPair:
    """One low-rank update on one Linear: W += up @ down (alpha already in `down`)."""

    part: str  # "transformer", "text" (CLIP-L) or "t5"
    module: str  # module path inside that model
    down: torch.Tensor  # lora_A, (rank, in_features)
    up: torch.Tensor  # lora_B, (out_features, rank)


@dataclass(frozen=True)
class DeltaPart:
    """A LoHa / LoKr / full update's share of one module, merged into its weight."""

    part: str
    module: str
    update: Update
    rows: Rows = ()

    def delta(self) -> torch.Tensor:
        return _rows(self.update.delta(), self.rows)

    def bias_delta(self) -> torch.Tensor | None:
        bias = self.update.bias_delta()
        return None if bias is None else _rows(bias, self.rows)


@dataclass
class ConvertedLora:
    """A file's layers that fit the models (by source layer name) and those that did not."""

    format: str
    layers: dict[str, list[LoraPair | DeltaPart]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # placed layer -> LoRA / LoHa / ...
    unmatched: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # unmatched layer -> why, if known

    def pairs(self, part: str) -> list[LoraPair]:
        return [p for placed in self.layers.values() for p in placed
                if isinstance(p, LoraPair) and p.part == part]  # fmt: skip

    def deltas(self, part: str) -> list[DeltaPart]:
        return [p for placed in self.layers.values() for p in placed
                if isinstance(p, DeltaPart) and p.part == part]  # fmt: skip

    def parts(self) -> tuple[str, ...]:
        """Model parts with anything placed on them."""
        used = {p.part for placed in self.layers.values() for p in placed}
        return tuple(part for part in MODEL_PARTS if part in used)

    def state_dict(self, part: str) -> dict[str, torch.Tensor]:
        """peft keys (`transformer.<module>.lora_A.weight`), as diffusers' loaders want them."""
        prefix = "transformer" if part == "transformer" else "text_encoder"
        out = {}
        for pair in self.pairs(part):
            out[f"{prefix}.{pair.module}.lora_A.weight"] = pair.down
            out[f"{prefix}.{pair.module}.lora_B.weight"] = pair.up
        return out

    def families(self, unmatched: list[str]) -> dict[str, int]:
        """`unmatched` layers by family: digits as N, plus why when we know ("DoRA")."""
        counts: dict[str, int] = {}
        for layer in unmatched:
            name = re.sub(r"\d+", "N", layer)
            reason = self.reasons.get(layer)
            family = f"{name} ({reason})" if reason else name
            counts[family] = counts.get(family, 0) + 1
        return counts


def detect_format(keys: list[str] | tuple[str, ...]) -> str:
    """The key layout, from names alone: kohya, onetrainer, lycoris, comfyui, xlabs, peft,
    diffusers or unknown."""
    if any(".processor." in k and ("qkv_lora" in k or "proj_lora" in k) for k in keys):
        return "xlabs"
    for prefix, name in _LAYOUTS:
        if any(k.startswith(prefix) for k in keys):
            return name
    if any(".lora_A." in k or ".lora_B." in k for k in keys):
        return "peft"
    if any(_KEY.match(k) for k in keys):
        return "diffusers"
    return "unknown"


def group_layers(keys) -> dict[str, dict[str, str]]:
    """Source keys grouped by layer: {'x': {'lora_down.weight': 'x.lora_down.weight', ...}}.

    Keys that match no known suffix form a layer of their own (reported as unmatched).
    """
    groups: dict[str, dict[str, str]] = {}
    for key in keys:
        match = _KEY.match(key)
        layer, suffix = (match.group(1), match.group(2)) if match else (key, "")
        layer = layer.removesuffix("_lora")  # old diffusers: to_q_lora.up.weight, .alpha
        groups.setdefault(layer, {})[suffix] = key
    return groups


def convert(
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str],
    models: dict[str, torch.nn.Module],
) -> ConvertedLora:
    """Place every source layer on `models` ({part: model}), or list it as not applied."""
    result = ConvertedLora(detect_format(list(tensors)))
    keymap, config = KeyMap(models), _peft_config(metadata)
    for layer, by_suffix in group_layers(tensors).items():
        try:
            if "" in by_suffix:
                raise NotApplicable("")  # not a tensor name of any LoRA layout
            group = {suffix: tensors[key] for suffix, key in by_suffix.items()}
            update = parse_update(group, _default_scale(layer, config))
        except NotApplicable as exc:
            result.unmatched.append(layer)
            if str(exc):
                result.reasons[layer] = str(exc)
            continue
        placed = _place(update, keymap.targets(layer), keymap.shapes)
        if placed:
            result.layers[layer], result.kinds[layer] = placed, update.kind
        else:
            result.unmatched.append(layer)
    return result


def _place(update: Update, targets: list[Target] | None, shapes: dict) -> list | None:
    """The update on each target, or None if any target's shape does not fit."""
    if not targets:
        return None
    out_rows, in_features = update.shape
    placed = []
    for target in targets:
        shape = shapes.get(target.part, {}).get(target.module)
        rows = sum(b - a for a, b in target.rows) if target.rows else out_rows
        if shape != (in_features, rows) or any(b > out_rows for _, b in target.rows):
            return None
        placed.append(_on_target(update, target))
    return placed


def _on_target(update: Update, target: Target) -> LoraPair | DeltaPart:
    if update.kind != LORA:
        return DeltaPart(target.part, target.module, update, target.rows)
    down = (update.factors["down"] * update.scale).contiguous()
    up = _rows(update.factors["up"], target.rows).contiguous()
    return LoraPair(target.part, target.module, down, up)


def _rows(tensor: torch.Tensor, rows: Rows) -> torch.Tensor:
    return torch.cat([tensor[a:b] for a, b in rows]) if rows else tensor


def _default_scale(layer: str, config: dict[str, dict]):
    """A LoRA's scale without an alpha key: from diffusers' saved LoraConfig, if any."""
    part, name = split_prefix(layer)
    settings = config.get(part or "", {})
    if not settings:
        return None

    def scale(rank: int) -> float:
        patterns = settings.get("alpha_pattern") or {}
        key = get_pattern_key(list(patterns), name)
        alpha = float(patterns.get(key, settings.get("lora_alpha", rank)))
        return alpha / math.sqrt(rank) if settings.get("use_rslora") else alpha / rank

    return scale


def _peft_config(metadata: dict[str, str]) -> dict[str, dict]:
    """diffusers' saved LoraConfig per part ({"transformer.lora_alpha": 8, ...})."""
    try:  # the file's own text: within the size and depth limits of every JSON we read
        raw = parse_json_document(
            metadata.get(METADATA_KEY, "") or "{}", "The LoRA's adapter metadata",
            max_bytes=MAX_METADATA_JSON_BYTES,
        )  # fmt: skip
    except StudioError:
        return {}
    out: dict[str, dict] = {"transformer": {}, "text": {}}
    for key, value in raw.items() if isinstance(raw, dict) else ():
        prefix, _, field_name = key.partition(".")
        part = {"transformer": "transformer", "text_encoder": "text"}.get(prefix)
        if part and field_name:
            out[part][field_name] = value
    return out
