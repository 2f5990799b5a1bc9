"""One sampling step's ControlNet residuals for the Flux transformer.

As FluxControlNetPipeline does each step, the ControlNet sees the step's noisy latents, timestep,
guidance and prompt plus the packed control tokens, and returns one residual per double block
(and per single block) that FluxTransformer2DModel adds to its image stream, scaled by the
strength. Outside the start/end window, or at strength 0, it is not called at all and the
transformer runs exactly as without a ControlNet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import FluxControlNetModel

from engine.errors import ModelNotFoundError
from engine.identity.controlnet import HOW_TO_GET, UNION_POSE_MODE

# The transformer inputs the ControlNet reads (the names FluxDenoiser passes the transformer).
STEP_INPUTS = (
    "hidden_states", "timestep", "guidance", "pooled_projections", "encoder_hidden_states",
    "txt_ids", "img_ids",
)  # fmt: skip


@dataclass(frozen=True)
class ControlParams:
    """Strength, the window of steps (fractions, as ComfyUI's start/end percent and diffusers'
    control_guidance_start/end) and the union mode (used only by union models)."""

    strength: float = 0.85
    start: float = 0.0
    end: float = 0.8
    mode: int = UNION_POSE_MODE

    def __post_init__(self) -> None:
        if not (math.isfinite(self.strength) and self.strength >= 0):
            raise ValueError(f"ControlNet strength must be 0 or more, not {self.strength}")
        if not 0 <= self.start <= self.end <= 1:
            raise ValueError(f"ControlNet window {self.start}..{self.end} is not within 0..1")


@dataclass(frozen=True)
class ControlResiduals:
    """What FluxTransformer2DModel takes as controlnet_block_samples and
    controlnet_single_block_samples (None: nothing added)."""

    block_samples: list[torch.Tensor] | None = None
    single_block_samples: list[torch.Tensor] | None = None

    @property
    def active(self) -> bool:
        return self.block_samples is not None or self.single_block_samples is not None

    def transformer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the transformer call."""
        return {
            "controlnet_block_samples": self.block_samples,
            "controlnet_single_block_samples": self.single_block_samples,
        }


def in_window(params: ControlParams, step: int, total_steps: int) -> bool:
    """Whether step `step` (0-based) of `total_steps` lies in the window: diffusers' rule, which
    drops a step when it starts before `start` or ends after `end`."""
    if total_steps <= 0 or not 0 <= step < total_steps:
        raise ValueError(f"step {step} of {total_steps}")
    return not (step / total_steps < params.start or (step + 1) / total_steps > params.end)


def step_for_sigma(sigmas: torch.Tensor, sigma: float) -> int:
    """The step a model call at `sigma` belongs to: the last schedule entry at or above it (the
    denoiser only sees sigma; samplers with two calls a step also call at the next sigma)."""
    steps = len(sigmas) - 1
    at_or_above = int((sigmas[:steps] >= sigma - 1e-7).sum().item())
    return min(max(at_or_above - 1, 0), steps - 1)


def control_residuals(
    controlnet: FluxControlNetModel,
    control: torch.Tensor,
    inputs: Mapping[str, Any],
    params: ControlParams,
    step: int,
    total_steps: int,
) -> ControlResiduals:
    """The ControlNet's residuals for this step's transformer inputs (`control`: packed control
    tokens (1 or B, L, 64); hidden_states: the noisy latents, without FLUX.1 Fill's extra
    channels); empty outside the window and at strength 0."""
    if params.strength == 0 or not in_window(params, step, total_steps):
        return ControlResiduals()
    missing = [name for name in STEP_INPUTS if name not in inputs]
    if missing:
        raise ValueError(f"the step's inputs lack {', '.join(missing)}")
    hidden = inputs["hidden_states"]
    if control.shape[-2:] != hidden.shape[-2:]:
        raise ValueError(
            f"control tokens {tuple(control.shape)} do not fit the latents {tuple(hidden.shape)}: "
            "prepare the control image at the render size"
        )
    with torch.inference_mode():
        blocks, singles = controlnet(**_controlnet_inputs(controlnet, control, inputs, params))
    return ControlResiduals(_to(blocks, hidden.dtype), _to(singles, hidden.dtype))


def _controlnet_inputs(
    controlnet: FluxControlNetModel,
    control: torch.Tensor,
    inputs: Mapping[str, Any],
    params: ControlParams,
) -> dict[str, Any]:
    """The step's inputs in the ControlNet's dtype. No attention mask: a union model prepends a
    mode token, so a mask made for the transformer's text would not fit (ComfyUI passes none)."""
    dtype = controlnet.dtype
    hidden = inputs["hidden_states"]
    batch = hidden.shape[0]
    guidance = _guidance(controlnet, inputs.get("guidance"), batch)
    return {
        "hidden_states": hidden.to(dtype),
        "controlnet_cond": control.to(hidden.device, dtype).expand(batch, -1, -1),
        "controlnet_mode": _mode(controlnet, params.mode, batch, hidden.device),
        "conditioning_scale": params.strength,
        "encoder_hidden_states": inputs["encoder_hidden_states"].to(dtype),
        "pooled_projections": inputs["pooled_projections"].to(dtype),
        "timestep": inputs["timestep"].to(dtype),
        "img_ids": inputs["img_ids"],
        "txt_ids": inputs["txt_ids"],
        "guidance": guidance,
        "return_dict": False,
    }


def _guidance(
    controlnet: FluxControlNetModel, guidance: torch.Tensor | None, batch: int
) -> torch.Tensor | None:
    """The distilled guidance when the ControlNet embeds it (FLUX.1-dev ControlNets do)."""
    if not controlnet.config.guidance_embeds:
        return None
    if guidance is None:
        raise ValueError("this ControlNet embeds guidance: pass the step's guidance tensor")
    return guidance.to(torch.float32).expand(batch)


def _mode(
    controlnet: FluxControlNetModel, mode: int, batch: int, device: torch.device
) -> torch.Tensor | None:
    """(B, 1) mode indices for a union model; None for a model without a mode embedding."""
    if not controlnet.union:
        return None
    modes = controlnet.config.num_mode
    if not 0 <= mode < modes:
        raise ValueError(f"union mode {mode} is not one of the model's {modes} modes")
    return torch.full((batch, 1), mode, dtype=torch.long, device=device)


def _to(samples: Any, dtype: torch.dtype) -> list[torch.Tensor] | None:
    return None if samples is None else [sample.to(dtype) for sample in samples]


def check_fits_transformer(controlnet: FluxControlNetModel, transformer: torch.nn.Module) -> None:
    """Raise ModelNotFoundError when the ControlNet was made for another transformer width."""
    ours, theirs = controlnet.config, transformer.config
    width = ours.num_attention_heads * ours.attention_head_dim
    expected = theirs.num_attention_heads * theirs.attention_head_dim
    if (width, ours.joint_attention_dim) != (expected, theirs.joint_attention_dim):
        raise ModelNotFoundError(
            f"The ControlNet is {width} wide but the Flux transformer is {expected} wide: use a "
            f"ControlNet made for this FLUX.1 model. {HOW_TO_GET}"
        )
