"""Crop-and-stitch (lquesada's InpaintCropImproved / InpaintStitchImproved) on hand-made masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.faces.crop_stitch import (
    CropParams,
    PixelBox,
    blend_weights,
    context_box,
    crop_for_inpaint,
    fit_box_to_aspect,
    mask_bounds,
    prepare_mask,
    stitch,
    target_size,
)
from engine.faces.crop_stitch_mask import (
    blur_mask,
    expand_kernel_size,
    expand_mask,
    fill_holes_ladder,
    fill_mask_holes,
    hipass_mask,
)


def smooth_image(height: int, width: int) -> torch.Tensor:
    """A (1, 3, H, W) image with low-frequency content, so resize error stays small."""
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    planes = [
        0.5 + 0.3 * torch.sin(2.0 * x + 1.5 * y),
        0.2 + 0.6 * x * y,
        0.5 + 0.25 * torch.cos(3.0 * y - x),
    ]
    return torch.stack(planes).unsqueeze(0).float()


def rect_mask(height: int, width: int, x: int, y: int, w: int, h: int) -> torch.Tensor:
    mask = torch.zeros(height, width)
    mask[y : y + h, x : x + w] = 1.0
    return mask


# --- mask steps ------------------------------------------------------------------------------


def test_fill_holes_closes_a_ring_at_its_level() -> None:
    mask = rect_mask(40, 40, 10, 10, 20, 20) * 0.5
    mask[13:27, 13:27] = 0.0  # a ring of value 0.5, 3 px thick
    filled = fill_mask_holes(mask)
    assert torch.all(filled[10:30, 10:30] == 0.5)
    assert torch.all(filled[:10] == 0) and torch.all(filled[:, :10] == 0)


def test_fill_holes_closes_a_one_pixel_gap_but_not_a_wide_one() -> None:
    ring = rect_mask(40, 40, 10, 10, 20, 20)
    ring[12:28, 12:28] = 0.0
    narrow, wide = ring.clone(), ring.clone()
    narrow[19, 10:12] = 0.0  # 1 px gap: the 3x3 closing bridges it
    wide[17:23, 10:12] = 0.0  # 6 px gap: the inside leaks out
    assert torch.all(fill_mask_holes(narrow)[12:28, 12:28] == 1.0)
    assert torch.all(fill_mask_holes(wide)[14:26, 14:26] == 0.0)


def test_expand_kernel_follows_the_node_formula() -> None:
    for pixels in (0, 1, 8, 16, 32, 64):
        assert expand_kernel_size(pixels) == math.ceil(pixels / 4 * 1.5 + 1)
    assert [expand_kernel_size(p) for p in (8, 16, 32)] == [4, 7, 13]


def test_expand_grows_a_square_by_the_kernel() -> None:
    mask = rect_mask(60, 60, 25, 25, 10, 10)
    grown = mask_bounds(expand_mask(mask, 32))  # 13 px footprint: 6 px each side
    assert grown == PixelBox(19, 19, 22, 22)
    even = mask_bounds(expand_mask(mask, 8))  # 4 px footprint (scipy: 2 before, 1 after)
    assert even is not None and even.width == 10 + 4 - 1


def test_blend_blur_has_sigma_b_over_8_and_scipy_radius() -> None:
    mask = torch.zeros(81, 81)
    mask[40, 40] = 1.0
    blurred = blur_mask(mask, 32).double()  # σ = 4, radius int(4σ + 0.5) = 16
    assert mask_bounds(blurred) == PixelBox(24, 24, 33, 33)
    offsets = torch.arange(81, dtype=torch.float64) - 40
    row = blurred.sum(dim=0)
    variance = float((row * offsets**2).sum() / row.sum())
    assert variance == pytest.approx(16.0, rel=0.01)


def test_hipass_zeroes_values_below_threshold() -> None:
    mask = torch.tensor([[0.0, 0.05, 0.0999, 0.1, 0.5, 1.0]])
    expected = torch.tensor([[0.0, 0.0, 0.0, 0.1, 0.5, 1.0]])  # float32 0.1 is kept
    assert torch.equal(hipass_mask(mask, 0.1), expected)


def test_prepare_mask_runs_the_steps_in_the_node_order() -> None:
    mask = rect_mask(64, 64, 20, 20, 16, 16)
    mask[26:30, 26:30] = 0.0
    params = CropParams(mask_expand_pixels=8, mask_invert=True, mask_blend_pixels=16)
    expected = 1.0 - expand_mask(fill_mask_holes(mask), 8)
    expected = hipass_mask(blur_mask(expand_mask(expected, 16), 16), 0.1)
    assert torch.equal(prepare_mask(mask, params), expected)
    plain = CropParams(mask_fill_holes=False, mask_blend_pixels=0, mask_hipass_filter=0.0)
    assert torch.equal(prepare_mask(mask, plain), mask)


# --- context and crop box --------------------------------------------------------------------


def test_context_grows_by_the_factor_and_clamps() -> None:
    mask = rect_mask(200, 200, 40, 50, 50, 30)
    assert context_box(mask, 1.2) == PixelBox(35, 47, 60, 36)  # +5 px and +3 px a side
    assert context_box(mask, 1.0) == PixelBox(40, 50, 50, 30)
    corner = rect_mask(200, 200, 2, 190, 50, 10)
    # 12.5 and 2.5 round half to even (torch, float32, like the node): 12 and 2, then clamped.
    assert context_box(corner, 1.5) == PixelBox(0, 188, 64, 12)


def test_context_is_the_whole_image_for_an_empty_mask() -> None:
    empty = torch.zeros(90, 120)
    assert context_box(empty, 1.2) == PixelBox(0, 0, 120, 90)
    extra = rect_mask(90, 120, 5, 5, 10, 10)
    assert context_box(empty, 1.2, extra) == PixelBox(0, 0, 120, 90)


def test_context_joins_the_context_mask() -> None:
    mask = rect_mask(200, 200, 100, 100, 20, 20)
    extra = rect_mask(200, 200, 10, 150, 5, 30)
    assert context_box(mask, 1.2, extra) == PixelBox(10, 98, 112, 82)


def test_target_is_rounded_up_to_the_output_padding() -> None:
    box = PixelBox(0, 0, 10, 10)
    assert target_size(CropParams(), box) == (512, 512)
    odd = CropParams(output_target_width=500, output_target_height=300)
    assert target_size(odd, box) == (512, 320)
    assert target_size(CropParams(output_target_width=500, output_padding=0), box) == (500, 512)
    unresized = CropParams(output_resize_to_target_size=False, output_padding=64)
    assert target_size(unresized, PixelBox(0, 0, 100, 60)) == (128, 64)


@pytest.mark.parametrize(
    "box",
    [
        PixelBox(50, 40, 30, 60),
        PixelBox(0, 0, 30, 60),
        PixelBox(170, 100, 30, 20),
        PixelBox(5, 130, 80, 20),
    ],
)
@pytest.mark.parametrize("target", [(512, 512), (768, 512), (512, 768)])
def test_crop_box_hits_the_aspect_and_stays_inside(box: PixelBox, target: tuple[int, int]) -> None:
    fitted = fit_box_to_aspect(box, (200, 150), target)
    aspect = target[0] / target[1]
    assert fitted.width == int(box.height * aspect) or fitted.height == int(box.width / aspect)
    assert fitted.width >= box.width and fitted.height >= box.height
    assert fitted.x >= 0 and fitted.right <= 200 and fitted.y >= 0 and fitted.bottom <= 150
    # The grown side is centred where the image allows it.
    if fitted.width > box.width and fitted.x > 0 and fitted.right < 200:
        assert abs((fitted.x + fitted.right) - (box.x + box.right)) <= 1


def test_crop_box_longer_than_the_image_is_centred_over_it() -> None:
    fitted = fit_box_to_aspect(PixelBox(0, 10, 100, 40), (100, 60), (512, 1024))
    assert fitted == PixelBox(0, -70, 100, 200)  # height 200 over 60: 70 above, 70 below


# --- crop ------------------------------------------------------------------------------------


def test_crop_has_the_target_size_and_the_blend_mask_is_blurred_again() -> None:
    image = smooth_image(120, 160)
    result = crop_for_inpaint(image, rect_mask(120, 160, 60, 40, 30, 30), CropParams())
    assert result.image.shape == (1, 3, 512, 512) and result.mask.shape == (512, 512)
    assert torch.equal(result.blend_mask, blur_mask(result.mask, 32))
    assert result.plan.original == PixelBox(0, 0, 160, 120)


def test_context_past_the_image_replicates_edges_with_mask_one() -> None:
    image = torch.rand(1, 3, 60, 100)
    params = CropParams(
        mask_fill_holes=False,
        mask_blend_pixels=0,
        output_resize_to_target_size=False,
        output_padding=64,
    )
    result = crop_for_inpaint(image, torch.ones(60, 100), params)
    # Context 100x60 -> 128x64 target -> 120 wide at aspect 2 -> grown to 128x64, centred.
    assert result.plan.context_in_image == PixelBox(-14, -2, 128, 64)
    crop, inner = result.image[0], image[0]
    assert torch.equal(crop[:, 2:62, 14:114], inner)
    assert torch.equal(crop[:, 2:62, :14], inner[:, :, :1].expand(-1, -1, 14))
    assert torch.equal(crop[:, 2:62, 114:], inner[:, :, -1:].expand(-1, -1, 14))
    assert torch.equal(crop[:, :2, 14:114], inner[:, :1].expand(-1, 2, -1))
    assert torch.equal(crop[:, 0, 0], inner[:, 0, 0])  # corners replicate too
    assert torch.all(result.mask == 1.0)


def test_resized_crop_past_the_image_has_mask_one_in_the_extension() -> None:
    image = smooth_image(100, 200)
    mask = rect_mask(100, 200, 20, 10, 160, 80)
    params = CropParams(mask_fill_holes=False, output_target_width=512, output_target_height=768)
    result = crop_for_inpaint(image, mask, params)
    ctx = result.plan.context_in_image
    assert ctx.y < 0 and ctx.bottom > 100 and ctx.x >= 0 and ctx.right <= 200
    rows_above = round(-ctx.y * 768 / ctx.height)
    assert torch.all(result.mask[: rows_above - 8] > 1.0 - 1e-6)
    assert torch.all(result.mask[-(rows_above - 8) :] > 1.0 - 1e-6)
    out = stitch(result.plan, image, result.image)
    assert out.shape == image.shape


# --- stitch ----------------------------------------------------------------------------------


ROUND_TRIP_TOLERANCE = 0.02  # bicubic up to 512 then bilinear back, on a smooth image


def check_round_trip(image: torch.Tensor, mask: torch.Tensor, params: CropParams) -> None:
    result = crop_for_inpaint(image, mask, params)
    out = stitch(result.plan, image, result.image)  # the "identity inpaint"
    weights = blend_weights(result.plan)
    untouched = weights == 0
    assert untouched.any() and (~untouched).any()
    assert torch.equal(out[0][:, untouched], image[0][:, untouched])
    assert float((out - image).abs().max()) < ROUND_TRIP_TOLERANCE

    zeros = stitch(result.plan, image, torch.zeros_like(result.image))
    changed = (zeros != image).any(dim=1)[0]
    assert not torch.any(changed & untouched)
    assert torch.all(changed[weights > 1e-6])


def test_identity_inpaint_keeps_unblended_pixels_bit_identical() -> None:
    image = smooth_image(160, 200)
    mask = rect_mask(160, 200, 80, 60, 40, 30)
    check_round_trip(image, mask, CropParams())


@pytest.mark.parametrize(
    ("x", "y", "w", "h"),
    [(90, 0, 30, 20), (90, 140, 30, 20), (0, 60, 20, 40), (180, 60, 20, 40)],
    ids=["top", "bottom", "left", "right"],
)
def test_round_trip_near_each_edge(x: int, y: int, w: int, h: int) -> None:
    image = smooth_image(160, 200)
    params = CropParams(mask_fill_holes=False, output_target_width=384, output_target_height=256)
    check_round_trip(image, rect_mask(160, 200, x, y, w, h), params)


def test_stitch_accepts_an_inpaint_of_another_size() -> None:
    image = smooth_image(120, 160)
    result = crop_for_inpaint(image, rect_mask(120, 160, 60, 40, 30, 30), CropParams())
    half = torch.nn.functional.interpolate(result.image, size=(256, 256), mode="area")
    out = stitch(result.plan, image, half)
    untouched = blend_weights(result.plan) == 0
    assert torch.equal(out[0][:, untouched], image[0][:, untouched])
    assert float((out - image).abs().max()) < 0.05


def test_mask_invert_inpaints_everything_but_the_mask() -> None:
    image = smooth_image(100, 140)
    mask = rect_mask(100, 140, 50, 30, 40, 40)
    params = CropParams(mask_invert=True, mask_fill_holes=False, mask_blend_pixels=8)
    result = crop_for_inpaint(image, mask, params)
    assert result.plan.context_in_image == PixelBox(0, -20, 140, 140)
    out = stitch(result.plan, image, torch.zeros_like(result.image))
    assert torch.equal(out[:, :, 50, 70], image[:, :, 50, 70])  # the middle of the kept area
    assert torch.all(out[:, :, 2, 2] < image[:, :, 2, 2])


def test_rejects_what_it_cannot_honour() -> None:
    with pytest.raises(ValueError, match="preresize"):
        CropParams(preresize=True)
    with pytest.raises(ValueError, match="output_padding"):
        CropParams(output_padding=10)
    with pytest.raises(ValueError, match="mask_blend_pixels"):
        CropParams(mask_blend_pixels=65)
    with pytest.raises(ValueError, match="mask"):
        crop_for_inpaint(smooth_image(10, 10), torch.zeros(10, 11), CropParams())
    result = crop_for_inpaint(smooth_image(64, 64), rect_mask(64, 64, 20, 20, 8, 8), CropParams())
    with pytest.raises(ValueError, match="canvas_image"):
        stitch(result.plan, smooth_image(64, 65), result.image)


@pytest.mark.parametrize("seed", range(4))
def test_fill_holes_window_matches_the_whole_image_ladder(seed: int) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :56]
    mask = np.zeros((48, 56))
    for cx, cy in ((0, 20), (55, 30), (25, 0), (30, 47), (28, 24)):  # rings on every edge
        d = np.hypot(xx - cx, yy - cy)
        mask = np.maximum(mask, ((d < 9) & (d > 6)) * rng.uniform(0.2, 1.0))
    mask = np.where(rng.random(mask.shape) < 0.1, 0.0, mask).astype(np.float32)
    expected = fill_holes_ladder(mask.astype(np.float64)).astype(np.float32)
    assert np.array_equal(fill_mask_holes(torch.from_numpy(mask)).numpy(), expected)
    corner = np.zeros((48, 56), np.float32)
    corner[5:20, 30:45] = 0.7
    corner[8:12, 33:40] = 0.0
    expected = fill_holes_ladder(corner.astype(np.float64)).astype(np.float32)
    assert np.array_equal(fill_mask_holes(torch.from_numpy(corner)).numpy(), expected)
