"""LoRA key layouts -> peft pairs on the Flux transformer and CLIP-L, with provenance.

Conversion uses diffusers' own converters (`lora_conversion_utils`), one source layer at a
time, so every layer of the file is either placed on a module or listed as unmatched.
Where diffusers 0.42 falls short, we say so and fill the gap:

- the Kohya/ComfyUI converter hard-codes the real widths for `single_blocks.N.linear1`
  (3072, 3072, 3072, 12288); at other widths (tiny test models) we split it ourselves;
- it emits `x_embedder`, `context_embedder`, `time_text_embed.*`, `norm_out`, `proj_out`
  without the `transformer.` prefix, which `load_lora_weights` then drops silently; keys
  without a prefix are taken as transformer keys here;
- peft keys without `transformer.` and ComfyUI `diffusion_model.*.lora_A/B` keys load as a
  silent no-op in diffusers: we add the prefix / rename to lora_down/up first;
- DoRA (`dora_scale`) and ComfyUI `diff`/`diff_b` layers are dropped by diffusers with a log
  line; here they are reported as unmatched rather than applied as something else.

Alphas are folded into lora_A (scale alpha/rank), so every pair loads at peft scale 1.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers.loaders.lora_conversion_utils import (
    _convert_kohya_flux_lora_to_diffusers,
    _convert_xlabs_flux_lora_to_diffusers,
)
from diffusers.utils.state_dict_utils import (
    StateDictType,
    convert_state_dict_to_peft,
    convert_unet_state_dict_to_peft,
)
from peft.utils.other import get_pattern_key

PARTS = ("transformer", "text")
KOHYA_PREFIXES = ("lora_unet_", "lora_te", "lora_transformer_")
# Suffixes after a layer name, longest first so ".lora.down.weight" wins over ".down.weight".
_SUFFIXES = (
    "lora_linear_layer.down.weight|lora_linear_layer.up.weight|lora.down.weight|lora.up.weight|"
    "lora_down.weight|lora_up.weight|lora_A.weight|lora_B.weight|lora_B.bias|down.weight|"
    "up.weight|alpha|dora_scale|lora_magnitude_vector|diff_b|diff"
)
_KEY = re.compile(rf"^(.+?)\.({_SUFFIXES})$")
_PAIR = re.compile(r"^(.+)\.lora_([AB])\.weight$")
_LINEAR1 = re.compile(r"^lora_unet_single_blocks_(\d+)_linear1$")
_TO_DOWN_UP = {".lora_A.weight": ".lora_down.weight", ".lora_B.weight": ".lora_up.weight"}
_TO_A_B = {new: old for old, new in _TO_DOWN_UP.items()}
REAL_LINEAR1_OUT = 3 * 3072 + 12288  # the widths diffusers' converter hard-codes
UNSUPPORTED = ("dora_scale", "lora_magnitude_vector", "diff", "diff_b", "lora_B.bias")
METADATA_KEY = "lora_adapter_metadata"  # where diffusers writes a peft LoraConfig


@dataclass(frozen=True)
class LoraPair:
    """One low-rank update on one Linear: W += up @ down (alpha already in `down`)."""

    part: str  # "transformer" or "text" (CLIP-L)
    module: str  # module path inside that model
    down: torch.Tensor  # lora_A, (rank, in_features)
    up: torch.Tensor  # lora_B, (out_features, rank)


@dataclass
class ConvertedLora:
    """A file's layers that fit the models (by source layer name) and those that did not."""

    format: str
    layers: dict[str, list[LoraPair]] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)

    def pairs(self, part: str) -> list[LoraPair]:
        return [p for pairs in self.layers.values() for p in pairs if p.part == part]

    def state_dict(self, part: str) -> dict[str, torch.Tensor]:
        """peft keys (`transformer.<module>.lora_A.weight`), as diffusers' loaders want them."""
        prefix = "transformer" if part == "transformer" else "text_encoder"
        out = {}
        for pair in self.pairs(part):
            out[f"{prefix}.{pair.module}.lora_A.weight"] = pair.down
            out[f"{prefix}.{pair.module}.lora_B.weight"] = pair.up
        return out

    def count(self, part: str) -> int:
        """Source layers whose pairs land on `part`."""
        return sum(1 for pairs in self.layers.values() if pairs and pairs[0].part == part)


def detect_format(keys: list[str] | tuple[str, ...]) -> str:
    """'kohya', 'comfyui', 'xlabs', 'peft', 'diffusers' or 'unknown', from key names alone."""
    if any(".processor." in k for k in keys):
        return "xlabs"
    if any(k.startswith(KOHYA_PREFIXES) for k in keys):
        return "kohya"
    if any(k.startswith(("diffusion_model.", "text_encoders.")) for k in keys):
        return "comfyui"
    if any(".lora_A." in k or ".lora_B." in k for k in keys):
        return "peft"
    if any(
        re.search(r"\.(lora|lora_linear_layer)\.(down|up)\.|_lora\.(down|up)\.", k) for k in keys
    ):
        return "diffusers"
    return "unknown"


