"""LayerStyle Add Grain (specs/algorithms.md §9), made seedable.

The grain field depends only on the output size, the grain settings and the seed, never on the
image, so callers may cache it. The noise is drawn at (H // scale, W // scale), up to ten times
the image size, so the field is built in strips of noise rows and never holds all of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.recipe import GrainParams

RGB_TO_YCC = ((0.2123, 0.7152, 0.0722), (-0.1146, -0.3854, 0.5), (0.5, -0.4542, -0.0458))
BLUR_SIZES = (3, 15, 11)  # Y, C1, C2
CHANNEL_GAIN = (2.0, 1.0, 3.0)  # R, G, B of (rgb - 0.5) * power
# OpenCV's getGaussianKernel uses these fixed kernels (not the sigma formula) when sigma <= 0
# and ksize is odd and <= 7; GaussianBlur(img, (3, 3), 0) therefore blurs Y with 1/4, 1/2, 1/4.
OPENCV_SMALL_KERNELS = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}
STRIP_ROWS = 256


def opencv_gaussian_kernel(ksize: int) -> torch.Tensor:
    """cv2.getGaussianKernel(ksize, 0): OpenCV's automatic sigma 0.3((k-1)/2 - 1) + 0.8."""
    if ksize in OPENCV_SMALL_KERNELS:
        return torch.tensor(OPENCV_SMALL_KERNELS[ksize], dtype=torch.float64)
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def reflect101_index(start: int, stop: int, size: int) -> torch.Tensor:
    """Indices start..stop-1 folded into [0, size) like OpenCV's BORDER_REFLECT_101."""
    index = torch.arange(start, stop)
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * size - 2
    index = index.abs() % period
    return torch.where(index >= size, period - index, index)


