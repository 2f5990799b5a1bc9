"""Region masks for regional prompting: split and painted masks, their blur, and their
per-token weights in the order Flux packs image tokens (issue 14).

A mask is (H, W) float32 in [0, 1] at pixel resolution, 1 = the region's prompt fills that
pixel. Flux packs 8-px latents into 2×2 patch tokens, so each image token covers a 16×16
pixel patch, row-major (engine/flux/latents.py, pack).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.errors import InputError

TOKEN_PIXELS = 16  # one packed image token = a 2×2 patch of 8-px latents
DIRECTIONS = ("left_right", "top_bottom")
# Preview colours (RGB) of regions 1-4: orange, blue, green, magenta; region 5 reuses 1's.
PALETTE = ((255, 140, 0), (30, 110, 255), (40, 180, 70), (220, 40, 200))
PREVIEW_OPACITY = 0.6  # a mask value of 1 covers the picture with 60 % of the region's colour
PREVIEW_GREY = 128  # the canvas under the colours when there is no picture
BOUNDARY = (255, 255, 255)  # the 1-px line where the owning region of a token changes


def blur_kernel_size(amount: float, height: int, width: int) -> int:
    """The Gaussian kernel size ComfyUI_essentials' MaskBlur+ uses for `amount`, made to fit.

    MaskBlur+: k = int(6·amount + 1), plus 1 when even, sigma = amount. torchvision pads by
    reflection, which needs k // 2 < each image side, so k is clamped to 2·min(H, W) − 1, the
    largest odd size that fits (MaskBlur+ itself would fail there). 0 when amount == 0.
    """
    if amount < 0:
        raise ValueError(f"blur amount {amount} is negative")
    if amount == 0:
        return 0
    size = int(6 * amount + 1)
    if size % 2 == 0:
        size += 1
    return min(size, 2 * min(height, width) - 1)


def _blur_operator(length: int, size: int, sigma: float) -> torch.Tensor:
    """(length, length) matrix B with B @ v = reflect-pad v by size // 2, then convolve with
    torchvision's normalised 1-D Gaussian of `size` taps and `sigma` (_get_gaussian_kernel1d)."""
    half = (size - 1) * 0.5
    x = torch.linspace(-half, half, steps=size, dtype=torch.float32)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    kernel = pdf / pdf.sum()
    rows = torch.arange(length)[:, None].expand(length, size)
    source = rows + torch.arange(size)[None, :] - size // 2
    source = torch.where(source < 0, -source, source)  # reflection without the edge pixel
    source = torch.where(source >= length, 2 * (length - 1) - source, source)
    operator = torch.zeros(length, length, dtype=torch.float32)
    operator.index_put_(
        (rows.reshape(-1), source.reshape(-1)), kernel.expand(length, size).reshape(-1), True
    )
    return operator


def blur_masks(masks: torch.Tensor, amount: float) -> torch.Tensor:
    """Blur each mask of (N, H, W) as MaskBlur+ does; a new float32 tensor, masks unchanged.

    Equal (to float rounding, ~1e-6) to torchvision.transforms.functional.gaussian_blur with
    kernel blur_kernel_size(amount, H, W) and sigma = amount: the same reflection padding and
    the same separable kernel (its 2-D kernel is the outer product of two 1-D ones), applied
    as two matrix products so a 529-tap kernel on 1216² takes a fraction of a second on a CPU;
    then clamped to [0, 1] (rounding can overshoot 1 by ~1e-7). amount == 0 returns an
    unblurred copy.
    """
    masks = masks.to(torch.float32)
    height, width = masks.shape[-2:]
    size = blur_kernel_size(amount, height, width)
    if size <= 1:
        return masks.clone()
    vertical = _blur_operator(height, size, amount).to(masks.device)
    horizontal = _blur_operator(width, size, amount).to(masks.device)
    return (vertical @ masks @ horizontal.T).clamp(0, 1)


def _boundaries(length: int, count: int) -> list[int]:
    """b_k = round(k·length / count), k = 1 … count − 1 (Python's round)."""
    return [round(k * length / count) for k in range(1, count)]


def _steps(length: int, count: int, gradient: float) -> torch.Tensor:
    """(count + 1, length): s_0 = 1, s_k(c) for the boundaries, s_count = 0, c = x + 0.5."""
    centres = torch.arange(length, dtype=torch.float64) + 0.5
    steps = [torch.ones(length, dtype=torch.float64)]
    for boundary in _boundaries(length, count):
        if gradient == 0:
            steps.append((centres >= boundary).to(torch.float64))
        else:
            steps.append(((centres - boundary) / gradient + 0.5).clamp(0, 1))
    steps.append(torch.zeros(length, dtype=torch.float64))
    return torch.stack(steps)


