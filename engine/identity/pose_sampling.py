"""The pose ControlNet during a Flux pass: the pose picture's control tokens at the render
size, and a per-call hook for FluxDenoiser that adds the ControlNet's residuals inside the
window (control_step.py), so the transformer runs exactly as without one elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from engine.identity.control_image import pose_control_tokens
from engine.identity.control_step import (
    ControlParams,
    check_fits_transformer,
    control_residuals,
    step_for_sigma,
)


@dataclass(frozen=True)
class PoseSampling:
    """What a sampling stage needs to apply the pose ControlNet (part of its cache key)."""

    name: str  # the ControlNet file under <models>/controlnet/ ("" = the first found)
    controlnet: str  # its identity
    image: str  # the pose picture's digest
    strength: float
    start: float
    end: float


def pose_control(
    bundle, controlnet, picture: Image.Image, params: PoseSampling, size: tuple[int, int],
    sigmas: torch.Tensor,
) -> Callable[[dict, torch.Tensor], dict]:  # fmt: skip
    """FluxDenoiser's `control` hook for one pass over a width x height image."""
    check_fits_transformer(controlnet, bundle.transformer)
    width, height = size
    with torch.inference_mode():
        tokens = pose_control_tokens(bundle.vae, picture, width, height)
    tokens = tokens.to(bundle.device, bundle.compute_dtype)
    window = ControlParams(params.strength, params.start, params.end)
    total = len(sigmas) - 1

    def residuals(inputs: dict, sigma: torch.Tensor) -> dict:
        step = step_for_sigma(sigmas, float(torch.as_tensor(sigma).reshape(-1)[0]))
        found = control_residuals(controlnet, tokens, inputs, window, step, total)
        return found.transformer_kwargs() if found.active else {}

    return residuals
