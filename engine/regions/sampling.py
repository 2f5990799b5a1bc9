"""Regions during a Flux pass (the base pass and the latent pass): each region's model LoRA
on its tokens, the layout fitted to the pass's size, and the sigma window of the regional
attention mask."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch

from engine.flux.sampling import Conditioning, SamplingPass, pass_sigmas
from engine.graph import StageContext
from engine.lora import LoraParams
from engine.recipe import Recipe
from engine.regions.lora_tokens import RegionAdapters, region_loras
from engine.stages.text import apply_loras


@dataclass(frozen=True)
class RegionSampling:
    """What the base stage keys on for regions: the mask's step window and each region's
    model LoRA strengths (a CLIP strength keys that region's text stage instead)."""

    start: float
    end: float
    loras: tuple[LoraParams, ...]


def region_lora_params(recipe: Recipe, env: Any) -> tuple[LoraParams, ...]:
    """Each region's model LoRA slots, as a stage keys on them."""
    stack = env.loras()
    return tuple(stack.stage_params(r.loras, "transformer") for r in recipe.regions.regions)


def region_sampling(recipe: Recipe, env: Any) -> RegionSampling | None:
    regions = recipe.regions
    if not regions.active():
        return None
    return RegionSampling(regions.start, regions.end, region_lora_params(recipe, env))


def region_window(sigmas: torch.Tensor, start: float, end: float) -> tuple[float, float] | None:
    """(sigma_lo, sigma_hi] covering steps i with start·steps ≤ i < end·steps (None: no
    step); a sampler's calls between sigma_i and sigma_i+1 count as step i."""
    steps = len(sigmas) - 1
    first = math.ceil(start * steps - 1e-9)
    stop = math.ceil(end * steps - 1e-9)
    if steps <= 0 or first >= stop:
        return None
    return float(sigmas[stop]), float(sigmas[first])


@contextmanager
def regions_on(
    ctx: StageContext, bundle: Any, p: RegionSampling, layout: Any, main: LoraParams
) -> Iterator[None]:
    """The main stack on the whole image and each region's LoRAs on its tokens."""
    stack = ctx.services.loras()
    matches, weights = stack.apply_regions(bundle, main.slots, [lp.slots for lp in p.loras])
    for match in matches:
        ctx.note(f"LoRA {match.line()}")
    tokens = layout.lora_tokens()
    adapters = [RegionAdapters(w, tokens[i]) for i, w in enumerate(weights) if w]
    with region_loras(bundle.transformer, adapters, layout.text_tokens) as report:
        yield
    if report.skipped:
        ctx.note(
            f"Region LoRAs: {report.skipped} layers act on the whole image at once "
            "(block modulation, time and text embedders), so they were left out; "
            f"{report.layers} layers act on their regions' tokens."
        )


def pass_loras(
    ctx: StageContext, bundle: Any, p: RegionSampling | None, cond: Conditioning, main: LoraParams
) -> AbstractContextManager:
    """The main LoRA stack on the transformer, and each region's LoRAs on its tokens."""
    if p is None:
        apply_loras(ctx, bundle, main, "transformer")
        return nullcontext()
    return regions_on(ctx, bundle, p, cond.positive.regions, main)


def pass_window(p: RegionSampling | None, sampling: SamplingPass) -> tuple[float, float] | None:
    """The regional mask's sigma window over this pass's schedule."""
    if p is None:
        return None
    sigmas, _ = pass_sigmas(sampling)
    return region_window(sigmas, p.start, p.end)


def fitted(cond: Conditioning, width: int, height: int) -> Conditioning:
    """The conditioning with its regions laid over a width x height canvas."""
    layout = cond.positive.regions
    if layout is None:
        return cond
    return replace(cond, positive=replace(cond.positive, regions=layout.at(width, height)))
