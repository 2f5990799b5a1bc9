"""Precision rules: which dtype weights are stored in and which dtype activations use.

fp8 storage uses diffusers' layerwise casting (weights stay fp8 between layers and are cast
to the compute dtype just for their own forward), with our own skip list: diffusers' default
for Flux skips every module whose name contains "norm", which keeps the adaLN modulation
Linears (norm1.linear, norm1_context.linear, norm.linear, norm_out.linear, ~27 % of the real
transformer) in high precision. We keep only positional embeddings and the norm layers
themselves (LayerNorm / RMSNorm / GroupNorm weights) out of fp8.

fp8 compute (fp8_compute.py) goes further where the GPU has fp8 tensor cores: the Linears
multiply in fp8 instead of casting their weights back. precision_path() chooses between the
three paths from the device's facts, so tests can inject any device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.hooks import apply_layerwise_casting
from diffusers.models.normalization import RMSNorm as DiffusersRMSNorm

from engine.models.fp8_compute import apply_fp8_compute
from engine.speed_options import FP8_COMPUTE_MODES, check_choice

WEIGHT_DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
# How the transformer's Linears hold and use their weights.
FULL, FP8_STORAGE, FP8_COMPUTE = "full", "fp8-storage", "fp8-compute"
# fp8 tensor cores: Ada (8.9), Hopper (9.0) and later.
FP8_MATMUL_CAPABILITY = (8, 9)
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


@dataclass(frozen=True)
class DeviceFacts:
    """What the precision choice needs to know about a device."""

    kind: str  # "cpu" | "cuda" | ...
    name: str = ""
    capability: tuple[int, int] | None = None  # CUDA compute capability

    @classmethod
    def of(cls, device: torch.device) -> DeviceFacts:
        if device.type != "cuda":
            return cls(device.type, device.type)
        index = device.index if device.index is not None else torch.cuda.current_device()
        return cls(
            "cuda", torch.cuda.get_device_name(index), torch.cuda.get_device_capability(index)
        )

    @property
    def fp8_matmul(self) -> bool:
        """Whether the device has fp8 tensor cores for scaled matmuls."""
        return self.kind == "cuda" and (self.capability or (0, 0)) >= FP8_MATMUL_CAPABILITY


def precision_path(weight_dtype: str, facts: DeviceFacts, fp8_compute: str = "auto") -> str:
    """FULL (weights in the compute dtype), FP8_STORAGE or FP8_COMPUTE for a resolved
    weight_dtype. fp8_compute "auto" computes in fp8 where the device has fp8 tensor cores,
    "off" never, "on" always (a CPU emulates it: for tests). e5m2 weights stay storage-only:
    the scaled matmul here takes e4m3 weights."""
    check_choice("fp8 compute", fp8_compute, FP8_COMPUTE_MODES)
    if storage_dtype(weight_dtype) not in FP8_DTYPES:
        return FULL
    if weight_dtype != "fp8_e4m3fn" or fp8_compute == "off":
        return FP8_STORAGE
    if fp8_compute == "on" or facts.fp8_matmul:
        return FP8_COMPUTE
    return FP8_STORAGE


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
    model: torch.nn.Module, storage: torch.dtype, compute: torch.dtype, path: str = FP8_STORAGE
) -> None:
    """Store the model's castable layers in `storage`, computing in `compute`; with
    path FP8_COMPUTE its Linears become fp8 matmul layers instead of casting ones.

    Call after anything that adds layers to the model (LoRA), never before: the casting
    hooks only wrap the layers that exist when it runs.
    """
    _to_compute(model, compute)
    if storage == compute or path == FULL:
        return
    if path == FP8_COMPUTE:
        # Casting hooks on these layers would hand _scaled_mm bf16 weights: no hooks here.
        apply_fp8_compute(model, compute, HIGH_PRECISION_PATTERNS)
        return
    _cast_layers(model, storage, compute, HIGH_PRECISION_PATTERNS)


def _to_compute(model: torch.nn.Module, compute: torch.dtype) -> None:
    if any(p.dtype != compute for p in model.parameters()):
        model.to(dtype=compute)


def _cast_layers(
    model: torch.nn.Module, storage: torch.dtype, compute: torch.dtype, skip: tuple[str, ...]
) -> None:
    """diffusers' layerwise casting with our skip list: `storage` at rest, `compute` in use."""
    apply_layerwise_casting(
        model,
        storage_dtype=storage,
        compute_dtype=compute,
        skip_modules_pattern=skip,
        skip_modules_classes=HIGH_PRECISION_CLASSES,
    )


# transformers' T5 feed-forward casts its input to the dtype of `wo`'s weight (kept in fp32 by
# _keep_in_fp32_modules in fp16 setups): an fp8-stored `wo` would get fp8 activations.
# `encoder.embed_tokens` is `shared` under a second name: both stay out of fp8.
T5_HIGH_PRECISION_PATTERNS = (
    *HIGH_PRECISION_PATTERNS,
    r"\.wo$",
    "shared",
    "embed_tokens",
    "relative_attention",
)


def keeps_t5_fp8(file_fp8: str, scaled: bool, device: torch.device) -> bool:
    """Whether a T5 file's fp8 weights stay fp8 in memory: on a GPU, for plain e4m3fn files,
    whose values come back exactly. A scaled file's weights (fp8 values x a scale) are off the
    fp8 grid, and stored as plain e4m3fn again most T5-XXL weights (|w| < 2^-6) would fall into
    fp8's coarse subnormal range: those stay in the compute dtype, as on a CPU."""
    return device.type == "cuda" and file_fp8 == "fp8_e4m3fn" and not scaled


def apply_t5_fp8_storage(t5: torch.nn.Module, compute: torch.dtype) -> None:
    """Store T5's Linears in fp8 e4m3fn (about 60 % of its bytes), computing in `compute`."""
    _to_compute(t5, compute)
    _cast_layers(t5, torch.float8_e4m3fn, compute, T5_HIGH_PRECISION_PATTERNS)


def storage_report(model: torch.nn.Module) -> StorageReport:
    """Count parameters stored in fp8 versus any other dtype."""
    fp8 = other = 0
    for param in model.parameters():
        if param.dtype in FP8_DTYPES:
            fp8 += param.numel()
        else:
            other += param.numel()
    return StorageReport(fp8=fp8, other=other)
