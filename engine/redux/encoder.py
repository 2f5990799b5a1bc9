"""SigLIP features and Redux tokens of reference images (specs §5).

Preprocessing follows ComfyUI's `clip_preprocess` as its CLIPVisionEncode node calls it by
default (crop="center"): scale the short side to the encoder's size (bicubic, antialiased),
take the centre square, round to 8 bit, then (x - 0.5) / 0.5. The HF SiglipImageProcessor
that BFL and diffusers use instead stretches the whole picture to 384 x 384. Both agree on
square references (what the suite's guidelines ask for); on others the centre crop keeps the
face's proportions, and the suite's ComfyUI graphs, whose results people compare against,
crop. `CROP = "none"` switches to the stretch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from engine.images import pil_to_tensor

CROP = "center"  # "center" (ComfyUI's default) or "none" (stretch, like the HF processor)
MEAN = 0.5
STD = 0.5


def preprocess(image: torch.Tensor, size: int, crop: str = CROP) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 3, size, size) normalised for SigLIP."""
    if crop not in ("center", "none"):
        raise ValueError(f"unknown crop mode {crop!r}")
    height, width = image.shape[-2:]
    if (height, width) != (size, size):
        if crop == "center":
            scale = size / min(height, width)
            target = (round(scale * height), round(scale * width))
        else:
            target = (size, size)
        image = F.interpolate(image, size=target, mode="bicubic", antialias=True)
        top, left = (image.shape[2] - size) // 2, (image.shape[3] - size) // 2
        image = image[:, :, top : top + size, left : left + size]
    image = (image * 255.0).clamp(0, 255).round() / 255.0
    return (image - MEAN) / STD


@torch.inference_mode()
def siglip_features(siglip, images: list[Image.Image], crop: str = CROP) -> torch.Tensor:
    """SigLIP last_hidden_state of each image: (K, N, D), N = (size / patch)^2."""
    param = next(siglip.parameters())
    size = siglip.config.image_size
    pixels = [preprocess(pil_to_tensor([im], param.device), size, crop) for im in images]
    batch = torch.cat(pixels).to(param.dtype)
    return siglip(pixel_values=batch).last_hidden_state


@torch.inference_mode()
def redux_tokens(redux_encoder, features: torch.Tensor) -> torch.Tensor:
    """The Redux MLP, W_down·SiLU(W_up·f): (K, N, D_siglip) -> (K, N, D_t5)."""
    param = next(redux_encoder.parameters())
    return redux_encoder(features.to(param.device, param.dtype)).image_embeds