def group_layers(keys) -> dict[str, list[str]]:
    """Source keys grouped by layer: 'x.lora_down.weight', 'x.alpha' -> 'x'."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        match = _KEY.match(key)
        groups.setdefault(match.group(1) if match else key, []).append(key)
    return groups


def convert(
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str],
    models: dict[str, torch.nn.Module],
) -> ConvertedLora:
    """Convert every source layer and keep those whose pairs all fit a module of `models`."""
    result = ConvertedLora(detect_format(list(tensors)))
    config = _peft_config(metadata)
    for layer, keys in group_layers(tensors).items():
        group = {k: tensors[k] for k in keys}
        try:
            pairs = _convert_layer(layer, group, config, models)
        except (ValueError, KeyError, IndexError, TypeError, RuntimeError, AssertionError):
            pairs = []  # diffusers refuses layers it cannot place (foreign models): unmatched
        fitted = [_fit(pair, models) for pair in pairs]
        if fitted and all(fitted):
            result.layers[layer] = fitted
        else:
            result.unmatched.append(layer)
    return result


def _convert_layer(layer: str, group: dict, config: dict, models: dict) -> list[LoraPair]:
    if any(k.endswith(UNSUPPORTED) for k in group):
        return []  # DoRA / full diffs: applying only the low-rank part would be wrong
    if ".processor." in layer:
        return _pairs(_convert_xlabs_flux_lora_to_diffusers(dict(group)))
    if layer.startswith("diffusion_model."):
        name = layer.removeprefix("diffusion_model.")
        if _has_module(models["transformer"], name):  # diffusers names under a ComfyUI prefix
            return _peft_layer("transformer." + name, _rekey(group, layer, "transformer." + name))
        return _kohya_layer(layer, _renamed(group, _TO_DOWN_UP), models)
    if layer.startswith("text_encoders."):
        return _kohya_layer(layer, _renamed(group, _TO_DOWN_UP), models)
    if layer.startswith(KOHYA_PREFIXES):
        return _kohya_layer(layer, group, models)
    return _peft_layer(layer, group, config)


def _kohya_layer(layer: str, group: dict, models: dict) -> list[LoraPair]:
    linear1 = _LINEAR1.match(layer.replace("diffusion_model.", "lora_unet_").replace(".", "_"))
    up = next((v for k, v in group.items() if k.endswith("lora_up.weight")), None)
    if linear1 and up is not None and up.shape[0] != REAL_LINEAR1_OUT:
        return _pairs(_split_linear1(int(linear1.group(1)), group, models["transformer"]))
    return _pairs(_convert_kohya_flux_lora_to_diffusers(dict(group)))


def _split_linear1(block: int, group: dict, transformer: torch.nn.Module) -> dict:
    """Kohya single_blocks.N.linear1 -> to_q, to_k, to_v, proj_mlp at this model's widths.

    diffusers does the same split with the widths of real Flux written in; this takes them
    from the model so narrower test models load too.
    """
    base = f"single_transformer_blocks.{block}"
    names = [f"{base}.attn.to_q", f"{base}.attn.to_k", f"{base}.attn.to_v", f"{base}.proj_mlp"]
    if not all(_has_module(transformer, n) for n in names):
        return {}
    dims = [_base_linear(transformer.get_submodule(n)).out_features for n in names]
    down = next(v for k, v in group.items() if k.endswith("lora_down.weight")).float()
    up = next(v for k, v in group.items() if k.endswith("lora_up.weight")).float()
    if sum(dims) != up.shape[0]:
        return {}
    alpha = next((float(v) for k, v in group.items() if k.endswith(".alpha")), down.shape[0])
    out = {}
    for name, chunk in zip(names, up.split(dims), strict=True):
        out[f"transformer.{name}.lora_A.weight"] = down * (alpha / down.shape[0])
        out[f"transformer.{name}.lora_B.weight"] = chunk
    return out


def _peft_layer(layer: str, group: dict, config: dict | None = None) -> list[LoraPair]:
    """A peft/diffusers-named layer; alpha from an `.alpha` key or diffusers' metadata."""
    name = layer.removeprefix("base_model.model.")
    part, name = _split_part(name)
    if part is None:
        return []
    group = _rekey(_renamed(group, _TO_A_B), layer, name)
    pairs = _pairs(_with_prefix(group, part))
    alpha_key = f"{name}.alpha"
    for i, pair in enumerate(pairs):
        rank = pair.down.shape[0]
        scale = _alpha_scale(name, rank, group.get(alpha_key), (config or {}).get(part, {}))
        if scale != 1.0:
            pairs[i] = LoraPair(pair.part, pair.module, pair.down * scale, pair.up)
    return pairs


