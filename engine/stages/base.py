"""Base sampling stage: text-to-image with our own denoise loop over the Flux transformer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.flux import latents
from engine.flux.denoiser import FluxDenoiser
from engine.flux.samplers import SAMPLERS
from engine.flux.schedules import flux_mu, flux_sigmas
from engine.graph import StageContext
from engine.recipe import Recipe
from engine.sizes import render_size


@dataclass(frozen=True)
class BaseParams:
    width: int
    height: int
    seeds: tuple[int, ...]
    sampler: str
    scheduler: str
    steps: int
    denoise: float
    guidance: float
    base_shift: float
    max_shift: float
    transformer: str
    weight_dtype: str


@dataclass(frozen=True)
class LatentResult:
    """Packed latents (B, L, 64) of a width x height image."""

    tokens: torch.Tensor
    width: int
    height: int


class BaseStage:
    name = "base"
    version = 1
    uses_models = True

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return ("text",)

    def enabled(self, recipe: Recipe) -> bool:
        return True

    def select(self, recipe: Recipe, env: Any) -> BaseParams:
        s, files = recipe.settings, env.flux_files()
        width, height = render_size(recipe.prompt)
        seeds = tuple(s.seed + i for i in range(recipe.prompt.batch_size))
        return BaseParams(
            width,
            height,
            seeds,
            s.sampler,
            s.scheduler,
            s.steps,
            s.denoise,
            s.guidance,
            s.base_shift,
            s.max_shift,
            files.transformer,
            files.weight_dtype,
        )

    def run(self, ctx: StageContext, p: BaseParams, upstream: dict) -> LatentResult:
        bundle = ctx.services.flux_bundle()
        device = bundle.device
        mu = flux_mu(p.width, p.height, p.base_shift, p.max_shift)
        sigmas = flux_sigmas(p.scheduler, p.steps, mu, p.denoise)
        noise = latents.initial_noise(list(p.seeds), p.height, p.width).to(device)
        x = noise * sigmas[0].item()  # empty latent: x = sigma0 * noise + (1 - sigma0) * 0
        model = FluxDenoiser(
            bundle.transformer,
            upstream["text"],
            latents.image_ids(p.height, p.width, device),
            p.guidance,
            bundle.compute_dtype,
        )
        total = len(sigmas) - 1
        ctx.step(self.name, 0, total, "sampling")

        def on_step(i: int, x_now: torch.Tensor, x0: torch.Tensor) -> None:
            ctx.step(self.name, i + 1, total, "sampling")

        generator = torch.Generator("cpu").manual_seed(p.seeds[0])
        out = SAMPLERS[p.sampler](model, x, sigmas.to(device), generator, on_step)
        ctx.count("model calls", model.calls)
        return LatentResult(out, p.width, p.height)
