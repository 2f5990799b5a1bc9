"""PuLID's ID tokens (conditioning, beside the text): each reference photo's ID embedding
(engine/identity/id_embedding.py) through PuLID's IDFormer, averaged over the references as
ComfyUI-PuLID-Flux averages several images. Cached by the photos and the models, so moving
PuLID's weight or window never recomputes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine.graph import StageContext
from engine.identity.models import identity_models
from engine.identity.pulid_passes import IDENTITY_EMBED
from engine.recipe import Recipe

STAGE = IDENTITY_EMBED


@dataclass(frozen=True)
class IdentityEmbedParams:
    references: tuple[str, ...]
    embedder: str  # the face models' identity
    pulid: str  # the PuLID file's identity


class IdentityEmbedStage:
    name = STAGE
    version = 1
    uses_models = True

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return ()

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.identity.pulid_active()

    def select(self, recipe: Recipe, env: Any) -> IdentityEmbedParams:
        models = identity_models(env)
        refs = tuple(env.images.require(digest) for digest in recipe.identity.references)
        return IdentityEmbedParams(refs, models.embedder.models_identity(), models.pulid_identity())

    @torch.inference_mode()
    def run(self, ctx: StageContext, p: IdentityEmbedParams, upstream: dict) -> torch.Tensor:
        models = identity_models(ctx.services)
        pulid = models.pulid(ctx.services.flux_bundle().transformer)
        weight = next(pulid.encoder.parameters())
        tokens = []
        for number, digest in enumerate(p.references, 1):
            ctx.step(self.name, number - 1, len(p.references), f"reference {number}")
            photo = np.asarray(ctx.services.images.load(digest).convert("RGB"))
            found = models.embedder.embed(photo)
            hidden = [h.to(weight.device, weight.dtype) for h in found.vit_hidden]
            tokens.append(pulid.encoder(found.id_cond.to(weight.device, weight.dtype), hidden))
        return torch.stack(tokens).mean(dim=0)
