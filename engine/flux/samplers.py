"""Samplers as pure functions in the k-diffusion style.

Every sampler takes (model, x, sigmas, generator, callback): `model(x, sigma)` returns the
denoised estimate x0 (for Flux x0 = x - sigma * v); `callback(i, x, x0)` is called after each
step and may raise to stop the loop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


def sample_euler(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Euler: x <- x + (sigma_{i+1} - sigma_i) * (x - x0) / sigma_i."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = model(x, sigma)
        x = x + (sigma_next - sigma) * (x - x0) / sigma
        if callback is not None:
            callback(i, x, x0)
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"euler": sample_euler}
