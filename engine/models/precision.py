"""Precision rules: which dtype weights are stored in and which dtype activations use.

fp8 storage uses diffusers' layerwise casting (weights stay fp8 between layers and are cast
to the compute dtype just for their own forward), with our own skip list: diffusers' default
for Flux skips every module whose name contains "norm", which keeps the adaLN modulation
Linears (norm1.linear, norm1_context.linear, norm.linear, norm_out.linear, ~27 % of the real
transformer) in high precision. We keep only positional embeddings and the norm layers
themselves (LayerNorm / RMSNorm / GroupNorm weights) out of fp8.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.hooks import apply_layerwise_casting
from diffusers.models.normalization import RMSNorm as DiffusersRMSNorm

WEIGHT_DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
# safetensors header dtype names -> our weight_dtype ids.
SAFETENSORS_FP8 = {"F8_E4M3": "fp8_e4m3fn", "F8_E5M2": "fp8_e5m2"}

HIGH_PRECISION_CLASSES: tuple[type[torch.nn.Module], ...] = (
    torch.nn.LayerNorm,
    torch.nn.GroupNorm,
    torch.nn.RMSNorm,
    DiffusersRMSNorm,
)
# Regexes on module names. "lora_" keeps future peft LoRA layers (loaded before casting) in the
# compute dtype: they are small and fp8 would round their low-rank updates away.
HIGH_PRECISION_PATTERNS: tuple[str, ...] = ("pos_embed", "lora_")


@dataclass(frozen=True)
class StorageReport:
    """How many parameters a model stores in fp8 and how many in higher precision."""

    fp8: int
    other: int

    @property
    def fp8_fraction(self) -> float:
        total = self.fp8 + self.other
        return self.fp8 / total if total else 0.0


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_weight_dtype(requested: str, device: torch.device, file_fp8: str = "") -> str:
    """The transformer's storage precision for a ModelParams.weight_dtype value.

    "default" is fp32 on CPU; on CUDA it keeps an fp8 file in fp8 (as ComfyUI does, so a
    24 GB card can hold it) and is bf16 otherwise.
    """
    if requested != "default":
        if requested not in WEIGHT_DTYPES:
            raise ValueError(f"unknown weight dtype {requested!r}")
        return requested
    if device.type == "cpu":
        return "fp32"
    return file_fp8 or "bf16"


def compute_dtype_for(device: torch.device, weight_dtype: str) -> torch.dtype:
    """Activation dtype shared by every component: fp32 on CPU, bf16 on CUDA.

    An explicit "fp32" keeps full precision on any device; a GPU without bf16 gets fp16.
    """
    if device.type == "cpu" or weight_dtype == "fp32":
        return torch.float32
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def storage_dtype(weight_dtype: str) -> torch.dtype:
    """The torch dtype for a resolved weight_dtype id."""
    return WEIGHT_DTYPES[weight_dtype]


def apply_weight_storage(
    model: torch.nn.Module, storage: torch.dtype, compute: torch.dtype
) -> None:
    """Store the model's castable layers in `storage`, computing in `compute`.

    Call after anything that adds layers to the model (LoRA), never before: the casting
    hooks only wrap the layers that exist when it runs.
    """
    if any(p.dtype != compute for p in model.parameters()):
        model.to(dtype=compute)
    if storage == compute:
        return
    apply_layerwise_casting(
        model,
        storage_dtype=storage,
        compute_dtype=compute,
        skip_modules_pattern=HIGH_PRECISION_PATTERNS,
        skip_modules_classes=HIGH_PRECISION_CLASSES,
    )


def storage_report(model: torch.nn.Module) -> StorageReport:
    """Count parameters stored in fp8 versus any other dtype."""
    fp8 = other = 0
    for param in model.parameters():
        if param.dtype in FP8_DTYPES:
            fp8 += param.numel()
        else:
            other += param.numel()
    return StorageReport(fp8=fp8, other=other)
