"""Vision stage: SigLIP features of the Redux reference portraits (the expensive part).

Keyed by the image digests, the SigLIP weights and the preprocessing only (each
reference's image mode: centre crop or ReduxAdvanced's keep aspect ratio), so moving a
strength, the blend mode, the prompt balance or a downsampling setting never re-encodes the
images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import InputError
from engine.graph import StageContext
from engine.recipe import Recipe, ReduxParams
from engine.redux.encoder import CROP, LETTERBOX, siglip_features
from engine.redux.models import redux_models

# The recipe's image modes as the encoder's crop modes.
IMAGE_MODE_CROPS = {"center_crop": CROP, "keep_aspect": LETTERBOX}


@dataclass(frozen=True)
class VisionParams:
    slots: tuple[int, ...]  # which references (1, 2) are set, in order
    digests: tuple[str, ...]
    siglip: str  # identity of the SigLIP weights
    crops: tuple[str, ...]  # per reference
    dtype: str


@dataclass(frozen=True)
class VisionFeatures:
    """SigLIP last_hidden_state (K, N, D) of the references in `slots`, in that order."""

    features: torch.Tensor
    slots: tuple[int, ...]


def reference_slots(redux: ReduxParams) -> tuple[int, ...]:
    """The reference slots that hold an image; none while Redux is on is an InputError."""
    slots = tuple(i for i, digest in ((1, redux.image1), (2, redux.image2)) if digest)
    if not slots:
        raise InputError(
            "Redux is on but has no reference portrait: add one in the Redux tab, or switch "
            "Redux off."
        )
    return slots


class VisionStage:
    name = "vision"
    version = 1
    uses_models = True

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return ()

    def enabled(self, recipe: Recipe) -> bool:
        # Planned only through the redux stage, which is off with Redux; a stage without
        # inputs has nothing to forward when disabled.
        return True

    def select(self, recipe: Recipe, env: Any) -> VisionParams:
        slots = reference_slots(recipe.redux)
        digests = tuple(env.images.require(getattr(recipe.redux, f"image{i}")) for i in slots)
        models = redux_models(env)
        modes = (getattr(recipe.redux, f"advanced{i}").image_mode for i in slots)
        crops = tuple(IMAGE_MODE_CROPS[mode] for mode in modes)
        return VisionParams(slots, digests, models.identity("siglip"), crops, str(models.dtype))

    def run(self, ctx: StageContext, params: VisionParams, upstream: dict) -> VisionFeatures:
        ctx.step(self.name, 0, 1, "encoding the reference portraits")
        siglip = redux_models(ctx.services).siglip()
        images = [ctx.services.images.load(digest) for digest in params.digests]
        return VisionFeatures(siglip_features(siglip, images, params.crops), params.slots)
