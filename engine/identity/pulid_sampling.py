"""PuLID during a Flux pass: the CA hooks on the warm transformer for the pass's duration,
with the ID tokens, the weight and the start/end window of ComfyUI-PuLID-Flux (start_at and
end_at are fractions of the model's sigma range, turned into sigmas with
ModelSamplingFlux.percent_to_sigma; the modules act while start sigma ≥ sigma ≥ end sigma)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from engine.flux.sigma_modifiers import percent_to_sigma
from engine.identity.pulid_inject import PulidHandle, attach_pulid
from engine.identity.pulid_networks import PulidModules


@dataclass(frozen=True)
class PulidSampling:
    """What a sampling stage needs to apply PuLID (part of its cache key)."""

    weight: float
    start: float
    end: float
    modules: str  # the PuLID file's identity


@contextmanager
def pulid_applied(
    transformer: torch.nn.Module,
    modules: PulidModules,
    id_tokens: torch.Tensor,
    params: PulidSampling,
    mu: float,
) -> Iterator[PulidHandle]:
    """The transformer with PuLID on inside the block, exactly as before after it."""
    handle = attach_pulid(transformer, modules)
    sigma_start, sigma_end = percent_to_sigma(params.start, mu), percent_to_sigma(params.end, mu)
    current = [1.0]
    from_call = [False]  # the transformer's own call recorded this step's sigma

    def record_sigma(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        # FluxDenoiser passes sigma itself as the timestep
        current[0] = float(kwargs["timestep"].reshape(-1)[0])
        from_call[0] = True

    def record_embedded_sigma(module: torch.nn.Module, args: tuple) -> None:
        # The first-block cache (engine/flux/fbcache.py) runs the blocks itself, without the
        # transformer's forward: the time embedding, called once per model call on both
        # paths, still sees sigma · 1000.
        if from_call[0]:
            from_call[0] = False
        else:
            current[0] = float(args[0].reshape(-1)[0]) / 1000

    hooks = (
        transformer.register_forward_pre_hook(record_sigma, with_kwargs=True),
        transformer.time_text_embed.register_forward_pre_hook(record_embedded_sigma),
    )
    handle.set(id_tokens, params.weight)
    handle.set_gate(lambda: sigma_end <= current[0] <= sigma_start)
    try:
        yield handle
    finally:
        for hook in hooks:
            hook.remove()
        handle.remove()
