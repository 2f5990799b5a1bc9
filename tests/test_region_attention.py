"""The regional attention mask (issue 14), entry by entry and through the tiny Flux
transformer: blocked pairs get zero attention in every block, and isolated regions do not
read each other's image tokens."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F

from engine.flux import latents
from engine.flux.denoiser import MASK_ROW_ALIGN
from engine.models.tiny import TINY_TRANSFORMER, build_tiny_transformer
from engine.regions.attention import (
    TextSegments,
    regional_attention_mask,
    token_segment_weights,
)
from engine.regions.masks import split_masks, token_owners, token_weights

Z, X = 0.0, -math.inf
CPU = torch.device("cpu")
SEGMENTS = TextSegments(base=2, regions=(3, 3))
HARD = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])  # token 3: background


def test_text_segments():
    assert SEGMENTS.total == 8
    assert SEGMENTS.base_slice == slice(0, 2)
    assert SEGMENTS.region_slices == (slice(2, 5), slice(5, 8))
    no_base = TextSegments(0, (4, 5, 6))
    assert no_base.total == 15 and no_base.region_slices == (slice(0, 4), slice(4, 9), slice(9, 15))
    with pytest.raises(ValueError):
        TextSegments(-1, (3,))


# The mask, entry by entry -----------------------------------------------------------------


def test_hard_mask_matches_the_rules_entry_by_entry():
    owners = token_owners(HARD)
    assert owners.tolist() == [0, 0, 1, -1]
    mask = regional_attention_mask(SEGMENTS, HARD, owners, torch.float32, CPU)
    expected = torch.tensor(
        [
            # base  | region 1 text | region 2 text | image 0  1  2  3
            [Z, Z, X, X, X, X, X, X, X, X, X, X],  # base text: itself only
            [Z, Z, X, X, X, X, X, X, X, X, X, X],
            [X, X, Z, Z, Z, X, X, X, Z, Z, X, X],  # region 1 text: itself + log w_1
            [X, X, Z, Z, Z, X, X, X, Z, Z, X, X],
            [X, X, Z, Z, Z, X, X, X, Z, Z, X, X],
            [X, X, X, X, X, Z, Z, Z, X, X, Z, X],  # region 2 text: itself + log w_2
            [X, X, X, X, X, Z, Z, Z, X, X, Z, X],
            [X, X, X, X, X, Z, Z, Z, X, X, Z, X],
            [Z, Z, Z, Z, Z, X, X, X, Z, Z, X, Z],  # image 0 (region 1)
            [Z, Z, Z, Z, Z, X, X, X, Z, Z, X, Z],  # image 1 (region 1)
            [Z, Z, X, X, X, Z, Z, Z, X, X, Z, Z],  # image 2 (region 2)
            [Z, Z, X, X, X, X, X, X, Z, Z, Z, Z],  # image 3 (background)
        ]
    )
    assert mask.shape == (1, 1, 12, 12) and mask.dtype == torch.float32
    assert torch.equal(mask[0, 0], expected)
    assert mask.stride(-2) % MASK_ROW_ALIGN == 0 and mask.stride(-1) == 1


def test_without_isolation_image_tokens_see_every_image_token():
    mask = regional_attention_mask(SEGMENTS, HARD, token_owners(HARD), torch.float32, CPU, False)
    assert not mask[0, 0, 8:, 8:].any()
    isolated = regional_attention_mask(SEGMENTS, HARD, token_owners(HARD), torch.float32, CPU)
    assert torch.equal(mask[0, 0, :, :8], isolated[0, 0, :, :8])
    assert torch.equal(mask[0, 0, :8], isolated[0, 0, :8])


def test_soft_weights_give_their_logarithm():
    weights = torch.tensor([[1.0, 0.75, 0.25, 0.0], [0.0, 0.25, 0.75, 1.0]])
    owners = token_owners(weights)
    assert owners.tolist() == [0, 0, 1, 1]
    m = regional_attention_mask(SEGMENTS, weights, owners, torch.float32, CPU)[0, 0]
    # torch.allclose counts equal infinities as close
    log_1 = torch.tensor([Z, math.log(0.75), math.log(0.25), X])
    log_2 = torch.tensor([X, math.log(0.25), math.log(0.75), Z])
    for row in (2, 3, 4):
        assert torch.allclose(m[row, 8:], log_1)
    for row in (5, 6, 7):
        assert torch.allclose(m[row, 8:], log_2)
    for col in (2, 3, 4):
        assert torch.allclose(m[8:, col], log_1)
    for col in (5, 6, 7):
        assert torch.allclose(m[8:, col], log_2)
    assert not m[8:, :2].any()
    owned = torch.tensor([[Z, Z, X, X], [Z, Z, X, X], [X, X, Z, Z], [X, X, Z, Z]])
    assert torch.equal(m[8:, 8:], owned)


def test_mask_in_bfloat16_keeps_the_alignment():
    mask = regional_attention_mask(SEGMENTS, HARD, token_owners(HARD), torch.bfloat16, CPU)
    assert mask.dtype == torch.bfloat16 and mask.stride(-2) == 16
    reference = regional_attention_mask(SEGMENTS, HARD, token_owners(HARD), torch.float32, CPU)
    assert torch.equal(mask.float(), reference)


def test_no_mask_when_every_entry_would_be_zero():
    full = torch.ones(1, 4)
    owners = torch.zeros(4, dtype=torch.long)
    assert regional_attention_mask(TextSegments(0, (5,)), full, owners, torch.float32, CPU) is None
    # A base segment, a soft weight or a second region each need a mask.
    with_base = regional_attention_mask(TextSegments(2, (5,)), full, owners, torch.float32, CPU)
    assert with_base is not None and torch.isinf(with_base[0, 0, :2, 2:]).all()
    soft = torch.tensor([[1.0, 1.0, 0.5, 1.0]])
    assert regional_attention_mask(TextSegments(0, (5,)), soft, owners, torch.float32, CPU).any()
    two = torch.ones(2, 4)
    split = torch.tensor([0, 0, 1, 1])
    assert regional_attention_mask(TextSegments(0, (5, 0)), two, split, torch.float32, CPU).any()
    assert (
        regional_attention_mask(TextSegments(0, (5, 0)), two, split, torch.float32, CPU, False)
        is None
    )


def test_shape_mismatches_are_refused():
    owners = token_owners(HARD)
    with pytest.raises(ValueError, match="regions"):
        regional_attention_mask(TextSegments(2, (3,)), HARD, owners, torch.float32, CPU)
    with pytest.raises(ValueError, match="regions"):
        regional_attention_mask(SEGMENTS, HARD[0], owners, torch.float32, CPU)
    with pytest.raises(ValueError, match="owners"):
        regional_attention_mask(SEGMENTS, HARD, owners[:3], torch.float32, CPU)
    with pytest.raises(ValueError, match="non-negative"):
        regional_attention_mask(SEGMENTS, -HARD, owners, torch.float32, CPU)
    with pytest.raises(ValueError, match="image tokens"):
        token_segment_weights(SEGMENTS, HARD, 5)


def test_token_segment_weights():
    weights = torch.tensor([[1.0, 0.75, 0.25, 0.0], [0.0, 0.25, 0.75, 1.0]])
    expected = torch.tensor(
        [
            [0, 0, 1, 1, 1, 0, 0, 0, 1.0, 0.75, 0.25, 0.0],
            [0, 0, 0, 0, 0, 1, 1, 1, 0.0, 0.25, 0.75, 1.0],
        ]
    )
    assert torch.equal(token_segment_weights(SEGMENTS, weights, 4), expected)


def test_mask_builds_fast_at_1024_squared():
    masks = split_masks(1024, 1024, 2, "left_right", 32, 48)
    weights = token_weights(masks)
    owners = token_owners(weights)
    segments = TextSegments(512, (512, 512))
    start = time.perf_counter()
    mask = regional_attention_mask(segments, weights, owners, torch.bfloat16, CPU)
    assert time.perf_counter() - start < 1.0
    assert mask.shape == (1, 1, 5632, 5632)


# Through the tiny Flux transformer --------------------------------------------------------

SIDE = 64  # 4 × 4 image tokens
IMAGE_IDS = latents.image_ids(SIDE, SIDE, "cpu")
WIDTH = TINY_TRANSFORMER["joint_attention_dim"]


@pytest.fixture(scope="module")
def transformer() -> torch.nn.Module:
    return build_tiny_transformer()


def inputs(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, IMAGE_IDS.shape[0], 64, generator=generator),
        "encoder_hidden_states": torch.randn(1, SEGMENTS.total, WIDTH, generator=generator),
        "pooled_projections": torch.randn(1, WIDTH, generator=generator),
        "timestep": torch.tensor([0.6]),
        "guidance": torch.tensor([3.5]),
        "img_ids": IMAGE_IDS,
        "txt_ids": torch.zeros(SEGMENTS.total, 3),
        "return_dict": False,
    }


def run(transformer, args: dict, mask: torch.Tensor | None) -> torch.Tensor:
    kwargs = {} if mask is None else {"joint_attention_kwargs": {"attention_mask": mask}}
    with torch.inference_mode():
        return transformer(**args, **kwargs)[0]


def region_mask(gradient: float, threshold: float, isolate: bool = True):
    weights = token_weights(split_masks(SIDE, SIDE, 2, "left_right", gradient, 0))
    owners = token_owners(weights, threshold)
    mask = regional_attention_mask(SEGMENTS, weights, owners, torch.float32, CPU, isolate)
    return mask, owners


@pytest.mark.parametrize(("gradient", "threshold"), [(0, 0.5), (24, 0.9)])
def test_blocked_pairs_get_no_attention_in_every_block(
    transformer, monkeypatch, gradient, threshold
):
    """softmax(QKᵀ/√d + mask) recorded at every SDPA call: exactly 0 where the mask is −inf,
    > 0 elsewhere, and SDPA's own output is that attention's (so it honours the mask)."""
    mask, owners = region_mask(gradient, threshold)
    if gradient:
        assert (owners == -1).any()  # the soft case has background tokens at the boundary
        assert ((mask[0, 0] != 0) & ~torch.isinf(mask[0, 0])).any()  # and log w entries
    records = []
    original = F.scaled_dot_product_attention

    def recording(query, key, value, attn_mask=None, scale=None, **kwargs):
        scores = query @ key.transpose(-2, -1) * (scale or 1 / math.sqrt(query.shape[-1]))
        probs = (scores + attn_mask).softmax(dim=-1)
        out = original(query, key, value, attn_mask=attn_mask, scale=scale, **kwargs)
        records.append((attn_mask, probs, out, probs @ value))
        return out

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    run(transformer, inputs(), mask)
    blocks = TINY_TRANSFORMER["num_layers"] + TINY_TRANSFORMER["num_single_layers"]
    assert len(records) == blocks
    blocked = torch.isinf(mask[0, 0])
    assert blocked.any() and (~blocked).any()
    for seen, probs, out, expected in records:
        assert torch.equal(seen, mask)
        assert probs.shape == (1, TINY_TRANSFORMER["num_attention_heads"], 24, 24)
        assert (probs[:, :, blocked] == 0).all()
        assert (probs[:, :, ~blocked] > 0).all()
        assert torch.allclose(out, expected, atol=1e-5, rtol=0)


def test_isolated_regions_do_not_read_each_other(transformer):
    """With hard weights and isolation, region 1's image tokens cannot change region 2's
    output: the property a region's LoRA relies on."""
    mask, owners = region_mask(0, 0.5)
    first, second = owners == 0, owners == 1
    assert first.sum() == 8 and second.sum() == 8
    args = inputs()
    changed = dict(args)
    noise = torch.randn(1, 8, 64, generator=torch.Generator().manual_seed(7))
    changed["hidden_states"] = args["hidden_states"].clone()
    changed["hidden_states"][:, first] = noise
    before, after = run(transformer, args, mask), run(transformer, changed, mask)
    assert torch.allclose(before[:, second], after[:, second], atol=1e-6, rtol=0)
    assert not torch.allclose(before[:, first], after[:, first], atol=1e-3)
    # Without isolation (or without a mask) region 2 does read region 1's image tokens.
    mixed, _ = region_mask(0, 0.5, isolate=False)
    for other in (mixed, None):
        leaked = (
            run(transformer, changed, other)[:, second] - run(transformer, args, other)[:, second]
        )
        assert leaked.abs().max() > 1e-4
