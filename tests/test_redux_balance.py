"""The Redux prompt balance as an additive attention bias on the Redux columns (specs §5)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from engine.flux import latents
from engine.flux.denoiser import MASK_ROW_ALIGN, FluxDenoiser, attention_bias_mask
from engine.flux.guidance import flux_cfg_denoiser
from engine.flux.prompt import PromptEmbeddings
from engine.models.tiny import TINY_TRANSFORMER, build_tiny_transformer
from engine.redux.blend import balance_bias, balance_scale
from engine.stages.redux import append_tokens

WIDTH = TINY_TRANSFORMER["joint_attention_dim"]
TEXT, REDUX = 7, 9
IMAGE_IDS = latents.image_ids(64, 64, "cpu")
IMAGE = IMAGE_IDS.shape[0]  # 16 packed image tokens


class Spy:
    """The tiny transformer, recording whether each call was given joint_attention_kwargs."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.transformer = transformer
        self.config = transformer.config
        self.seen: list[dict | None] = []

    def __call__(self, **kwargs):
        self.seen.append(kwargs.get("joint_attention_kwargs", "absent"))
        return self.transformer(**kwargs)


@pytest.fixture(scope="module")
def transformer() -> torch.nn.Module:
    return build_tiny_transformer()


@pytest.fixture(scope="module")
def inputs() -> tuple[PromptEmbeddings, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    text = PromptEmbeddings(
        tokens=torch.randn(1, TEXT, WIDTH, generator=generator),
        pooled=torch.randn(1, WIDTH, generator=generator),
    )
    redux = 3 * torch.randn(1, REDUX, WIDTH, generator=generator)
    x = torch.randn(2, IMAGE, 64, generator=generator)
    return text, redux, x


def velocity(transformer, embeddings: PromptEmbeddings, x: torch.Tensor) -> torch.Tensor:
    denoiser = FluxDenoiser(transformer, embeddings, IMAGE_IDS, 3.5, torch.float32)
    with torch.inference_mode():
        return denoiser.velocity(x, torch.tensor(0.6))


def balanced(text: PromptEmbeddings, redux: torch.Tensor, balance: float) -> PromptEmbeddings:
    return append_tokens(text, redux, balance_bias(balance))


# The balance as a bias --------------------------------------------------------------------


def test_balance_maps_to_log_of_twice_one_minus_b():
    assert balance_scale(0.5) == 1.0 and balance_bias(0.5) is None
    assert balance_bias(1.0) == -math.inf
    assert balance_bias(0.0) == pytest.approx(math.log(2.0))
    assert balance_bias(0.75) == pytest.approx(math.log(0.5))
    with pytest.raises(ValueError):
        balance_bias(-0.1)


def test_appended_tokens_are_not_scaled_and_carry_the_bias(inputs):
    text, redux, _ = inputs
    emb = balanced(text, redux, 0.75)
    assert torch.equal(emb.tokens, torch.cat([text.tokens, redux], dim=1))
    assert emb.pooled is text.pooled
    expected = torch.tensor([0.0] * TEXT + [math.log(0.5)] * REDUX)
    assert torch.allclose(emb.token_bias, expected)
    assert balanced(text, redux, 0.5).token_bias is None
    # A second block after a biased one: the first keeps its bias, the new one gets 0.
    twice = append_tokens(balanced(text, redux, 1.0), redux)
    assert twice.token_bias.shape == (TEXT + 2 * REDUX,)
    assert torch.isinf(twice.token_bias[TEXT : TEXT + REDUX]).all()
    assert not twice.token_bias[:TEXT].any() and not twice.token_bias[TEXT + REDUX :].any()


# The mask ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [-math.inf, math.log(0.5), math.log(2.0)])
def test_mask_has_the_bias_only_in_redux_columns_and_none_in_redux_rows(bias):
    token_bias = torch.tensor([0.0] * TEXT + [bias] * REDUX)
    mask = attention_bias_mask(token_bias, IMAGE, torch.float32, torch.device("cpu"))
    size = TEXT + REDUX + IMAGE
    assert mask.shape == (1, 1, size, size)
    assert mask.stride(-2) % MASK_ROW_ALIGN == 0 and mask.stride(-1) == 1
    m = mask[0, 0]
    redux = slice(TEXT, TEXT + REDUX)
    seeing = torch.ones(size, dtype=torch.bool)
    seeing[redux] = False  # the query rows of text and image tokens
    assert (m[seeing][:, redux] == bias).all()
    assert not m[redux].any()  # Redux rows: no bias at all
    others = torch.ones(size, dtype=torch.bool)
    others[redux] = False
    assert not m[:, others].any()  # text and image columns: no bias


def test_mask_is_built_in_the_compute_dtype():
    token_bias = torch.tensor([0.0] * TEXT + [-math.inf] * REDUX)
    mask = attention_bias_mask(token_bias, IMAGE, torch.bfloat16, torch.device("cpu"))
    assert mask.dtype == torch.bfloat16
    assert torch.isinf(mask[0, 0, 0, TEXT]) and mask[0, 0, TEXT, TEXT] == 0


# Through the transformer ------------------------------------------------------------------


def test_neutral_balance_passes_no_mask_and_is_bit_identical(transformer, inputs):
    text, redux, x = inputs
    spy = Spy(transformer)
    neutral = velocity(spy, balanced(text, redux, 0.5), x)
    plain = PromptEmbeddings(torch.cat([text.tokens, redux], dim=1), text.pooled)
    assert torch.equal(neutral, velocity(transformer, plain, x))
    assert spy.seen == ["absent"]


def test_full_balance_is_the_prompt_without_the_references(transformer, inputs):
    """-inf on the Redux columns: text and image tokens never read them (the key property)."""
    text, redux, x = inputs
    spy = Spy(transformer)
    silenced = velocity(spy, balanced(text, redux, 1.0), x)
    text_only = velocity(transformer, text, x)
    assert torch.isfinite(silenced).all()
    assert torch.allclose(silenced, text_only, atol=1e-5, rtol=0)
    with_redux = velocity(transformer, balanced(text, redux, 0.5), x)
    assert (with_redux - text_only).abs().max() > 1e-3  # the references do matter otherwise
    (kwargs,) = spy.seen
    assert kwargs["attention_mask"].shape == (1, 1, TEXT + REDUX + IMAGE, TEXT + REDUX + IMAGE)


def test_intermediate_balances_move_steadily_between_the_ends(transformer, inputs):
    text, redux, x = inputs
    text_only = velocity(transformer, text, x)
    outputs = {b: velocity(transformer, balanced(text, redux, b), x) for b in (0, 0.25, 0.5, 0.75)}
    distance = [(outputs[b] - text_only).norm().item() for b in (0, 0.25, 0.5, 0.75)]
    assert distance == sorted(distance, reverse=True) and distance[-1] > 1e-3
    middle = outputs[0.75]
    assert not torch.allclose(middle, outputs[0.5], atol=1e-4)
    assert not torch.allclose(middle, text_only, atol=1e-4)


def test_full_balance_in_bfloat16_stays_finite_and_close(inputs):
    text, redux, x = inputs
    transformer = build_tiny_transformer().to(torch.bfloat16)
    cast = dataclasses.replace
    emb = balanced(text, redux, 1.0)
    emb = cast(emb, tokens=emb.tokens.bfloat16(), pooled=emb.pooled.bfloat16())
    text16 = cast(text, tokens=text.tokens.bfloat16(), pooled=text.pooled.bfloat16())

    def run(embeddings):
        denoiser = FluxDenoiser(transformer, embeddings, IMAGE_IDS, 3.5, torch.bfloat16)
        with torch.inference_mode():
            return denoiser.velocity(x, torch.tensor(0.6))

    silenced = run(emb)
    assert torch.isfinite(silenced).all()
    assert torch.allclose(silenced, run(text16), atol=2e-2, rtol=0)


def test_the_negative_branch_gets_no_mask(transformer, inputs):
    text, redux, x = inputs
    spy = Spy(transformer)
    positive = FluxDenoiser(spy, balanced(text, redux, 0.8), IMAGE_IDS, 3.5, torch.float32)
    guided = flux_cfg_denoiser(positive, text, 3.0)
    with torch.inference_mode():
        guided(x, torch.tensor(0.6))
        guided(x, torch.tensor(0.4))
    cond, uncond = spy.seen[0::2], spy.seen[1::2]
    assert all(isinstance(k, dict) for k in cond) and uncond == ["absent", "absent"]
    # one mask for the whole pass, not one per step
    assert cond[0]["attention_mask"] is cond[1]["attention_mask"]


def test_a_token_bias_of_the_wrong_length_is_refused(transformer, inputs):
    text, redux, x = inputs
    wrong = dataclasses.replace(text, token_bias=torch.zeros(TEXT + 1))
    with pytest.raises(ValueError, match="token bias"):
        velocity(transformer, wrong, x)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_first_block_cache_passes_the_mask_to_every_block(transformer, inputs, enabled):
    from engine.flux.fbcache import FirstBlockCache
    from engine.recipe import FirstBlockCacheParams

    text, redux, x = inputs
    params = FirstBlockCacheParams(enabled=enabled, threshold=0.1)
    cache = FirstBlockCache(transformer, params, mu=1.0)
    assert cache.active is enabled
    emb = balanced(text, redux, 0.8)
    # A first call is a miss: all blocks run, so it must match the plain masked transformer.
    assert torch.allclose(velocity(cache, emb, x), velocity(transformer, emb, x), atol=1e-6)
    cache.reset()
    silenced = velocity(cache, balanced(text, redux, 1.0), x)
    assert torch.allclose(silenced, velocity(transformer, text, x), atol=1e-5, rtol=0)
