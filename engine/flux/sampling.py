"""One Flux sampling pass, shared by the base stage and the latent second pass."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from engine.flux import latents
from engine.flux.denoiser import FluxDenoiser
from engine.flux.guidance import flux_cfg_denoiser
from engine.flux.inpaint import NoiseMask, masked_denoiser
from engine.flux.preview import preview_image
from engine.flux.prompt import PromptEmbeddings
from engine.flux.samplers import SAMPLERS
from engine.flux.schedules import flux_mu, flux_sigmas
from engine.flux.sigma_modifiers import apply_sigma_modifiers
from engine.graph import StageContext
from engine.recipe import SettingsParams

PREVIEW_EVERY = 1


@dataclass(frozen=True)
class Conditioning:
    """What the text stage hands to sampling: the prompt and, for true CFG, the negative."""

    positive: PromptEmbeddings
    negative: PromptEmbeddings | None = None


@dataclass(frozen=True)
class SamplingPass:
    """Everything that determines one pass (hashable, part of a stage's params)."""

    width: int
    height: int
    seeds: tuple[int, ...]
    settings: SettingsParams
    start_from_image: bool = False


def pass_sigmas(p: SamplingPass) -> tuple[torch.Tensor, float]:
    s = p.settings
    mu = flux_mu(p.width, p.height, s.base_shift, s.max_shift)
    return flux_sigmas(s.scheduler, s.steps, mu, s.denoise), mu


def run_pass(
    ctx: StageContext,
    stage: str,
    bundle,
    cond: Conditioning,
    p: SamplingPass,
    init: torch.Tensor | None = None,
    mask: NoiseMask | None = None,
    concat: torch.Tensor | None = None,
    control: Callable[[dict, torch.Tensor], dict] | None = None,
    region_window: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Sample packed latents (B, L, 64); `init` (packed, model space) starts img2img; `mask`
    re-renders only where it is 1 and keeps `init` elsewhere (specs §8); `concat` holds
    FLUX.1 Fill's extra inputs when the bundle's transformer is the Fill model; `control`
    adds inputs to every transformer call (a ControlNet's residuals); `region_window` is the
    sigma range where a regional prompt's attention mask acts."""
    s, device = p.settings, bundle.device
    sigmas, mu = pass_sigmas(p)
    noise, generators = latents.initial_noise(list(p.seeds), p.height, p.width)
    noise = noise.to(device)
    if len(sigmas) == 0:
        return init if init is not None else noise
    sigma0 = sigmas[0].item()
    clean = init if init is not None else torch.zeros_like(noise)
    x = sigma0 * noise + (1 - sigma0) * clean
    transformer = _transformer(bundle, s, mu)
    denoiser = FluxDenoiser(
        transformer, cond.positive, latents.image_ids(p.height, p.width, device),
        s.guidance, bundle.compute_dtype, attention=bundle.runtime.attention, concat=concat,
        control=control, region_window=region_window,
    )  # fmt: skip
    ctx.note(bundle.describe_runtime())
    model = flux_cfg_denoiser(denoiser, cond.negative, s.cfg)
    masked = None
    if mask is not None:  # inside the sigma modifiers, where ComfyUI's KSamplerX0Inpaint sits
        model = masked = masked_denoiser(model, mask, noise, clean, sigmas, mu, p.height, p.width)
    model = apply_sigma_modifiers(model, sigmas, s, mu)
    sampler = SAMPLERS[s.sampler]
    if s.sampler == "dpmpp_sde":
        sampler = partial(sampler, mu=mu)
    total = len(sigmas) - 1
    ctx.step(stage, 0, total, "sampling")

    def on_step(i: int, x_now: torch.Tensor, x0: torch.Tensor) -> None:
        preview = preview_image(x0, p.height, p.width) if ctx.progress else None
        ctx.step(stage, i + 1, total, "sampling", preview)

    out = sampler(model, x, sigmas.to(device), generators, on_step)
    if masked is not None:
        out = masked.settle(out)
    ctx.count("model calls", model_calls(model))
    if transformer is not bundle.transformer:
        ctx.count("cache hits", transformer.hits)
    return out


def _transformer(bundle, s: SettingsParams, mu: float):
    fb = s.first_block_cache
    if fb.enabled and fb.threshold > 0:
        from engine.flux.fbcache import FirstBlockCache

        return FirstBlockCache(bundle.transformer, fb, mu)
    return bundle.transformer


def model_calls(model) -> int:
    """Transformer calls made through a (possibly wrapped) denoiser."""
    while not hasattr(model, "calls") and hasattr(model, "model"):
        model = model.model
    return getattr(model, "calls", 0)


def with_settings(p: SamplingPass, **changes) -> SamplingPass:
    return dataclasses.replace(p, settings=dataclasses.replace(p.settings, **changes))
