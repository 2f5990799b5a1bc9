"""Latent second pass (suite group 4, "Latent Noise Injection" panel; specs §10 mapping).

- upscale u: bicubic resize of the unpacked latent by u (sizes kept on Flux's 16 px grid),
  then an img2img pass at the new size, with mu recomputed for it;
- denoise d: that pass on the "simple" schedule, truncated ComfyUI-style;
- noise strength n: z <- z + n·eps before re-noising (InjectLatentNoise+, normalize off),
  eps seeded by noise_seed + i;
- rough<->smooth r: Detail Daemon on the pass with amount 0.5·(0.5 - r): 0.5 is neutral,
  higher is smoother (the suite's default 0.8 smooths a little);
- speed<->accuracy q: round(16 + 24q) steps and a first-block cache threshold 0.12·(1 - q)
  (q = 1 switches the cache off);
- guidance: the pass's Flux guidance. Sharpen is applied after decoding (decode stage).
The regions (their prompts, LoRAs and mask) act on it as on the base pass, laid over its size.
PuLID acts on the pass too when `identity.pulid.finishing` is on (engine/identity/pulid_passes.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from engine.flux import latents
from engine.flux.sampling import SamplingPass
from engine.graph import StageContext
from engine.identity.pulid_passes import (
    pulid_finishing,
    pulid_pass,
    with_identity_embed,
)
from engine.identity.pulid_sampling import PulidSampling
from engine.lora import LoraParams
from engine.recipe import DetailDaemonParams, FirstBlockCacheParams, LatentParams, Recipe
from engine.regions.sampling import RegionSampling, fitted, region_sampling
from engine.sizes import round_to_grid
from engine.stages.base import LatentResult, PassExtras, base_sampling, conditioning, sample

NEUTRAL_SMOOTHNESS = 0.5


@dataclass(frozen=True)
class LatentStageParams:
    upscale: float
    noise_strength: float
    noise_seed: int
    sampling: SamplingPass
    transformer: str
    weight_dtype: str
    loras: LoraParams
    precision: str = ""
    pulid: PulidSampling | None = None  # PuLID's weight and window, when it acts here
    regions: RegionSampling | None = None  # the regions' LoRAs and mask window


def second_pass_settings(recipe: Recipe) -> Any:
    """The Settings the second pass runs with, derived from the Latent panel."""
    lat: LatentParams = recipe.latent
    amount = 0.5 * (NEUTRAL_SMOOTHNESS - lat.rough_smooth)
    threshold = 0.12 * (1 - lat.speed_accuracy)
    return dataclasses.replace(
        recipe.settings,
        scheduler="simple",
        steps=lat.steps,
        denoise=lat.denoise,
        guidance=lat.guidance,
        detail_daemon=DetailDaemonParams(enabled=amount != 0, amount=amount),
        first_block_cache=FirstBlockCacheParams(enabled=threshold > 0, threshold=threshold),
    )


class LatentStage:
    name = "latent"
    version = 2
    uses_models = True

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        prompt = "regions" if recipe.regions.active() else "redux"
        return with_identity_embed(("base", prompt), recipe.identity.pulid_finishing())

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.latent.enabled and recipe.source.kind != "image"

    def select(self, recipe: Recipe, env: Any) -> LatentStageParams:
        files, lat = env.flux_files(), recipe.latent
        base = base_sampling(recipe)
        width = round_to_grid(base.width * lat.upscale)
        height = round_to_grid(base.height * lat.upscale)
        sampling = SamplingPass(width, height, base.seeds, second_pass_settings(recipe), True)
        return LatentStageParams(
            lat.upscale, lat.noise_strength, lat.noise_seed, sampling,
            files.transformer, files.weight_dtype,
            env.loras().stage_params(recipe.prompt.loras, "transformer"), files.precision,
            pulid_finishing(recipe, env), region_sampling(recipe, env),
        )  # fmt: skip

    def run(self, ctx: StageContext, p: LatentStageParams, upstream: dict) -> LatentResult:
        bundle = ctx.services.flux_bundle()
        base: LatentResult = upstream["base"]
        s = p.sampling
        z = latents.unpack(base.tokens, base.height, base.width)
        if (s.width, s.height) != (base.width, base.height):
            z = F.interpolate(z, size=(s.height // 8, s.width // 8), mode="bicubic")
        z = inject_noise(z, p.noise_strength, p.noise_seed)
        cond = fitted(conditioning(upstream), s.width, s.height)
        extras = PassExtras(p.loras, p.regions, pulid_pass(ctx, p.pulid, upstream))
        tokens = sample(ctx, self.name, bundle, cond, s, latents.pack(z), extras)
        return LatentResult(tokens, s.width, s.height)


def inject_noise(z: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """z + strength·eps with eps ~ N(0, I) from a CPU generator seeded seed + i per image."""
    if strength == 0:
        return z
    noise = [
        torch.randn(z.shape[1:], generator=torch.Generator("cpu").manual_seed(seed + i))
        for i in range(z.shape[0])
    ]
    return z + strength * torch.stack(noise).to(z.device, z.dtype)
