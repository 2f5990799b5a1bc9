"""First-block cache (specs §3) on a tiny random Flux transformer: 2 double + 2 single blocks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch
from diffusers import FluxTransformer2DModel

from engine.flux.denoiser import FluxDenoiser
from engine.flux.fbcache import FirstBlockCache, relative_difference
from engine.flux.latents import image_ids
from engine.flux.prompt import PromptEmbeddings
from engine.flux.sigma_modifiers import percent_to_sigma
from engine.models.tiny import TINY_TRANSFORMER, seeded
from engine.recipe import FirstBlockCacheParams

MU = 1.15
ALWAYS = 1e9  # a threshold every relative difference is below
NEVER = 1e-12  # a threshold no relative difference is below (random weights)


@pytest.fixture(scope="module")
def transformer() -> FluxTransformer2DModel:
    # More than one block of each kind, so a hit has blocks to skip after the first one.
    with seeded(7):
        return FluxTransformer2DModel(
            **{**TINY_TRANSFORMER, "num_layers": 2, "num_single_layers": 2}
        ).eval()


def make_inputs(seed: int = 0, text_len: int = 8) -> dict[str, torch.Tensor]:
    """Transformer keyword inputs at 64x64 px (16 image tokens) without the timestep."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, 16, 64, generator=gen),
        "guidance": torch.full((1,), 3.5),
        "pooled_projections": torch.randn(1, 32, generator=gen),
        "encoder_hidden_states": torch.randn(1, text_len, 32, generator=gen),
        "txt_ids": torch.zeros(text_len, 3),
        "img_ids": image_ids(64, 64, torch.device("cpu")),
    }


def call(model, inputs: dict[str, torch.Tensor], sigma: float, **extra) -> torch.Tensor:
    with torch.inference_mode():
        return model(**inputs, timestep=torch.tensor([sigma]), return_dict=False, **extra)[0]


def cache(transformer, **params) -> FirstBlockCache:
    return FirstBlockCache(transformer, FirstBlockCacheParams(enabled=True, **params), MU)


@dataclass
class Capture:
    """Outputs of the first and last blocks and of the time embedder, and which blocks ran."""

    ran: list[str]
    outputs: dict[str, object]


@contextmanager
def capture(transformer: FluxTransformer2DModel) -> Iterator[Capture]:
    cap = Capture(ran=[], outputs={})
    blocks = {f"double{i}": b for i, b in enumerate(transformer.transformer_blocks)}
    blocks |= {f"single{i}": b for i, b in enumerate(transformer.single_transformer_blocks)}
    blocks["temb"] = transformer.time_text_embed
    handles = []
    for name, module in blocks.items():

        def hook(_module, _args, output, name=name) -> None:
            cap.ran.append(name)
            cap.outputs[name] = output

        handles.append(module.register_forward_hook(hook))
    try:
        yield cap
    finally:
        for handle in handles:
            handle.remove()


# --- off and forced misses are the plain transformer -----------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        FirstBlockCacheParams(enabled=False, threshold=ALWAYS),
        FirstBlockCacheParams(enabled=True, threshold=0.0),
    ],
)
def test_off_is_the_plain_call(transformer, params) -> None:
    wrapper = FirstBlockCache(transformer, params, MU)
    inputs = make_inputs()
    for sigma in (1.0, 0.9, 0.8):
        assert torch.equal(call(wrapper, inputs, sigma), call(transformer, inputs, sigma))
    assert (wrapper.hits, wrapper.misses) == (0, 3)


def test_forced_miss_is_bit_identical_to_the_forward(transformer) -> None:
    # Same modules, same order, same inputs as diffusers' forward: equal, not just close.
    wrapper = cache(transformer, threshold=NEVER)
    inputs = make_inputs()
    for sigma in (1.0, 0.95, 0.9, 0.5, 0.1):
        assert torch.equal(call(wrapper, inputs, sigma), call(transformer, inputs, sigma))
    assert (wrapper.hits, wrapper.misses) == (0, 5)


