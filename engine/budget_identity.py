"""PuLID's and the pose ControlNet's share of the base pass in a render's estimate
(engine/budget.py has the model).

- The ControlNet runs once per transformer call inside its window, over the same tokens:
  one call costs a transformer call scaled by its blocks over the transformer's (a union
  model's 5 double + 10 single blocks against FLUX.1's 19 + 38), times the share of the steps
  in its window.
- PuLID's cross-attention modules (one after every second double and fourth single block:
  20 for FLUX.1) each cost 2 · 20,981,760 FLOPs per image token per call (their Linears; the
  32 ID tokens make the attention itself negligible), inside PuLID's window.
Their FLOPs are left at 0 in the estimate's parts: the base pass's measured time calibrates
the device against the base pass alone.
"""

from __future__ import annotations

from engine.budget import DeviceProfile, FluxShape, PassCost, evaluations, flux_flops
from engine.recipe import Recipe
from engine.sizes import render_size

CONTROLNET_BLOCKS = 15  # InstantX / Shakker union: 5 double + 10 single
CA_PARAMETERS = 20_981_760  # one PerceiverAttentionCA (pulid_counts.json)


def identity_parts(recipe: Recipe, shape: FluxShape, dev: DeviceProfile) -> list[PassCost]:
    """The extra work of PuLID and the pose ControlNet on the base pass (none when off)."""
    if recipe.source.kind == "image":
        return []
    identity, s = recipe.identity, recipe.settings
    width, height = render_size(recipe.prompt)
    image_tokens = (width // 16) * (height // 16)
    calls = evaluations(s.sampler, s.steps, s.cfg) * recipe.prompt.batch_size
    parts = []
    if identity.pose_active():
        pose = identity.pose
        share = min(1.0, CONTROLNET_BLOCKS / max(shape.blocks, 1)) * (pose.end - pose.start)
        flops = calls * share * flux_flops(image_tokens + shape.text_tokens, shape)
        parts.append(PassCost("base", "pose ControlNet", flops / dev.flops_per_s, 0.0))
    if identity.pulid_active():
        pulid = identity.pulid
        modules = max(1, round(shape.blocks * 20 / 57))  # FLUX.1: every 2nd of 19, 4th of 38
        flops = calls * (pulid.end - pulid.start) * modules * 2 * CA_PARAMETERS * image_tokens
        parts.append(PassCost("base", "PuLID", flops / dev.flops_per_s, 0.0))
    return parts
