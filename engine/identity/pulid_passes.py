"""PuLID on a stage's Flux passes, one way for every sampling stage.

In ComfyUI the PuLID-patched MODEL feeds every sampler after it, so PuLID acts on the base
pass and, unless `identity.pulid.finishing` is off, on the latent pass, the Refine detailer
and chin passes and the Upscale tile and seam passes too. A stage that samples with PuLID:

- lists the ID tokens' stage among its inputs (`with_identity_embed`),
- keeps the `PulidSampling` in its params (`pulid_sampling` / `pulid_finishing`), so a new
  weight or window re-runs it while a colour change does not,
- samples each pass inside `pulid_during(pulid, transformer, sampling)`: the hooks on the
  transformer that actually samples (the base model or FLUX.1 Fill: the same 19 + 38
  blocks), with the window turned into sigmas with that pass's own mu (its size and
  max_shift), as ModelSamplingFlux does for each sampler's latent.
"""

from __future__ import annotations

from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from engine.flux.sampling import SamplingPass, pass_sigmas
from engine.graph import StageContext
from engine.identity.models import IdentityModels, identity_models
from engine.identity.pulid_sampling import PulidSampling, pulid_applied
from engine.recipe import Recipe

IDENTITY_EMBED = "identity_embed"  # the stage giving PuLID's ID tokens


def pulid_sampling(recipe: Recipe, env: Any) -> PulidSampling | None:
    """PuLID's settings for the base pass, or None when it does not act."""
    if not recipe.identity.pulid_active():
        return None
    pulid = recipe.identity.pulid
    modules = identity_models(env).pulid_identity()
    return PulidSampling(pulid.weight, pulid.start, pulid.end, modules)


def pulid_finishing(recipe: Recipe, env: Any) -> PulidSampling | None:
    """PuLID's settings for a latent, Refine or Upscale pass, or None when it does not act
    there."""
    return pulid_sampling(recipe, env) if recipe.identity.pulid_finishing() else None


def with_identity_embed(inputs: tuple[str, ...], pulid: bool) -> tuple[str, ...]:
    """A stage's inputs, with the ID tokens' stage last when PuLID acts on its passes (last,
    so that a stage reading its first input still finds its image there)."""
    return (*inputs, IDENTITY_EMBED) if pulid else inputs


@dataclass(frozen=True)
class PulidPass:
    """PuLID ready for a stage's passes: its settings, the ID tokens and the warm models."""

    params: PulidSampling
    id_tokens: torch.Tensor
    models: IdentityModels

    def on(self, transformer: torch.nn.Module, sampling: SamplingPass) -> ContextManager:
        """The hooks on `transformer` while the pass `sampling` samples."""
        modules = self.models.pulid(transformer)
        _, mu = pass_sigmas(sampling)
        return pulid_applied(transformer, modules, self.id_tokens, self.params, mu)


def pulid_pass(ctx: StageContext, params: PulidSampling | None, upstream: dict) -> PulidPass | None:
    """The stage's PuLID from its params and the ID tokens among its inputs (None: off)."""
    if params is None:
        return None
    return PulidPass(params, upstream[IDENTITY_EMBED], identity_models(ctx.services))


def pulid_during(
    pulid: PulidPass | None, transformer: torch.nn.Module, sampling: SamplingPass
) -> ContextManager:
    """PuLID on `transformer` for one pass (nothing without PuLID)."""
    return nullcontext() if pulid is None else pulid.on(transformer, sampling)
