"""Reading single-file checkpoints (.safetensors / .sft): headers cheaply, tensors on demand.

Scaled fp8 files (ComfyUI "fp8_scaled": a `scaled_fp8` marker and a `<layer>.scale_weight`
or `<layer>.weight_scale` per Linear) are dequantised here, so every loader sees plain
weights whatever the file stored. GGUF files (gguf.py) are refused by name or content.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from engine.models.gguf import GGUF_REASON, is_gguf

SUFFIXES = (".safetensors", ".sft")
_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
# Tensors that only describe the scaled-fp8 format; none of them is a model weight.
_FORMAT_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant", "scaled_fp8")
# Integer / packed weight formats (int8, nvfp4) that we cannot dequantise (U8 is also the
# dtype of ComfyUI's `.comfy_quant` JSON tensors, hence the check on weights only).
_UNSUPPORTED_WEIGHT_DTYPES = {"I8", "U8"}


class CheckpointError(Exception):
    """A checkpoint that cannot be read; the message says why, without the path."""


@dataclass(frozen=True)
class Header:
    """Tensor names, shapes and dtypes of a safetensors file, read without its data."""

    path: Path
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]

    def has(self, key: str) -> bool:
        return key in self.shapes

    def prefix_of(self, anchor: str) -> str | None:
        """The prefix before `anchor` in the first key ending with it, or None."""
        for key in self.shapes:
            prefix = key[: len(key) - len(anchor)]
            if key.endswith(anchor) and (not prefix or prefix.endswith(".")):
                return prefix
        return None

    def count_blocks(self, stem: str) -> int:
        """How many numbered blocks `<stem><n>.` the file holds (highest number + 1; 0: none)."""
        numbers = self.block_numbers(stem)
        return numbers[-1] + 1 if numbers else 0

    def block_numbers(self, stem: str) -> list[int]:
        """The sorted block numbers n of the keys `<stem><n>.…` (a gap means a missing block)."""
        numbers = {
            int(key[len(stem) :].split(".", 1)[0])
            for key in self.shapes
            if key.startswith(stem) and key[len(stem) :].split(".", 1)[0].isdigit()
        }
        return sorted(numbers)


def is_scaled_fp8(header: Header) -> bool:
    """Whether the file is ComfyUI "fp8_scaled" (a marker or per-layer weight scales)."""
    return any(k.endswith(("scaled_fp8", *_SCALE_SUFFIXES)) for k in header.shapes)


def read_header(path: Path) -> Header:
    """Read the header only; a truncated or foreign file raises CheckpointError."""
    if is_gguf(path):  # by name, or by content under a .safetensors name
        raise CheckpointError(GGUF_REASON)
    if path.suffix.lower() not in SUFFIXES:
        raise CheckpointError(f"is not a .safetensors/.sft file ({path.suffix or 'no suffix'})")
    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes, dtypes = {}, {}
            names = handle.keys()  # a safetensors handle is not iterable itself
            for key in names:
                view = handle.get_slice(key)
                shapes[key] = tuple(view.get_shape())
                dtypes[key] = view.get_dtype()
    except Exception as exc:  # safetensors raises its own SafetensorError, not OSError
        raise CheckpointError(f"cannot be read ({_short(exc)}); it may be truncated") from exc
    return Header(path=path, shapes=shapes, dtypes=dtypes)


def read_tensors(header: Header, prefix: str = "", dtype: torch.dtype | None = None) -> dict:
    """Tensors whose key starts with `prefix` (prefix removed), scaled fp8 dequantised.

    `dtype` converts floating tensors (after dequantising); None keeps the file's dtypes.
    Tensors are converted one at a time, so peak memory is the result plus one tensor.
    """
    keys = [k for k in header.shapes if k.startswith(prefix)]
    unsupported = [
        k for k in keys if k.endswith(".weight") and header.dtypes[k] in _UNSUPPORTED_WEIGHT_DTYPES
    ]
    if unsupported:
        raise CheckpointError(
            f"stores {header.dtypes[unsupported[0]]} quantised weights (e.g. {unsupported[0]}), "
            "which this studio cannot load; use a bf16, fp16 or fp8 file"
        )
    try:
        with safe_open(str(header.path), framework="pt") as handle:
            scales = {k: handle.get_tensor(k) for k in keys if k.endswith(_SCALE_SUFFIXES)}
            out = {}
            for key in keys:
                if key.endswith(_SCALE_SUFFIXES) or key.endswith(_FORMAT_SUFFIXES):
                    continue
                tensor = _convert(handle.get_tensor(key), _scale_for(scales, key), dtype)
                out[key[len(prefix) :]] = tensor
    except Exception as exc:
        raise CheckpointError(f"cannot be read ({_short(exc)}); it may be damaged") from exc
    return out


def _convert(
    tensor: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype | None
) -> torch.Tensor:
    if scale is not None:
        tensor = _dequantise(tensor, scale, dtype or torch.float32)
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor


def _scale_for(scales: dict, key: str) -> torch.Tensor | None:
    if not key.endswith(".weight"):
        return None
    stem = key[: -len("weight")]
    for suffix in ("scale_weight", "weight_scale"):
        if stem + suffix in scales:
            return scales[stem + suffix]
    return None


def _dequantise(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """weight * scale in fp32 (per-tensor scalar or per-output-row scale), then `dtype`."""
    scale = scale.to(torch.float32)
    if scale.numel() > 1 and weight.dim() >= 2:
        scale = scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return (weight.to(torch.float32) * scale).to(dtype)


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