def test_forced_miss_without_guidance_embeds_and_bf16() -> None:
    config = {**TINY_TRANSFORMER, "guidance_embeds": False}
    with seeded(8):
        plain = FluxTransformer2DModel(**config).eval().to(torch.bfloat16)
    wrapper = cache(plain, threshold=NEVER)
    inputs = {k: v.to(torch.bfloat16) for k, v in make_inputs().items()}
    inputs["guidance"] = None
    assert torch.equal(call(wrapper, inputs, 0.7), call(plain, inputs, 0.7))
    assert wrapper.config is plain.config


def test_return_dict(transformer) -> None:
    wrapper = cache(transformer, threshold=NEVER)
    inputs = make_inputs()
    with torch.inference_mode():
        out = wrapper(**inputs, timestep=torch.tensor([0.5]), return_dict=True)
    assert torch.equal(out.sample, call(transformer, inputs, 0.5))


# --- hits ------------------------------------------------------------------------------------


def test_hit_skips_the_blocks_and_adds_the_cached_residual(transformer) -> None:
    wrapper = cache(transformer, threshold=ALWAYS)
    inputs = make_inputs()
    with capture(transformer) as first:
        call(wrapper, inputs, 1.0)
    assert first.ran == ["temb", "double0", "double1", "single0", "single1"]
    residual = first.outputs["single1"][1] - first.outputs["double0"][1]

    with capture(transformer) as second:
        got = call(wrapper, inputs, 0.9)
    assert second.ran == ["temb", "double0"]
    assert (wrapper.hits, wrapper.misses) == (1, 1)

    # By hand: the first block's image output now, plus the residual of the last full compute.
    with capture(transformer) as plain, torch.inference_mode():
        call(transformer, inputs, 0.9)
        h1 = plain.outputs["double0"][1]
        expected = transformer.proj_out(transformer.norm_out(h1 + residual, plain.outputs["temb"]))
    assert torch.equal(got, expected)


def test_relative_difference() -> None:
    ref = torch.tensor([1.0, -2.0, 3.0, -4.0])
    assert relative_difference(ref + 0.25, ref) == pytest.approx(0.25 / 2.5)
    assert relative_difference(ref, torch.zeros(4)) == float("inf")


def test_threshold_decides_on_the_measured_difference(transformer) -> None:
    inputs = make_inputs()
    probe = cache(transformer, threshold=NEVER)
    with capture(transformer) as a:
        call(probe, inputs, 1.0)
    with capture(transformer) as b:
        call(probe, inputs, 0.9)
    r_ref = a.outputs["double0"][1] - transformer.x_embedder(inputs["hidden_states"])
    r_now = b.outputs["double0"][1] - transformer.x_embedder(inputs["hidden_states"])
    rel = relative_difference(r_now, r_ref)
    for threshold, hits in ((rel * 1.01, 1), (rel * 0.99, 0)):
        wrapper = cache(transformer, threshold=threshold)
        call(wrapper, inputs, 1.0)
        call(wrapper, inputs, 0.9)
        assert wrapper.hits == hits


@pytest.mark.parametrize(
    ("limit", "pattern"), [(1, "MHMHMH"), (2, "MHHMHH"), (0, "MMMMMM"), (-1, "MHHHHH")]
)
def test_max_consecutive_hits(transformer, limit: int, pattern: str) -> None:
    wrapper = cache(transformer, threshold=ALWAYS, max_consecutive_hits=limit)
    inputs = make_inputs()
    seen = ""
    for step in range(6):
        before = wrapper.hits
        call(wrapper, inputs, 1.0 - 0.1 * step)
        seen += "H" if wrapper.hits > before else "M"
    assert seen == pattern


