"""Decode stage: Flux latents through the VAE into RGB in [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.flux import latents
from engine.graph import StageContext
from engine.recipe import Recipe


@dataclass(frozen=True)
class DecodeParams:
    vae: str
    weight_dtype: str


class DecodeStage:
    name = "decode"
    version = 1
    uses_models = True

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return ("base",)

    def enabled(self, recipe: Recipe) -> bool:
        return True

    def select(self, recipe: Recipe, env: Any) -> DecodeParams:
        files = env.flux_files()
        return DecodeParams(files.vae, files.weight_dtype)

    @torch.inference_mode()
    def run(self, ctx: StageContext, params: DecodeParams, upstream: dict) -> torch.Tensor:
        bundle = ctx.services.flux_bundle()
        vae = bundle.vae
        base = upstream["base"]
        z = latents.unpack(base.tokens, base.height, base.width)
        z = z / vae.config.scaling_factor + vae.config.shift_factor
        ctx.step(self.name, 0, 1, "decoding")
        images = vae.decode(z.to(vae.dtype), return_dict=False)[0]
        return ((images.float().clamp(-1, 1) + 1) / 2).contiguous()