def split_masks(
    width: int, height: int, count: int, direction: str, gradient: float, blur: float
) -> torch.Tensor:
    """`count` masks (count, H, W) float32 in [0, 1] splitting the canvas into bands.

    direction "left_right": region 1 leftmost; "top_bottom": region 1 on top. Along that axis
    (length W or H), boundaries b_k = round(k·length / count), k = 1 … count − 1, and steps over
    pixel centres c = x + 0.5: s_k(c) = [c ≥ b_k] when gradient == 0, else
    clamp((c − b_k) / gradient + 0.5, 0, 1), a linear ramp `gradient` pixels wide centred on
    b_k. Region k = s_{k−1} − s_k with s_0 = 1, s_count = 0 (they sum to 1). Regions
    1 … count − 1 are then blurred as blur_masks (the bands are constant across the other
    axis, where the blur is the identity, so only the profile is blurred, then clamped to
    [0, 1]); the last region is
    1 − Σ(the others) clamped to [0, 1], so with two regions mask 2 is exactly 1 − mask 1.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not one of {DIRECTIONS}")
    length = width if direction == "left_right" else height
    if not 1 <= count <= length:
        raise ValueError(f"cannot split {length} pixels into {count} regions")
    if gradient < 0:
        raise ValueError(f"gradient {gradient} is negative")
    steps = _steps(length, count, gradient)
    profiles = (steps[:-1] - steps[1:]).to(torch.float32)  # (count, length)
    size = blur_kernel_size(blur, height, width)
    if size > 1:
        profiles = (profiles @ _blur_operator(length, size, blur).T).clamp(0, 1)
    if count > 1:
        last = (1 - profiles[:-1].sum(dim=0)).clamp(0, 1)
        profiles = torch.cat([profiles[:-1], last[None]])
    if direction == "left_right":
        return profiles[:, None, :].expand(count, height, width).contiguous()
    return profiles[:, :, None].expand(count, height, width).contiguous()


def _picture_values(picture: Image.Image) -> Image.Image:
    """The picture's alpha channel when it has a non-opaque one, else its luminance ("L")."""
    if picture.has_transparency_data:
        alpha = picture.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            return alpha
    return picture.convert("L")


def painted_masks(
    pictures: Sequence[Image.Image], width: int, height: int, blur: float
) -> torch.Tensor:
    """Masks (N, H, W) float32 in [0, 1] from painted pictures, one per region in order.

    Each picture gives its alpha channel if it has a non-opaque one, else its luminance (PIL
    "L"); that is resized to width × height (PIL bilinear) when its size differs, divided by
    255, and blurred as blur_masks. A picture that is all zero after resizing (before the blur)
    raises InputError naming its region (1-based).
    """
    masks = []
    for index, picture in enumerate(pictures):
        values = _picture_values(picture)
        if values.size != (width, height):
            values = values.resize((width, height), Image.Resampling.BILINEAR)
        mask = torch.from_numpy(np.asarray(values, dtype=np.float32) / 255.0)
        if not mask.any():
            raise InputError(
                f"Region {index + 1}'s mask is empty: paint the area the region's prompt "
                "should fill"
            )
        masks.append(mask)
    if not masks:
        return torch.zeros(0, height, width)
    return blur_masks(torch.stack(masks), blur)


def token_weights(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N, L), L = (H/16)·(W/16): the mean of each 16×16 pixel patch, row-major
    as pack orders the image tokens. ValueError when H or W is not a multiple of 16."""
    height, width = masks.shape[-2:]
    if height % TOKEN_PIXELS or width % TOKEN_PIXELS:
        raise ValueError(f"mask size {width}×{height} is not a multiple of {TOKEN_PIXELS}")
    pooled = F.avg_pool2d(masks.to(torch.float32)[:, None], TOKEN_PIXELS)
    return pooled.flatten(1)


def token_owners(weights: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(N, L) -> LongTensor (L,): per token the region index with the largest weight when that
    weight is ≥ threshold, else −1 (background). Ties go to the lower index."""
    if weights.shape[0] == 0:
        return torch.full((weights.shape[1],), -1, dtype=torch.long, device=weights.device)
    best, owner = weights.max(dim=0)  # max returns the first maximal index
    return torch.where(best >= threshold, owner, torch.full_like(owner, -1))


def _boundary_lines(masks: torch.Tensor) -> np.ndarray | None:
    """(H, W) bool: pixels whose token owner differs from the pixel to the right or below;
    None when the size is not a multiple of 16 (no token grid)."""
    height, width = masks.shape[-2:]
    if height % TOKEN_PIXELS or width % TOKEN_PIXELS:
        return None
    grid = token_owners(token_weights(masks)).view(height // TOKEN_PIXELS, -1).numpy()
    owners = grid.repeat(TOKEN_PIXELS, axis=0).repeat(TOKEN_PIXELS, axis=1)
    lines = np.zeros((height, width), dtype=bool)
    lines[:, :-1] |= owners[:, :-1] != owners[:, 1:]
    lines[:-1, :] |= owners[:-1, :] != owners[1:, :]
    return lines


def mask_preview(masks: torch.Tensor, picture: Image.Image | None = None) -> Image.Image:
    """An RGB preview (W × H) of masks (N, H, W): each region's PALETTE colour blended over
    the picture (resized to the masks' size, bilinear) or over mid grey (128) when None.

    Regions are blended in order, each as out = out·(1 − a) + colour·a with
    a = PREVIEW_OPACITY · mask; the palette repeats after 4 regions. When H and W are multiples
    of 16, a white 1-px line marks where the owning region of a token changes (token_owners):
    on the last pixel before the change, to the right or below.
    """
    masks = masks.detach().to("cpu", torch.float32)
    height, width = masks.shape[-2:]
    if picture is None:
        out = np.full((height, width, 3), PREVIEW_GREY, dtype=np.float32)
    else:
        rgb = picture.convert("RGB")
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
        out = np.asarray(rgb, dtype=np.float32).copy()
    for index, mask in enumerate(masks.numpy()):
        alpha = (PREVIEW_OPACITY * mask.clip(0, 1))[..., None]
        colour = np.asarray(PALETTE[index % len(PALETTE)], dtype=np.float32)
        out = out * (1 - alpha) + colour * alpha
    lines = _boundary_lines(masks)
    if lines is not None:
        out[lines] = BOUNDARY
    return Image.fromarray(np.rint(out).clip(0, 255).astype(np.uint8), "RGB")
