"""LoRA pairs as peft adapters on one model (diffusers' loaders), switched without reloads."""

from __future__ import annotations

import re
from collections import Counter

import torch
from diffusers.utils.peft_utils import (
    delete_adapter_layers,
    set_adapter_layers,
    set_weights_and_activate_adapters,
)
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer

from engine.lora.formats import ConvertedLora


def has_adapter(model: torch.nn.Module, adapter: str) -> bool:
    return adapter in (getattr(model, "peft_config", None) or {})


def delete_adapter(model: torch.nn.Module, adapter: str) -> None:
    if has_adapter(model, adapter):
        delete_adapter_layers(model, adapter)


def carries(model: torch.nn.Module, module: str, adapter: str) -> bool:
    """Whether `module` of `model` now holds the adapter's LoRA layer."""
    return adapter in getattr(model.get_submodule(module), "lora_A", {})


def set_weights(model: torch.nn.Module, weights: dict[str, float]) -> None:
    """Activate exactly `weights` (adapter -> strength); none: the exact base model."""
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


def inject(
    model: torch.nn.Module, part: str, converted: ConvertedLora, adapter: str, compute: torch.dtype
) -> None:
    """Load the file's pairs for `part` ("transformer", "text" or "t5") as `adapter`."""
    state = converted.state_dict(part)
    pairs = converted.pairs(part)
    if part == "transformer":
        model.load_lora_adapter(
            state,
            prefix="transformer",
            adapter_name=adapter,
            low_cpu_mem_usage=True,
            # exact targets (see _config); diffusers reads the keys under the prefix
            metadata={f"transformer.{k}": v for k, v in _config(pairs).items()},
        )
    else:
        # CLIP-L and T5: diffusers' text-encoder loader converts only CLIP's attention names;
        # transformers' own adapter loading (the same peft injection) takes any module.
        model.load_adapter(
            adapter_name=adapter,
            peft_config=LoraConfig(**_config(pairs)),
            adapter_state_dict={f"{p.module}.lora_{ab}.weight": t for p in pairs
                                for ab, t in (("A", p.down), ("B", p.up))},
        )  # fmt: skip
    _keep_compute_dtype(model, converted, part, adapter, compute)


def _config(pairs: list) -> dict:
    """peft LoraConfig fields for `pairs`: exactly their modules and ranks, alpha = rank
    (alpha is folded into the pairs).

    Module names are matched as whole names: peft matches a list of names by suffix, so a
    LoRA on the top-level `proj_out` would also wrap every `single_transformer_blocks.N.
    proj_out` (with a zero update, but a layer's worth of work each).
    """
    ranks = {p.module: p.down.shape[0] for p in pairs}
    common = Counter(ranks.values()).most_common(1)[0][0]
    # peft tries rf"(.*\.)?({key})$" on each name: the "^" rules out longer names.
    others = {"^" + re.escape(m): r for m, r in ranks.items() if r != common}
    return {
        "r": common,
        "lora_alpha": common,
        "target_modules": "|".join(re.escape(m) for m in sorted(ranks)),
        "rank_pattern": others,
        "alpha_pattern": others,
    }


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
