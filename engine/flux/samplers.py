"""Samplers as pure functions in the k-diffusion style, with ComfyUI's semantics for Flux.

Every sampler takes (model, x, sigmas, generator, callback): `model(x, sigma)` returns the
denoised estimate x0 (for Flux x0 = x - sigma * v); `callback(i, x, x0)` is called after each
step and may raise to stop the loop. Written here rather than taken from k-diffusion so the
loop stays ours (previews, cancel, sigma modifiers) and ComfyUI's flow-model branches
(euler_ancestral_RF, dpmpp_sde's half-log-SNR) are explicit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from engine.flux.sigma_modifiers import percent_to_sigma

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]
Sampler = Callable[..., torch.Tensor]

DEFAULT_MU = 1.15  # ComfyUI's Flux shift without a ModelSamplingFlux node


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


def gaussian_noise(
    x: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None
) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn on the generator's device (CPU) so every
    device gets the same numbers for a seed. A list gives one generator per batch row, so an
    image of a batch gets the same noise as when it is rendered alone."""
    if isinstance(generator, (list, tuple)):
        rows = [gaussian_noise(x[i : i + 1], g) for i, g in enumerate(generator)]
        return torch.cat(rows)
    device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
    return noise.to(x.device, x.dtype)


def sample_euler_ancestral(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """ComfyUI's euler_ancestral for a CONST (flow) model: the RF variant (specs §4)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = model(x, sigma)
        if sigma_next == 0:
            x = x0
        else:
            sigma_down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
            alpha_next, alpha_down = 1 - sigma_next, 1 - sigma_down
            ratio = sigma_down / sigma
            x = ratio * x + (1 - ratio) * x0
            if eta > 0:
                # Re-noise from sigma_down up to sigma_next in the flow parametrisation.
                renoise = (sigma_next**2 - sigma_down**2 * alpha_next**2 / alpha_down**2) ** 0.5
                noise = gaussian_noise(x, generator)
                x = (alpha_next / alpha_down) * x + noise * s_noise * renoise
        if callback is not None:
            callback(i, x, x0)
    return x


def sample_heun(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Heun (k-diffusion, no churn): Euler predictor, trapezoid corrector; plain Euler to 0."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = model(x, sigma)
        d = (x - x0) / sigma
        dt = sigma_next - sigma
        if sigma_next == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - model(x_2, sigma_next)) / sigma_next
            x = x + (d + d_2) / 2 * dt
        if callback is not None:
            callback(i, x, x0)
    return x


def sample_dpmpp_2m(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) in t = -log(sigma); ComfyUI runs the same code for flow models."""
    old_x0: torch.Tensor | None = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = model(x, sigma)
        if sigma_next == 0:
            # t_next = inf: the update's limit is exactly x0 (first order, as in k-diffusion).
            x = x0
        else:
            t, t_next = -sigma.log(), -sigma_next.log()
            h = t_next - t
            x0_d = x0
            if old_x0 is not None:
                r = (t - (-sigmas[i - 1].log())) / h
                x0_d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old_x0
            x = (sigma_next / sigma) * x - torch.expm1(-h) * x0_d
        old_x0 = x0
        if callback is not None:
            callback(i, x, x0)
    return x


def _ancestral_step(
    sigma_from: torch.Tensor, sigma_to: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-diffusion get_ancestral_step with eta = 1: (sigma_down, sigma_up)."""
    up = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    up = torch.minimum(sigma_to, up)
    return (sigma_to**2 - up**2) ** 0.5, up


def _brownian_pair(
    x: torch.Tensor,
    s: torch.Tensor,
    s_mid: torch.Tensor,
    s_next: torch.Tensor,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-variance noise for (s, s_mid) and for (s, s_next), correlated as increments of
    one Brownian path are (the joint law of k-diffusion's Brownian-tree noise)."""
    first = gaussian_noise(x, generator)
    rest = gaussian_noise(x, generator)
    whole = first * (s - s_mid).sqrt() + rest * (s_mid - s_next).sqrt()
    return first, whole / (s - s_next).sqrt()


def sample_dpmpp_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    mu: float = DEFAULT_MU,
) -> torch.Tensor:
    """DPM-Solver++ (stochastic, r = 1/2, eta = 1) with ComfyUI's CONST half-log-SNR.

    Noise is seeded Brownian-consistent Gaussian noise, not torchsde's Brownian tree."""
    if len(sigmas) > 1 and sigmas[0] >= 1:
        # log-SNR is infinite at sigma = 1; ComfyUI starts at percent_to_sigma(1e-4).
        sigmas = sigmas.clone()
        sigmas[0] = percent_to_sigma(1e-4, mu)
    lam = lambda s: -torch.logit(s)  # log((1 - sigma) / sigma)
    sig = lambda lm: torch.sigmoid(-lm)
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = model(x, s)
        if s_next == 0:
            x = x0
        else:
            lam_s, lam_t = lam(s), lam(s_next)
            s_mid = sig(lam_s + (lam_t - lam_s) / 2)
            n_mid, n_next = _brownian_pair(x, s, s_mid, s_next, generator)
            x_2 = _dpmpp_sde_substep(x, x0, s, s_mid, n_mid)
            # k-diffusion mixes (1 - fac) x0 + fac x0_2 with fac = 1 / (2r) = 1: just x0_2.
            x0_d = model(x_2, s_mid)
            x = _dpmpp_sde_substep(x, x0_d, s, s_next, n_next)
        if callback is not None:
            callback(i, x, x0)
    return x


def _dpmpp_sde_substep(
    x: torch.Tensor, x0: torch.Tensor, s: torch.Tensor, s_to: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """One ancestral exponential-integrator step from sigma s to s_to in half-log-SNR."""
    alpha_s, alpha_to = 1 - s, 1 - s_to
    # Ancestral split of the VE-equivalent noise levels sigma/alpha = exp(-lambda).
    down, up = _ancestral_step(s / alpha_s, s_to / alpha_to)
    lam_s = -torch.logit(s)
    h = -down.log() - lam_s
    x = (alpha_to / alpha_s) * torch.exp(-h) * x - alpha_to * torch.expm1(-h) * x0
    return x + alpha_to * noise * up


SAMPLERS: dict[str, Sampler] = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_sde": sample_dpmpp_sde,
}