def test_window_blocks_hits_outside_it(transformer) -> None:
    start, end = 0.25, 0.75
    s_start, s_end = percent_to_sigma(start, MU), percent_to_sigma(end, MU)
    wrapper = cache(transformer, threshold=ALWAYS, start=start, end=end)
    inputs = make_inputs()
    sigmas = [
        1.0,
        s_start + 0.01,
        s_start - 0.01,
        (s_start + s_end) / 2,
        s_end + 0.01,
        s_end - 0.01,
        0.01,
    ]
    seen = ""
    for sigma in sigmas:
        before = wrapper.hits
        call(wrapper, inputs, sigma)
        seen += "H" if wrapper.hits > before else "M"
    assert seen == "MMHHHMM"


# --- state ----------------------------------------------------------------------------------


def test_sigma_increase_starts_a_new_run(transformer) -> None:
    wrapper = cache(transformer, threshold=ALWAYS)
    inputs = make_inputs()
    for sigma in (0.9, 0.8, 1.0, 0.9):
        call(wrapper, inputs, sigma)
    # 0.9 miss, 0.8 hit, 1.0 miss (new run), 0.9 hit.
    assert (wrapper.hits, wrapper.misses) == (2, 2)
    wrapper.reset()
    assert (wrapper.hits, wrapper.misses) == (0, 0)
    call(wrapper, inputs, 0.5)
    assert wrapper.misses == 1  # no reference survives reset()


def test_shape_change_resets_the_stream(transformer) -> None:
    wrapper = cache(transformer, threshold=ALWAYS)
    small, big = make_inputs(), make_inputs()
    big["hidden_states"] = torch.randn(1, 64, 64)
    big["img_ids"] = image_ids(128, 128, torch.device("cpu"))
    big["encoder_hidden_states"] = small["encoder_hidden_states"]
    call(wrapper, small, 1.0)
    call(wrapper, big, 0.9)  # same text tensor, other image size: must not reuse
    assert (wrapper.hits, wrapper.misses) == (0, 2)


@pytest.mark.parametrize("named", [False, True])
def test_cfg_streams_keep_their_own_references(transformer, named: bool) -> None:
    cond, uncond = make_inputs(seed=1), make_inputs(seed=2)
    uncond["hidden_states"] = cond["hidden_states"]  # true CFG: same x, other conditioning
    mixed = cache(transformer, threshold=ALWAYS)
    alone = {
        "cond": cache(transformer, threshold=ALWAYS),
        "uncond": cache(transformer, threshold=ALWAYS),
    }
    for sigma in (1.0, 0.9, 0.8):
        for name, inputs in (("cond", cond), ("uncond", uncond)):
            extra = {"stream": name} if named else {}
            got = call(mixed, inputs, sigma, **extra)
            assert torch.equal(got, call(alone[name], inputs, sigma))
    assert (mixed.hits, mixed.misses) == (4, 2)


def test_new_text_tensor_each_call_never_reuses(transformer) -> None:
    wrapper = cache(transformer, threshold=ALWAYS)
    inputs = make_inputs()
    for sigma in (1.0, 0.9, 0.8):
        fresh = {**inputs, "encoder_hidden_states": inputs["encoder_hidden_states"].clone()}
        call(wrapper, fresh, sigma)
    assert wrapper.hits == 0


def test_flux_denoiser_streams_hit(transformer) -> None:
    # FluxDenoiser passes emb.tokens.expand(...) each step: a view of one storage, one stream.
    inputs = make_inputs()
    emb = PromptEmbeddings(
        tokens=inputs["encoder_hidden_states"], pooled=inputs["pooled_projections"]
    )
    wrapper = cache(transformer, threshold=ALWAYS, max_consecutive_hits=1)
    denoiser = FluxDenoiser(wrapper, emb, inputs["img_ids"], 3.5, torch.float32)
    x = inputs["hidden_states"]
    for sigma in (1.0, 0.75, 0.5, 0.25):
        x = denoiser(x, torch.tensor(sigma))
    assert (wrapper.hits, wrapper.misses) == (2, 2)
    assert torch.isfinite(x).all()
