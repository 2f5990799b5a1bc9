"""Live step previews: Flux latents to RGB with ComfyUI's latent2rgb factors (specs §4)."""

from __future__ import annotations

import torch
from PIL import Image

from engine.flux.latents import unpack

# Rows: the 16 latent channels; columns: R, G, B. Applied in model space (z - 0.1159)·0.3611.
FACTORS = (
    (-0.0346, 0.0244, 0.0681), (0.0034, 0.0210, 0.0687), (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617), (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259), (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421), (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103), (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
)  # fmt: skip
BIAS = (-0.0329, -0.0718, -0.0851)


def latent_to_rgb(latents: torch.Tensor) -> torch.Tensor:
    """(B, 16, h, w) model-space latents -> (B, 3, h, w) in [0, 1]."""
    factors = torch.tensor(FACTORS, dtype=torch.float32, device=latents.device)
    bias = torch.tensor(BIAS, dtype=torch.float32, device=latents.device)
    rgb = torch.einsum("bchw,cr->brhw", latents.float(), factors) + bias[None, :, None, None]
    return ((rgb + 1) / 2).clamp(0, 1)


def preview_image(tokens: torch.Tensor, height: int, width: int) -> Image.Image:
    """A small RGB preview of the first image of a packed (B, L, 64) latent batch."""
    rgb = latent_to_rgb(unpack(tokens[:1], height, width))[0]
    array = (rgb * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")
