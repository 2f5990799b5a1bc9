"""The FLUX.1 Fill transformer (flux1-fill-dev) for the Refine passes: found in the models
folder beside the base transformer (diffusion_models/ or unet/), recognised by its 384 input
channels, loaded by the same single-file path. Its inputs are in engine/flux/fill.py."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import FluxTransformer2DModel

from engine.models import loaders, tiny
from engine.models.locate import find_in_comfy
from engine.models.specs import Trail, WeightSpec

TINY_FILL_SPEC = WeightSpec(
    component="fill", source="tiny", identity="tiny:fill", label="tiny random demo model"
)
HOW_TO_GET_FILL = (
    "Put flux1-fill-dev.safetensors (BFL's FLUX.1 Fill [dev], or an fp8 copy) in the models "
    "folder's diffusion_models/ to use it."
)


def find_fill(models_dir: Path | None, tiny_models: bool = False) -> WeightSpec | None:
    """The Fill file in the models folder (flux1-fill* first), the tiny one in demo mode,
    or None."""
    if tiny_models:
        return TINY_FILL_SPEC
    if models_dir is None:
        return None
    return find_in_comfy(models_dir, "fill", "", Trail())


def load_fill(spec: WeightSpec, dtype: torch.dtype) -> FluxTransformer2DModel:
    """The Fill transformer in `dtype` (fp8 storage is applied afterwards by the caller)."""
    if spec.source == "tiny":
        return loaders.cast(tiny.build_tiny_fill(), dtype)
    return loaders.load_transformer(spec, dtype)
