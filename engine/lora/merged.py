"""LoHa, LoKr and full-diff updates merged into one model's weights, strengths without reloads.

LoRA pairs stay peft adapters, but these updates are merged: a LoHa or LoKr on a fused BFL
layer (qkv, linear1) cannot be cut into per-module factors — its rows must be cut from the
whole ΔW — peft has no adapter for full diffs, and merging is what ComfyUI does with all of
them, so the numbers match its own. As ComfyUI patches weights, W = W₀ + Σ sᵢ·ΔWᵢ is
computed in float32 from the original W₀ and stored in the layer's own format (bf16 / fp32,
fp8 storage, or fp8 compute's values and scales). The originals are kept in CPU memory and
every strength change recomputes the touched layers from them, so nothing drifts and
strength 0 gives back W₀ bit for bit. The factors stay in
memory: a strength change never reads the file. On fp8 layers the merged weight is rounded
to fp8, as in ComfyUI.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

from engine.lora.formats import DeltaPart
from engine.lora.keys import base_layer
from engine.models.fp8_compute import Fp8Linear, quantise_weight


@dataclass
class _Original:
    """A layer's weights before any merge, in CPU memory."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    weight_scale: torch.Tensor | None = None  # Fp8Linear's per-row scales


@dataclass
class MergedDeltas:
    """The merged updates of one model: adapter name -> its parts, and the originals."""

    model_ref: weakref.ref
    adapters: dict[str, list[DeltaPart]] = field(default_factory=dict)
    originals: dict[str, _Original] = field(default_factory=dict)
    applied: dict[str, float] = field(default_factory=dict)
    _pending: bool = False  # adapters added or removed since the last apply()

    @classmethod
    def over(cls, model: torch.nn.Module) -> MergedDeltas:
        return cls(weakref.ref(model))

    def serves(self, model: torch.nn.Module) -> bool:
        return self.model_ref() is model

    def add(self, adapter: str, parts: list[DeltaPart]) -> None:
        device = next(self.model_ref().parameters()).device
        self.adapters[adapter] = [
            DeltaPart(p.part, p.module, p.update.to(device), p.rows) for p in parts
        ]
        self._pending = True  # the next apply() must run even with the same weights

    def remove(self, adapter: str) -> None:
        if self.adapters.pop(adapter, None) is not None:
            self._pending = True
            self.apply({k: v for k, v in self.applied.items() if k != adapter})

    def has(self, adapter: str) -> bool:
        return adapter in self.adapters

    @torch.no_grad()
    def apply(self, weights: dict[str, float]) -> None:
        """Make every touched layer W₀ + Σ weights[a]·ΔW_a (adapters not named: off)."""
        model = self.model_ref()
        weights = {a: w for a, w in weights.items() if a in self.adapters and w != 0.0}
        if weights == self.applied and not self._pending:
            return  # only other (peft) strengths moved: the merged layers are as they were
        touched = {p.module for parts in self.adapters.values() for p in parts}
        touched |= set(self.originals)
        self._pending = True  # an apply cut short (out of memory) rewrites every layer next
        for module in touched:
            layer = base_layer(model.get_submodule(module))
            original = self.originals.get(module) or self._keep(module, layer)
            parts = [(w, p) for a, w in weights.items() for p in self.adapters[a]
                     if p.module == module]  # fmt: skip
            _write(layer, original, parts)
            if not parts:  # back to W₀: nothing left to remember for this layer
                self.originals.pop(module, None)
        self.applied, self._pending = weights, False

    def _keep(self, module: str, layer: torch.nn.Module) -> _Original:
        scale = getattr(layer, "weight_scale", None)
        original = _Original(
            layer.weight.detach().to("cpu", copy=True),
            None if layer.bias is None else layer.bias.detach().to("cpu", copy=True),
            None if scale is None else scale.detach().to("cpu", copy=True),
        )
        self.originals[module] = original
        return original


def _write(layer: torch.nn.Module, original: _Original, parts: list) -> None:
    device = layer.weight.device
    if not parts:  # the exact stored values, whatever the format
        layer.weight.data.copy_(original.weight.to(device))
        if original.weight_scale is not None:
            layer.weight_scale.copy_(original.weight_scale.to(device))
        if original.bias is not None:
            layer.bias.data.copy_(original.bias.to(device))
        return
    weight = _dequantised(original).to(device)
    bias = None if original.bias is None else original.bias.to(device, torch.float32, copy=True)
    for strength, part in parts:
        weight += strength * part.delta()
        extra = part.bias_delta()
        if extra is not None and bias is not None:
            bias += strength * extra
    if isinstance(layer, Fp8Linear):
        values, scales = quantise_weight(weight)
        layer.weight.data.copy_(values)
        layer.weight_scale.copy_(scales.reshape(layer.weight_scale.shape))
    else:
        layer.weight.data.copy_(weight.to(layer.weight.dtype))
    if bias is not None:
        layer.bias.data.copy_(bias.to(layer.bias.dtype))


def _dequantised(original: _Original) -> torch.Tensor:
    """A new float32 tensor (the merge adds into it: never a view of the original)."""
    weight = original.weight.to(torch.float32, copy=True)
    if original.weight_scale is not None:
        weight = weight * original.weight_scale.float().reshape(-1, 1)
    return weight
