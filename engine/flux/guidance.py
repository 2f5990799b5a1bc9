"""True classifier-free guidance for Flux, on velocities.

ComfyUI mixes denoised outputs, x0_u + s * (x0_c - x0_u); since x0 = x - sigma * v is affine
in v, mixing velocities gives the same x0. At scale 1 the unconditional call is skipped,
as ComfyUI does, so the result is the conditional model's output bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from engine.flux.denoiser import FluxDenoiser
from engine.flux.prompt import PromptEmbeddings

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cfg_velocity(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """v_uncond + scale * (v_cond - v_uncond)."""
    return v_uncond + scale * (v_cond - v_uncond)


def needs_uncond(scale: float) -> bool:
    """Whether true CFG at `scale` needs a second (negative) model call."""
    return scale != 1.0


@dataclass
class TrueCfgVelocity:
    """A velocity function guided by a negative conditioning; one call when scale is 1."""

    cond: Velocity
    uncond: Velocity | None
    scale: float

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        v_cond = self.cond(x, sigma)
        if self.uncond is None or not needs_uncond(self.scale):
            return v_cond
        return cfg_velocity(v_cond, self.uncond(x, sigma), self.scale)


@dataclass
class VelocityDenoiser:
    """A velocity function as a denoiser: x0 = x - sigma * v(x, sigma), as FluxDenoiser."""

    velocity: Velocity

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x - sigma.to(x.device, x.dtype) * self.velocity(x, sigma)


@dataclass
class FluxCfgDenoiser:
    """True CFG over a positive and a negative FluxDenoiser that share one transformer."""

    positive: FluxDenoiser
    negative: FluxDenoiser
    scale: float

    @property
    def calls(self) -> int:
        return self.positive.calls + self.negative.calls

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        guided = TrueCfgVelocity(self.positive.velocity, self.negative.velocity, self.scale)
        return guided(x, sigma)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x - sigma.to(x.device, x.dtype) * self.velocity(x, sigma)


def flux_cfg_denoiser(
    denoiser: FluxDenoiser, negative: PromptEmbeddings | None, scale: float
) -> FluxDenoiser | FluxCfgDenoiser:
    """The denoiser for true CFG: the conditional one itself when scale is 1 or no negative."""
    if negative is None or not needs_uncond(scale):
        return denoiser
    return FluxCfgDenoiser(denoiser, replace(denoiser, embeddings=negative, calls=0), scale)
