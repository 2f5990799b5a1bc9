"""SigLIP features and Redux tokens of reference images (specs §5).

Preprocessing follows ComfyUI's `clip_preprocess` as its CLIPVisionEncode node calls it by
default (crop="center"): scale the short side to the encoder's size (bicubic, antialiased),
take the centre square, round to 8 bit, then (x - 0.5) / 0.5. The HF SiglipImageProcessor
that BFL and diffusers use instead stretches the whole picture to 384 x 384. Both agree on
square references (what the suite's guidelines ask for); on others the centre crop keeps the
face's proportions, and the suite's ComfyUI graphs, whose results people compare against,
crop. `CROP = "none"` switches to the stretch. "letterbox" is ReduxAdvanced's "keep aspect
ratio": scale the long side to the encoder's size and centre the picture on black.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from engine.images import pil_to_tensor

CROP = "center"  # "center" (ComfyUI's default) or "none" (stretch, like the HF processor)
LETTERBOX = "letterbox"
CROPS = ("center", "none", LETTERBOX)
MEAN = 0.5
STD = 0.5


def preprocess(image: torch.Tensor, size: int, crop: str = CROP) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 3, size, size) normalised for SigLIP."""
    if crop not in CROPS:
        raise ValueError(f"unknown crop mode {crop!r}")
    if tuple(image.shape[-2:]) != (size, size):
        image = fit(image, size, crop)
    image = (image * 255.0).clamp(0, 255).round() / 255.0
    return (image - MEAN) / STD


def fit(image: torch.Tensor, size: int, crop: str) -> torch.Tensor:
    """(B, 3, H, W) resized (bicubic, antialiased) to (B, 3, size, size) as `crop` says."""
    height, width = image.shape[-2:]
    if crop == "none":
        target = (size, size)
    else:
        side = max(height, width) if crop == LETTERBOX else min(height, width)
        scale = size / side
        target = (round(scale * height), round(scale * width))
    image = F.interpolate(image, size=target, mode="bicubic", antialias=True)
    if crop == LETTERBOX:
        return letterbox(image, size)
    top, left = (image.shape[2] - size) // 2, (image.shape[3] - size) // 2
    return image[:, :, top : top + size, left : left + size]


def letterbox(image: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, h, w) with h, w <= size centred on a black (B, 3, size, size) square."""
    height, width = image.shape[-2:]
    top, left = (size - height) // 2, (size - width) // 2
    return F.pad(image, (left, size - width - left, top, size - height - top))  # zeros: black


@torch.inference_mode()
def siglip_features(
    siglip, images: list[Image.Image], crops: Sequence[str] | None = None
) -> torch.Tensor:
    """SigLIP last_hidden_state of each image, preprocessed with its crop mode (default
    CROP for all): (K, N, D), N = (size / patch)^2."""
    param = next(siglip.parameters())
    size = siglip.config.image_size
    crops = [CROP] * len(images) if crops is None else crops
    pixels = [
        preprocess(pil_to_tensor([im], param.device), size, crop)
        for im, crop in zip(images, crops, strict=True)
    ]
    batch = torch.cat(pixels).to(param.dtype)
    return siglip(pixel_values=batch).last_hidden_state


@torch.inference_mode()
def redux_tokens(redux_encoder, features: torch.Tensor) -> torch.Tensor:
    """The Redux MLP, W_down·SiLU(W_up·f): (K, N, D_siglip) -> (K, N, D_t5)."""
    param = next(redux_encoder.parameters())
    return redux_encoder(features.to(param.device, param.dtype)).image_embeds
