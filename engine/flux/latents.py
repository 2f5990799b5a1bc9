"""Flux latent layout: 16-channel latents at 1/8 size, packed into 2x2 patch tokens."""

from __future__ import annotations

import torch

LATENT_CHANNELS = 16


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, C*4)."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, L, 64) -> (B, 16, H/8, W/8) for an image of height x width pixels."""
    b, _, d = tokens.shape
    h, w = height // 8, width // 8
    x = tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, h, w)


def image_ids(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Positional ids (L, 3) = (0, row, col) of each 2x2 patch token."""
    rows, cols = height // 16, width // 16
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3).to(device)


def initial_noise(
    seeds: list[int], height: int, width: int
) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Packed Gaussian noise, one CPU generator per image (seed + i), so any device matches.

    The generators come back advanced past the noise: stochastic samplers keep drawing
    from them, so image i of a batch is the same image when rendered alone.
    """
    shape = (1, LATENT_CHANNELS, height // 8, width // 8)
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    noise = [torch.randn(shape, generator=g) for g in generators]
    return pack(torch.cat(noise)), generators
