"""Base sampling stage: text-to-image (or img2img from an upload) over the Flux transformer."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from engine.flux import latents
from engine.flux.sampling import Conditioning, SamplingPass, pass_sigmas, run_pass
from engine.graph import StageContext
from engine.identity.models import identity_models
from engine.identity.pose_sampling import PoseSampling, pose_control
from engine.identity.pulid_passes import (
    PulidPass,
    pulid_during,
    pulid_pass,
    pulid_sampling,
    with_identity_embed,
)
from engine.identity.pulid_sampling import PulidSampling
from engine.lora import LoraParams
from engine.recipe import Recipe
from engine.regions.sampling import RegionSampling, pass_loras, pass_window, region_sampling
from engine.sizes import render_size


@dataclass(frozen=True)
class BaseParams:
    sampling: SamplingPass
    transformer: str
    vae: str
    weight_dtype: str
    loras: LoraParams
    precision: str = ""  # fp8 compute rounds differently from fp8 storage
    pulid: PulidSampling | None = None  # PuLID-FLUX's weight and window, when it acts
    pose: PoseSampling | None = None  # the pose ControlNet, when it acts
    regions: RegionSampling | None = None  # regional prompts and their LoRAs


@dataclass(frozen=True)
class LatentResult:
    """Packed latents (B, L, 64) of a width x height image, in the transformer's space."""

    tokens: torch.Tensor
    width: int
    height: int


class BaseStage:
    name = "base"
    version = 3
    uses_models = True

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        # "redux" forwards to "text" when Redux is off (the graph names the input "text").
        prompt = "regions" if recipe.regions.active() else "redux"
        inputs = (prompt, "image") if recipe.source.kind == "img2img" else (prompt,)
        return with_identity_embed(inputs, recipe.identity.pulid_active())

    def enabled(self, recipe: Recipe) -> bool:
        return True

    def select(self, recipe: Recipe, env: Any) -> BaseParams:
        files = env.flux_files()
        sampling = base_sampling(recipe)
        vae = files.vae if sampling.start_from_image else ""
        loras = env.loras().stage_params(recipe.prompt.loras, "transformer")
        return BaseParams(
            sampling, files.transformer, vae, files.weight_dtype, loras, files.precision,
            pulid_sampling(recipe, env), pose_sampling(recipe, env), region_sampling(recipe, env),
        )  # fmt: skip

    def run(self, ctx: StageContext, p: BaseParams, upstream: dict) -> LatentResult:
        bundle = ctx.services.flux_bundle()
        s = p.sampling
        init = None
        if s.start_from_image:
            init = encode_image(bundle, upstream["image"], s.width, s.height, len(s.seeds))
        extras = PassExtras(p.loras, p.regions, pulid_pass(ctx, p.pulid, upstream))
        control = pose_on(ctx, bundle, p)
        tokens = sample(ctx, self.name, bundle, conditioning(upstream), s, init, extras, control)
        return LatentResult(tokens, s.width, s.height)


@dataclass(frozen=True)
class PassExtras:
    """What acts on a Flux pass besides its prompt: the LoRA stack, the regions and PuLID."""

    loras: LoraParams
    regions: RegionSampling | None
    pulid: PulidPass | None


def sample(
    ctx: StageContext, stage: str, bundle, cond: Conditioning, s: SamplingPass,
    init: torch.Tensor | None, extras: PassExtras, control: Callable | None = None,
) -> torch.Tensor:  # fmt: skip
    """run_pass with the LoRA stack (and each region's LoRAs and mask) and PuLID on."""
    with (
        pass_loras(ctx, bundle, extras.regions, cond, extras.loras),
        pulid_during(extras.pulid, bundle.transformer, s),
    ):
        window = pass_window(extras.regions, s)
        return run_pass(ctx, stage, bundle, cond, s, init, control=control, region_window=window)


def pose_sampling(recipe: Recipe, env: Any) -> PoseSampling | None:
    """The pose ControlNet's settings for the base pass, or None when it does not act."""
    if not recipe.identity.pose_active():
        return None
    pose = recipe.identity.pose
    spec = identity_models(env).controlnet_spec(pose.controlnet)
    image = env.images.require(pose.image)
    return PoseSampling(pose.controlnet, spec.identity, image, pose.strength, pose.start, pose.end)


def pose_on(ctx: StageContext, bundle, p: BaseParams) -> Callable | None:
    """FluxDenoiser's ControlNet hook for the pass (None without a pose)."""
    if p.pose is None:
        return None
    models = identity_models(ctx.services)
    controlnet = models.controlnet(p.pose.name)
    picture = ctx.services.images.load(p.pose.image).convert("RGB")
    sigmas, _ = pass_sigmas(p.sampling)
    size = (p.sampling.width, p.sampling.height)
    return pose_control(bundle, controlnet, picture, p.pose, size, sigmas)


def conditioning(upstream: dict) -> Conditioning:
    """The prompt conditioning: the regional one when regions are on, else with Redux tokens
    when that stage ran, else the text alone."""
    for name in ("regions", "redux"):
        if name in upstream:
            return upstream[name]
    return upstream["text"]


def base_sampling(recipe: Recipe) -> SamplingPass:
    """The base pass: render size, one seed per batch image, the Settings tab."""
    width, height = render_size(recipe.prompt)
    seeds = tuple(recipe.settings.seed + i for i in range(recipe.prompt.batch_size))
    settings = recipe.settings
    from_image = recipe.source.kind == "img2img"
    if not from_image:  # denoise only means something with a start image
        settings = dataclasses.replace(settings, denoise=1.0)
    return SamplingPass(width, height, seeds, settings, from_image)


@torch.inference_mode()
def encode_image(bundle, image: torch.Tensor, width: int, height: int, batch: int):
    """An RGB (1, 3, H, W) image in [0, 1], fitted to width x height, as packed latents."""
    return encode_pixels(bundle, fit_cover(image, width, height)).expand(batch, -1, -1)


@torch.inference_mode()
def encode_pixels(bundle, image: torch.Tensor) -> torch.Tensor:
    """An RGB (1, 3, H, W) image in [0, 1] through the VAE as packed latents (1, L, 64)."""
    vae = bundle.vae
    posterior = vae.encode((image * 2 - 1).to(vae.device, vae.dtype)).latent_dist
    z = (posterior.mode().float() - vae.config.shift_factor) * vae.config.scaling_factor
    return latents.pack(z)


def fit_cover(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Scale to cover width x height and centre-crop (bicubic, antialiased when shrinking)."""
    _, _, h, w = image.shape
    scale = max(width / w, height / h)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    resized = F.interpolate(image, size=(new_h, new_w), mode="bicubic", antialias=True)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[:, :, top : top + height, left : left + width].clamp(0, 1)
