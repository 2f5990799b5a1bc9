"""Decode stage: Flux latents through the VAE into RGB in [0, 1] (+ the Latent tab's sharpen)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.color.sharpen import sharpen
from engine.flux import latents
from engine.graph import StageContext
from engine.recipe import Recipe


@dataclass(frozen=True)
class DecodeParams:
    vae: str
    weight_dtype: str
    sharpen: float


class DecodeStage:
    name = "decode"
    version = 2
    uses_models = True

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return ("latent",)

    def enabled(self, recipe: Recipe) -> bool:
        return True

    def select(self, recipe: Recipe, env: Any) -> DecodeParams:
        files = env.flux_files()
        alpha = recipe.latent.sharpen if recipe.latent.enabled else 0.0
        return DecodeParams(files.vae, files.weight_dtype, alpha)

    @torch.inference_mode()
    def run(self, ctx: StageContext, params: DecodeParams, upstream: dict) -> torch.Tensor:
        bundle = ctx.services.flux_bundle()
        (result,) = upstream.values()
        ctx.step(self.name, 0, 1, "decoding")
        images = decode_tokens(bundle.vae, result.tokens, result.height, result.width)
        return sharpen(images, params.sharpen)


@torch.inference_mode()
def decode_tokens(vae, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Packed latents of a width x height image through the VAE: RGB (B, 3, H, W) in [0, 1]."""
    z = latents.unpack(tokens, height, width) / vae.config.scaling_factor + vae.config.shift_factor
    images = vae.decode(z.to(vae.dtype), return_dict=False)[0]
    return ((images.float().clamp(-1, 1) + 1) / 2).contiguous()