def noise_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The node's noise size int(H // scale) x int(W // scale) (Python float floor division)."""
    return max(1, int(height // scale)), max(1, int(width // scale))


def bilinear_rows(out_size: int, in_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source rows and weight of torch's bilinear resize (align_corners=False, no antialias)."""
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    real = ((torch.arange(out_size, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_(min=0)
    low = real.floor().long().clamp_(max=in_size - 1)
    high = (low + 1).clamp_(max=in_size - 1)
    return low, high, (real - low).clamp_(0.0, 1.0)


def _kernels() -> list[list[float]]:
    """Each channel's OpenCV kernel as Python floats (Y, C1, C2)."""
    return [opencv_gaussian_kernel(k).tolist() for k in BLUR_SIZES]


def _correlate(padded: torch.Tensor, kernel: list[float], dim: int, pad: int) -> torch.Tensor:
    """1D correlation along `dim` of a tensor padded by `pad` on both sides of that dim.

    Written as shifted multiply-adds because torch's depthwise conv2d on CPU is ~6x slower here.
    """
    size = padded.shape[dim] - 2 * pad
    first = pad - len(kernel) // 2
    out = padded.narrow(dim, first, size) * kernel[0]
    for tap in range(1, len(kernel)):
        out.add_(padded.narrow(dim, first + tap, size), alpha=kernel[tap])
    return out


def _to_ycc(noise: torch.Tensor) -> torch.Tensor:
    """(rows, W, 3) RGB noise -> (3, rows, W) Y, C1, C2."""
    matrix = torch.tensor(RGB_TO_YCC, dtype=noise.dtype, device=noise.device)
    # One (3x3) @ (3xN) product reads the interleaved noise once and writes planar output.
    return torch.mm(matrix, noise.view(-1, 3).T).view(3, *noise.shape[:2])


def _to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """(3, rows, W) Y, C1, C2 -> RGB with the node's inverse matrix."""
    y, c1, c2 = ycc.unbind(0)
    return torch.stack([y + 1.5748 * c2, y - 0.1873 * c1 - 0.4681 * c2, y + 1.8556 * c1])


class _RowResampler:
    """torch's vertical bilinear resize, emitting output rows as source rows arrive in order."""

    def __init__(self, out: torch.Tensor, source_rows: int) -> None:
        self.out = out
        self.low, self.high, self.weight = bilinear_rows(out.shape[1], source_rows)
        self.emitted = 0
        self.previous: torch.Tensor | None = None  # the last source row of the previous feed

    def feed(self, rows: torch.Tensor, start: int, last: bool) -> None:
        """Source rows [start, start + len) of (3, n, W); emits every output row they complete."""
        end = start + rows.shape[1]
        if self.previous is not None:  # an output row may lie between the two feeds
            rows, start = torch.cat([self.previous, rows], dim=1), start - 1
        stop = self.out.shape[1] if last else int(torch.searchsorted(self.high, end))
        if stop > self.emitted:
            span = slice(self.emitted, stop)
            device = rows.device
            a, b = (self.low[span] - start).to(device), (self.high[span] - start).to(device)
            w = self.weight[span].to(device).view(1, -1, 1)
            self.out[:, span] = rows[:, a] * (1 - w) + rows[:, b] * w
            self.emitted = stop
        self.previous = rows[:, -1:]


def _blurred_rgb(
    block: torch.Tensor, col_index: torch.Tensor, kernels: list[list[float]], pad: int
) -> torch.Tensor:
    """Steps 3-4 on (3, n + 2 pad, W) Y/C1/C2 rows: blur, back to RGB, minus 0.5; (1, 3, n, W)."""
    blurred = []
    for channel, kernel in enumerate(kernels):
        plane = _correlate(block[channel], kernel, 0, pad)
        blurred.append(_correlate(plane.index_select(1, col_index), kernel, 1, pad))
    return _to_rgb(torch.stack(blurred)).sub_(0.5).unsqueeze(0)


def grain_base(
    height: int,
    width: int,
    scale: float,
    seed: int,
    device: torch.device | str = "cpu",
    strip_rows: int = STRIP_ROWS,
) -> torch.Tensor:
    """Blurred noise, as RGB - 0.5, resized to (3, H, W): the grain before power and saturation.

    The noise comes from a CPU generator seeded with `seed`, so every device gets the same grain.
    """
    device = torch.device(device)
    rows, cols = noise_size(height, width, scale)
    generator = torch.Generator().manual_seed(seed)
    kernels, pad = _kernels(), max(BLUR_SIZES) // 2
    col_index = reflect101_index(-pad, cols + pad, cols).to(device)
    out = torch.empty(3, height, width, device=device)
    resampler = _RowResampler(out, rows)
    ycc = torch.empty(3, 0, cols, device=device)  # noise rows [ycc_start, generated) as Y/C1/C2
    ycc_start = generated = done = 0
    while done < rows:
        count = min(strip_rows, rows - generated)
        noise = torch.rand(count, cols, 3, generator=generator)  # sequential: strips = whole
        ycc = torch.cat([ycc, _to_ycc(noise.to(device))], dim=1)
        generated += count
        end = rows if generated == rows else generated - pad
        if end <= done:
            continue
        # Noise rows [done, end) need `pad` rows either side (reflected at the image edges).
        row_index = (reflect101_index(done - pad, end + pad, rows) - ycc_start).to(device)
        rgb = _blurred_rgb(ycc.index_select(1, row_index), col_index, kernels, pad)
        # Horizontal resize only: with the height unchanged, rows pass through exactly.
        wide = F.interpolate(rgb, size=(end - done, width), mode="bilinear", align_corners=False)
        resampler.feed(wide[0], done, last=end == rows)
        keep = max(0, end - pad)
        ycc, ycc_start = ycc[:, keep - ycc_start :], keep
        done = end
    return out


def grain_field(base: torch.Tensor, power: float, saturation: float) -> torch.Tensor:
    """Steps 5-6 on a resized base: g = (rgb - 0.5) * power * (2, 1, 3) + 1, mixed towards g_G.

    The node resizes after these steps; they are affine and the resize's weights sum to one, so
    they commute (up to float rounding), and one base cached per size serves every power.
    """
    gain = torch.tensor(CHANNEL_GAIN, device=base.device, dtype=base.dtype).view(-1, 1, 1)
    field = base * (gain * (power * saturation))
    field += base[..., 1:2, :, :] * (power * (1.0 - saturation))
    return field.add_(1.0)


def apply_grain(images: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """Step 8: clip(1 - (1 - x) * g, 0, 1) (a multiplicative screen of the grain)."""
    return (images - 1.0).mul_(field).add_(1.0).clamp_(0.0, 1.0)


def grain_fields(
    batch: int, height: int, width: int, params: GrainParams, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The (B, 3, H, W) field of a batch: image i uses seed + i."""
    bases = [grain_base(height, width, params.scale, params.seed + i, device) for i in range(batch)]
    return torch.stack([grain_field(b, params.power, params.saturation) for b in bases])


def grain_is_identity(params: GrainParams) -> bool:
    """True when the step changes nothing (disabled, or power 0)."""
    return not params.enabled or params.power == 0


def add_grain(images: torch.Tensor, params: GrainParams) -> torch.Tensor:
    """The whole node on a (B, 3, H, W) batch, uncached."""
    if grain_is_identity(params):
        return images
    _, _, height, width = images.shape
    fields = grain_fields(images.shape[0], height, width, params, images.device)
    return apply_grain(images, fields.to(images.dtype))
