"""LayerStyle Brightness Contrast V2 (specs §9): PIL ImageEnhance blends on float images."""

from __future__ import annotations

import torch

from engine.recipe import ToneParams

# ITU-R 601 luma, the weights of PIL's convert("L").
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luma(images: torch.Tensor) -> torch.Tensor:
    """Per-pixel L = (299R + 587G + 114B) / 1000, shape (B, 1, H, W)."""
    r, g, b = images.unbind(1)
    w = LUMA_WEIGHTS
    return (r * w[0] + g * w[1] + b * w[2]).unsqueeze(1)


def contrast_mean(images: torch.Tensor) -> torch.Tensor:
    """Each image's mean luma on the 0..255 scale rounded to an integer, back in [0, 1]; (B,)."""
    # torch sums float32 pairwise (accurate to ~1e-7 here); a dtype=float64 argument would
    # cost a conversion pass over every pixel.
    return mean_from_sums(images.sum(dim=(2, 3)).double(), images.shape[2] * images.shape[3])


def mean_from_sums(channel_sums: torch.Tensor, count: int) -> torch.Tensor:
    """contrast_mean from (B, 3) per-channel sums over `count` pixels (e.g. summed by strips)."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=torch.float64, device=channel_sums.device)
    mean255 = channel_sums.double() @ weights * (255.0 / count)
    # PIL rounds half up: int(mean + 0.5).
    return (torch.floor(mean255 + 0.5) / 255.0).float()


def blend(degenerate: torch.Tensor | float, images: torch.Tensor, factor: float) -> torch.Tensor:
    """ImageEnhance: deg + factor * (img - deg), clipped to [0, 1]."""
    return (images - degenerate).mul_(factor).add_(degenerate).clamp_(0.0, 1.0)


def apply_brightness(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Brightness: the degenerate image is black."""
    return (images * factor).clamp_(0.0, 1.0)


def apply_contrast(
    images: torch.Tensor, factor: float, mean: torch.Tensor | None = None
) -> torch.Tensor:
    """Contrast: the degenerate image is the rounded mean luma (given, or of `images`)."""
    if mean is None:
        mean = contrast_mean(images)
    return blend(mean.view(-1, 1, 1, 1), images, factor)


def apply_saturation(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Saturation (ImageEnhance.Color): the degenerate image is the per-pixel luma."""
    return blend(luma(images), images, factor)


def tone_is_identity(params: ToneParams) -> bool:
    """True when the step changes nothing (disabled, or every factor exactly 1)."""
    return not params.enabled or (
        params.brightness == 1 and params.contrast == 1 and params.saturation == 1
    )


def apply_tone(
    images: torch.Tensor, params: ToneParams, mean: torch.Tensor | None = None
) -> torch.Tensor:
    """Brightness, contrast, saturation in that order, each skipped at exactly 1.

    `mean` overrides the contrast mean (used when grading a LUT grid instead of the image).
    """
    out = images
    if tone_is_identity(params):
        return out
    if params.brightness != 1:
        out = apply_brightness(out, params.brightness)
    if params.contrast != 1:
        out = apply_contrast(out, params.contrast, mean)
    if params.saturation != 1:
        out = apply_saturation(out, params.saturation)
    return out


def contrast_input(images: torch.Tensor, params: ToneParams) -> torch.Tensor | None:
    """The image whose mean luma contrast uses (after brightness), or None if contrast is off."""
    if tone_is_identity(params) or params.contrast == 1:
        return None
    if params.brightness != 1:
        return apply_brightness(images, params.brightness)
    return images


def tone_mean(images: torch.Tensor, params: ToneParams) -> torch.Tensor | None:
    """The contrast mean `apply_tone` would use on `images`, or None when contrast is off."""
    source = contrast_input(images, params)
    return None if source is None else contrast_mean(source)