def _split_part(name: str) -> tuple[str | None, str]:
    if name.startswith("transformer."):
        return "transformer", name.removeprefix("transformer.")
    if name.startswith("text_encoder."):
        return "text", name.removeprefix("text_encoder.")
    if name.startswith(("unet.", "text_encoder_2.")):
        return None, name  # SD/SDXL parts: not this model
    return "transformer", name  # peft keys saved without a prefix


def _alpha_scale(name: str, rank: int, alpha_tensor, config: dict) -> float:
    if alpha_tensor is not None:
        return float(alpha_tensor) / rank
    if not config:
        return 1.0
    patterns = config.get("alpha_pattern") or {}
    alpha = patterns.get(get_pattern_key(list(patterns), name), config.get("lora_alpha", rank))
    if config.get("use_rslora"):
        return float(alpha) / math.sqrt(rank)
    return float(alpha) / rank


def _peft_config(metadata: dict[str, str]) -> dict[str, dict]:
    """diffusers' saved LoraConfig per part ({"transformer.lora_alpha": 8, ...})."""
    try:
        raw = json.loads(metadata.get(METADATA_KEY, "") or "{}")
    except json.JSONDecodeError:
        return {}
    out: dict[str, dict] = {"transformer": {}, "text": {}}
    for key, value in raw.items() if isinstance(raw, dict) else ():
        prefix, _, field_name = key.partition(".")
        part = {"transformer": "transformer", "text_encoder": "text"}.get(prefix)
        if part and field_name:
            out[part][field_name] = value
    return out


def _pairs(converted: dict[str, torch.Tensor]) -> list[LoraPair]:
    """diffusers-converted keys -> pairs; unprefixed keys are the transformer's (see above)."""
    parts: dict[str, dict] = {"transformer": {}, "text": {}}
    for key, value in converted.items():
        if key.startswith("text_encoder."):
            parts["text"][key.removeprefix("text_encoder.")] = value
        else:
            parts["transformer"][key.removeprefix("transformer.")] = value
    peft = {
        "transformer": convert_unet_state_dict_to_peft(parts["transformer"]),
        "text": convert_state_dict_to_peft(parts["text"], StateDictType.DIFFUSERS_OLD),
    }
    pairs = []
    for part, state in peft.items():
        halves: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            match = _PAIR.match(key)
            if match is None:
                return []  # a key kind peft cannot load: the whole layer is unmatched
            halves.setdefault(match.group(1), {})[match.group(2)] = value
        for module, ab in halves.items():
            if set(ab) != {"A", "B"}:
                return []
            pairs.append(LoraPair(part, module, ab["A"].float(), ab["B"].float()))
    return pairs


def _fit(pair: LoraPair, models: dict[str, torch.nn.Module]) -> LoraPair | None:
    """The pair with the module name as the model spells it, or None if no Linear fits."""
    model = models.get(pair.part)
    if model is None:
        return None
    names = [pair.module]
    if pair.module.startswith("text_model."):  # CLIPTextModel is flat in transformers 5
        names.append(pair.module.removeprefix("text_model."))
    for name in names:
        if not _has_module(model, name):
            continue
        base = _base_linear(model.get_submodule(name))
        rank = pair.down.shape[0]
        if (
            isinstance(base, torch.nn.Linear)
            and pair.down.ndim == 2
            and pair.down.shape[1] == base.in_features
            and tuple(pair.up.shape) == (base.out_features, rank)
        ):
            return LoraPair(pair.part, name, pair.down.contiguous(), pair.up.contiguous())
    return None


def _has_module(model: torch.nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _base_linear(module: torch.nn.Module) -> torch.nn.Module:
    """The Linear under a peft LoRA wrapper (a second LoRA wraps the same base)."""
    get_base: Callable | None = getattr(module, "get_base_layer", None)
    return get_base() if get_base is not None else module


def _rekey(group: dict, old: str, new: str) -> dict:
    return {new + k[len(old) :]: v for k, v in group.items()}


def _with_prefix(group: dict, part: str) -> dict:
    prefix = "transformer." if part == "transformer" else "text_encoder."
    return {prefix + k: v for k, v in group.items() if not k.endswith(".alpha")}


def _renamed(group: dict, suffixes: dict[str, str]) -> dict:
    """Swap key suffixes (ComfyUI files also use peft's lora_A/B, which diffusers' Kohya
    path does not read; ai-toolkit writes peft names with Kohya's lora_down/up)."""
    out = {}
    for key, value in group.items():
        old = next((s for s in suffixes if key.endswith(s)), None)
        out[key[: -len(old)] + suffixes[old] if old else key] = value
    return out
