"""Region masks for regional prompting (issue 14): split, blur, painted, per-token weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import gaussian_blur

from engine.errors import InputError
from engine.regions.masks import (
    blur_kernel_size,
    blur_masks,
    mask_preview,
    painted_masks,
    split_masks,
    token_owners,
    token_weights,
)

# Split masks ------------------------------------------------------------------------------


def test_hard_split_is_exactly_zero_or_one_at_the_boundary_column():
    masks = split_masks(32, 16, 2, "left_right", 0, 0)
    assert masks.shape == (2, 16, 32) and masks.dtype == torch.float32
    # b_1 = round(32 / 2) = 16; pixel 15's centre 15.5 < 16, pixel 16's centre 16.5 >= 16.
    assert (masks[0, :, :16] == 1).all() and (masks[0, :, 16:] == 0).all()
    assert torch.equal(masks[1], 1 - masks[0])


def test_gradient_is_a_linear_ramp_centred_on_the_boundary():
    masks = split_masks(32, 16, 2, "left_right", 4, 0)
    # s(c) = clamp((c - 16) / 4 + 0.5, 0, 1) at centres 13.5 ... 18.5; region 1 = 1 - s.
    expected_1 = torch.tensor([1.0, 0.875, 0.625, 0.375, 0.125, 0.0])
    for row in (0, 7, 15):
        assert torch.equal(masks[0, row, 13:19], expected_1)
        assert torch.equal(masks[1, row, 13:19], 1 - expected_1)
    assert (masks[0, :, :13] == 1).all() and (masks[0, :, 19:] == 0).all()
    assert torch.equal(masks[1], 1 - masks[0])


def test_three_regions_partition_the_canvas():
    hard = split_masks(50, 16, 3, "left_right", 0, 0)
    # b = round(50/3) = 17, round(100/3) = 33
    assert (hard[0, :, :17] == 1).all() and (hard[0, :, 17:] == 0).all()
    assert (hard[1, :, 17:33] == 1).all() and (hard[1, :, :17] == 0).all()
    assert (hard[1, :, 33:] == 0).all() and (hard[2, :, 33:] == 1).all()
    assert (hard[2, :, :33] == 0).all()
    assert torch.equal(hard.sum(0), torch.ones(16, 50))
    soft = split_masks(96, 16, 3, "left_right", 6, 2)
    assert (soft >= 0).all() and (soft <= 1).all()
    assert torch.allclose(soft.sum(0), torch.ones(16, 96), atol=1e-6, rtol=0)
    # The middle band (32 ... 64) rises and falls: 0 far left and far right, 1 in its centre.
    assert soft[1, 0, 0] < 1e-6 and soft[1, 0, 95] < 1e-6 and soft[1, 0, 48] > 0.999


def test_top_bottom_puts_region_one_on_top():
    masks = split_masks(8, 20, 2, "top_bottom", 0, 0)
    assert masks.shape == (2, 20, 8)
    assert (masks[0, :10] == 1).all() and (masks[0, 10:] == 0).all()
    assert torch.equal(masks[1], 1 - masks[0])
    ramp = split_masks(8, 20, 2, "top_bottom", 4, 0)
    assert torch.equal(ramp[0, 7:13, 3], torch.tensor([1.0, 0.875, 0.625, 0.375, 0.125, 0.0]))


def test_bad_split_arguments_are_refused():
    with pytest.raises(ValueError, match="direction"):
        split_masks(32, 32, 2, "diagonal", 0, 0)
    with pytest.raises(ValueError):
        split_masks(32, 32, 0, "left_right", 0, 0)
    with pytest.raises(ValueError):
        split_masks(32, 32, 2, "left_right", -1, 0)


# Blur (ComfyUI_essentials' MaskBlur+) -----------------------------------------------------


def test_blur_kernel_follows_mask_blur_plus_and_fits_the_canvas():
    assert blur_kernel_size(0, 64, 64) == 0
    assert blur_kernel_size(88, 1216, 1216) == 529  # int(6·88 + 1)
    assert blur_kernel_size(48, 896, 896) == 289
    assert blur_kernel_size(2.5, 64, 64) == 17  # int(16) is even: 17
    assert blur_kernel_size(3, 64, 48) == 19
    assert blur_kernel_size(6, 16, 32) == 31  # 37 clamped: 31 // 2 = 15 < 16
    with pytest.raises(ValueError):
        blur_kernel_size(-1, 64, 64)


def test_split_blur_matches_torchvision_with_the_mask_blur_plus_kernel():
    sharp = split_masks(64, 48, 2, "left_right", 0, 0)
    blurred = split_masks(64, 48, 2, "left_right", 0, 3)
    reference = gaussian_blur(sharp[:1, None], [19, 19], [3.0, 3.0])[:, 0]
    assert torch.allclose(blurred[:1], reference, atol=1e-6, rtol=0)
    assert torch.equal(blurred[1], 1 - blurred[0])  # the last region is the inverse


def test_blur_kernel_is_clamped_on_a_small_canvas():
    sharp = split_masks(32, 16, 2, "top_bottom", 2, 0)
    blurred = split_masks(32, 16, 2, "top_bottom", 2, 6)
    reference = gaussian_blur(sharp[:1, None], [31, 31], [6.0, 6.0])[:, 0]
    assert torch.allclose(blurred[:1], reference, atol=1e-6, rtol=0)
    with pytest.raises(RuntimeError, match="Padding size"):  # MaskBlur+'s own 37: too big
        gaussian_blur(sharp[:1, None], [37, 37], [6.0, 6.0])


def test_blur_masks_matches_torchvision_on_any_mask():
    masks = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(0))
    reference = gaussian_blur(masks[:, None], [25, 25], [4.0, 4.0])[:, 0]
    assert torch.allclose(blur_masks(masks, 4), reference, atol=2e-6, rtol=0)
    assert torch.equal(blur_masks(masks, 0), masks)


@pytest.mark.parametrize(("side", "amount", "size"), [(1216, 88, 529), (896, 48, 289)])
def test_seed_blurs_match_torchvision(side, amount, size):
    """The seed's canvases: the bands are constant down the columns, so torchvision's blur is
    its 1-D kernel along the rows (a [size, 1] kernel, whose vertical tap is 1)."""
    sharp = split_masks(side, side, 2, "left_right", 0, 0)
    blurred = split_masks(side, side, 2, "left_right", 0, amount)
    reference = gaussian_blur(sharp[:1, None, :1], [size, 1], [float(amount)] * 2)[0, 0, 0]
    assert torch.allclose(blurred[0, 0], reference, atol=1e-6, rtol=0)
    assert torch.equal(blurred[0, 0], blurred[0, -1])
    assert torch.equal(blurred[1], 1 - blurred[0])
    assert 0.49 < blurred[0, 0, side // 2 - 1] < 0.51  # half-way at the boundary


# Painted masks ----------------------------------------------------------------------------


def test_painted_mask_uses_alpha_when_it_is_not_opaque():
    rgba = Image.new("RGBA", (8, 8), (255, 255, 255, 0))  # white: its luminance would be 1
    rgba.paste((255, 255, 255, 255), (0, 0, 4, 8))  # left half opaque
    (mask,) = painted_masks([rgba], 16, 16, 0)
    # PIL bilinear 2× upscale: columns 0-6 = 255, 7 = 191, 8 = 64, 9-15 = 0
    expected = torch.tensor([255.0] * 7 + [191.0, 64.0] + [0.0] * 7) / 255
    assert mask.shape == (16, 16)
    for row in (0, 15):
        assert torch.allclose(mask[row], expected, atol=1e-6, rtol=0)


def test_painted_mask_uses_luminance_without_transparency():
    opaque = Image.new("RGBA", (16, 16), (255, 0, 0, 255))  # alpha all opaque: luminance
    grey = Image.new("L", (8, 8), 200)
    masks = painted_masks([opaque, grey], 16, 16, 0)
    assert masks.shape == (2, 16, 16)
    assert torch.allclose(masks[0], torch.full((16, 16), 76 / 255), atol=1e-7)  # red: L = 76
    assert torch.allclose(masks[1], torch.full((16, 16), 200 / 255), atol=1e-7)


def test_painted_masks_are_blurred_like_split_masks():
    left = Image.new("L", (32, 16), 0)
    left.paste(255, (0, 0, 16, 16))
    (blurred,) = painted_masks([left], 32, 16, 3)
    assert torch.allclose(blurred, split_masks(32, 16, 2, "left_right", 0, 3)[0], atol=1e-6)


def test_an_empty_painted_mask_says_which_region():
    painted = Image.new("L", (16, 16), 255)
    message = "Region 2's mask is empty: paint the area the region's prompt should fill"
    with pytest.raises(InputError, match=message):
        painted_masks([painted, Image.new("L", (16, 16), 0)], 16, 16, 4)
    with pytest.raises(InputError, match="Region 1's mask is empty"):
        painted_masks([Image.new("RGBA", (16, 16), (255, 255, 255, 0))], 16, 16, 0)


# Token weights and owners -----------------------------------------------------------------


def test_token_weights_are_patch_means_in_pack_order():
    mask = torch.zeros(1, 32, 32)
    mask[0, :16, :16] = 1  # token 0 (top left): 1
    mask[0, :16, 16:24] = 1  # token 1 (top right): half of it
    mask[0, 16, 0] = 1  # token 2 (bottom left): one pixel of 256
    mask[0, 16:, 16:] = 0.25  # token 3 (bottom right)
    weights = token_weights(torch.cat([mask, 1 - mask]))
    expected = torch.tensor([1.0, 0.5, 1 / 256, 0.25])
    assert weights.shape == (2, 4)
    assert torch.allclose(weights[0], expected) and torch.allclose(weights[1], 1 - expected)
    wide = token_weights(split_masks(64, 32, 2, "left_right", 0, 0))
    assert torch.equal(wide[0], torch.tensor([1.0, 1, 0, 0, 1, 1, 0, 0]))  # 2 rows of 4
    with pytest.raises(ValueError, match="multiple of 16"):
        token_weights(torch.zeros(1, 30, 32))


def test_token_owners_with_background_and_ties():
    weights = torch.tensor([[0.6, 0.4, 0.5, 0.2, 0.0], [0.4, 0.6, 0.5, 0.3, 1.0]])
    assert torch.equal(token_owners(weights), torch.tensor([0, 1, 0, -1, 1]))
    assert token_owners(weights).dtype == torch.long
    assert torch.equal(token_owners(weights, 0.55), torch.tensor([0, 1, -1, -1, 1]))


# Preview ----------------------------------------------------------------------------------


def test_preview_colours_follow_the_regions():
    masks = split_masks(32, 16, 2, "left_right", 0, 0)
    preview = mask_preview(masks)
    assert preview.mode == "RGB" and preview.size == (32, 16)
    pixels = np.asarray(preview)
    # 0.4 · 128 grey + 0.6 · orange (255, 140, 0) / blue (30, 110, 255), rounded
    assert tuple(pixels[3, 2]) == (204, 135, 51)
    assert tuple(pixels[12, 30]) == (69, 117, 204)
    assert (pixels[:, 15] == 255).all()  # the line where the token owner changes
    assert (pixels[:, 14] == (204, 135, 51)).all() and (pixels[:, 16] == (69, 117, 204)).all()
    on_black = np.asarray(mask_preview(masks, Image.new("RGB", (16, 8), (0, 0, 0))))
    assert tuple(on_black[0, 0]) == (153, 84, 0) and tuple(on_black[0, 31]) == (18, 66, 153)
