"""Masked Flux sampling for the detailers: ComfyUI's latent noise mask and differential
diffusion (specs §8), over our own sampler loop.

ComfyUI's KSamplerX0Inpaint wraps the denoiser the sampler calls: before the model it
replaces the input outside the mask with the clean latent noised to the call's sigma
(CONST noise_scaling: sigma·noise + (1 − sigma)·latent), after it replaces x0 there with the
clean latent. DifferentialDiffusion binarises the mask per call: mask >= (sigma − sigma_to) /
(sigma_0 − sigma_to), sigma_to = max(last sigma, sigma_min). Written here because ComfyUI is
a graph runtime, not a library; MaskedModel wraps a denoiser as the sigma modifiers do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from engine.flux import latents
from engine.flux.samplers import DEFAULT_MU, Denoiser
from engine.flux.schedules import TABLE_SIZE, time_shift


@dataclass(frozen=True, eq=False)
class NoiseMask:
    """What to re-render: `mask` (H, W), (B, H, W) or (B, 1, H, W) in [0, 1], 1 = denoise, at
    pixel or latent resolution (resized like ComfyUI either way); `differential` turns on
    differential diffusion (soft values become a per-step binary mask)."""

    mask: torch.Tensor
    differential: bool = False

    def __post_init__(self) -> None:
        check_mask(self.mask)


def check_mask(mask: torch.Tensor) -> None:
    """Reject what ComfyUI's resize would misread: wrong rank, empty, values outside [0, 1]."""
    shape = tuple(mask.shape)
    if mask.ndim not in (2, 3, 4) or (mask.ndim == 4 and shape[1] != 1) or 0 in shape:
        raise ValueError(f"noise mask of shape {shape}: expected (H, W), (B, H, W) or (B, 1, H, W)")
    values = mask.detach().float()
    if values.isnan().any() or values.min() < 0 or values.max() > 1:
        raise ValueError("noise mask values must lie in [0, 1] (1 = re-render, 0 = keep)")


def latent_mask(
    mask: torch.Tensor, latent_height: int, latent_width: int, batch: int = 1
) -> torch.Tensor:
    """The mask as the sampler applies it: (batch, h/2·w/2, 64) for an (h, w) latent.

    ComfyUI's prepare_mask/reshape_mask: bilinear (align_corners False, no antialias) to the
    latent's size, one copy per latent channel, repeated or cut to the batch. It applies that
    mask to the unpacked (B, 16, h, w) latent; packing it exactly as the latents are packed
    gives every one of a token's 64 values (16 channels × its 2×2 positions) the mask value of
    its own latent pixel, so the blend on tokens is the blend on the unpacked latent, exactly.
    """
    if latent_height % 2 or latent_width % 2:
        raise ValueError(f"latent size {latent_height}x{latent_width} is not a whole patch grid")
    check_mask(mask)
    flat = mask.detach().to(torch.float32).reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    size = (latent_height, latent_width)
    resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    channels = resized.repeat(1, latents.LATENT_CHANNELS, 1, 1)
    return latents.pack(_repeat_to_batch(channels, batch))


def _repeat_to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """comfy.utils.repeat_to_batch_size: tile the rows cyclically, or keep the first `batch`."""
    if tensor.shape[0] < batch:
        tiles = math.ceil(batch / tensor.shape[0])
        tensor = tensor.repeat(tiles, *([1] * (tensor.ndim - 1)))
    return tensor[:batch].contiguous()


def flux_sigma_min(mu: float = DEFAULT_MU) -> float:
    """ModelSamplingFlux.sigma_min: the first entry of the shifted 10,000-sigma table."""
    return float(time_shift(mu, 1.0 / TABLE_SIZE))


def differential_threshold(
    sigma: float, sigmas: torch.Tensor | list[float], mu: float = DEFAULT_MU
) -> float:
    """DifferentialDiffusion's threshold at `sigma` for the schedule `sigmas`: 1 at the first
    sigma, falling linearly in timestep (= sigma for Flux) to 0 at max(last, sigma_min)."""
    sigma_from = float(sigmas[0])
    sigma_to = max(float(sigmas[-1]), flux_sigma_min(mu))
    if sigma_from <= sigma_to:
        raise ValueError("differential diffusion needs a schedule that falls below its start")
    return (float(sigma) - sigma_to) / (sigma_from - sigma_to)


@dataclass
class MaskedModel:
    """Denoiser wrapper with KSamplerX0Inpaint's two blends (all tensors packed (B, L, 64)).

    `noise` is the pass's raw noise and `latent` its clean start; `sigmas` the sampler's
    schedule (for the differential threshold). Outside the mask the model sees the latent
    noised to the call's sigma and x0 is the clean latent; where the mask is 1 nothing
    changes, bit for bit.
    """

    model: Denoiser
    mask: torch.Tensor
    noise: torch.Tensor
    latent: torch.Tensor
    sigmas: torch.Tensor
    differential: bool = False
    mu: float = DEFAULT_MU
    last_mask: torch.Tensor | None = field(default=None, init=False, repr=False)

    def step_mask(self, sigma: torch.Tensor) -> torch.Tensor:
        """The mask for a call at `sigma`: binarised by the threshold when differential."""
        if not self.differential:
            return self.mask
        # ComfyUI takes the batch's first sigma; comparing a float32 mask with a Python
        # float casts the threshold to float32, as ComfyUI's float32 tensors compare.
        first = float(torch.as_tensor(sigma).reshape(-1)[0])
        threshold = differential_threshold(first, self.sigmas, self.mu)
        return (self.mask >= threshold).to(self.mask.dtype)

    def noised(self, sigma: torch.Tensor) -> torch.Tensor:
        """CONST noise_scaling: sigma·noise + (1 − sigma)·latent."""
        s = torch.as_tensor(sigma).to(self.noise.device, self.noise.dtype)
        return s * self.noise + (1 - s) * self.latent

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        mask = self.last_mask = self.step_mask(sigma)
        keep = 1.0 - mask
        x = x * mask + self.noised(sigma) * keep
        return self.model(x, sigma) * mask + self.latent * keep

    def settle(self, x: torch.Tensor) -> torch.Tensor:
        """The sampler's result with the values the last call kept (mask 0) set to the clean
        latent, when the schedule ends at 0.

        Every sampler here ends on that call's x0, which is the clean latent there; Euler and
        Heun reach it as x + (0 − sigma)·(x − x0)/sigma, 1 ulp off in float32 (ComfyUI keeps
        those ulps). Setting them makes the kept region exactly the input, and is a no-op
        for the samplers that return x0 itself.
        """
        if self.last_mask is None or float(self.sigmas[-1]) != 0.0:
            return x
        return torch.where(self.last_mask == 0, self.latent.to(x.dtype), x)


def masked_denoiser(
    model: Denoiser,
    noise_mask: NoiseMask,
    noise: torch.Tensor,
    latent: torch.Tensor,
    sigmas: torch.Tensor,
    mu: float,
    height: int,
    width: int,
) -> MaskedModel:
    """Wrap `model` for one pass over a height x width image with packed `noise` and clean
    `latent` (B, L, 64); the mask is resized and packed for that latent."""
    mask = latent_mask(noise_mask.mask, height // 8, width // 8, noise.shape[0])
    device = noise.device
    return MaskedModel(
        model, mask.to(device), noise, latent.to(device), sigmas, noise_mask.differential, mu
    )
