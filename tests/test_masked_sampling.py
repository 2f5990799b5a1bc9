"""Masked Flux sampling (specs §8): ComfyUI's latent noise mask (KSamplerX0Inpaint) and
differential diffusion, on a stand-in denoiser and on the tiny Flux transformer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F

from engine.flux import latents
from engine.flux.inpaint import (
    MaskedModel,
    NoiseMask,
    differential_threshold,
    latent_mask,
    masked_denoiser,
)
from engine.flux.samplers import SAMPLERS
from engine.flux.sampling import model_calls, pass_sigmas
from engine.flux.schedules import flux_sigmas

MU = 1.15
SIZE = 64  # pixels: an 8x8 latent, 4x4 = 16 tokens of 64 values
SIGMA_MIN = math.exp(MU) / (math.exp(MU) + 9999)  # shift(1/10000), by hand


@dataclass
class StandIn:
    """An elementwise, nonlinear x0(x, sigma) that records its inputs."""

    seen: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.seen.append((x.clone(), sigma.clone()))
        return 0.5 * x + torch.sin(3 * x) * sigma + 2.0


def seeded(seed: int) -> torch.Tensor:
    return latents.pack(torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(seed)))


NOISE, LATENT = seeded(1), seeded(2)
SIGMAS = flux_sigmas("simple", 6, MU, 0.7)  # an img2img-like pass: sigma_0 < 1


def box_mask() -> torch.Tensor:
    """A latent-size mask, 1 on rows 1-4 x cols 3-6: it cuts through 2x2 patches."""
    mask = torch.zeros(8, 8)
    mask[1:5, 3:7] = 1.0
    return mask


def sample(name: str, model, sigmas: torch.Tensor = SIGMAS) -> torch.Tensor:
    sigma0 = float(sigmas[0])
    x = sigma0 * NOISE + (1 - sigma0) * LATENT
    return SAMPLERS[name](model, x, sigmas, torch.Generator().manual_seed(7))


def masked_run(name: str, mask: torch.Tensor, differential: bool = False):
    inner = StandIn()
    noise_mask = NoiseMask(mask, differential)
    model = masked_denoiser(inner, noise_mask, NOISE, LATENT, SIGMAS, MU, SIZE, SIZE)
    return model.settle(sample(name, model)), model, inner


def noised(sigma: torch.Tensor) -> torch.Tensor:
    s = sigma.to(torch.float32)
    return s * NOISE + (1 - s) * LATENT


# --- (1), (2), (3): the mask's two blends ---------------------------------------------------


@pytest.mark.parametrize("name", SAMPLERS)
def test_outside_the_mask_the_model_sees_the_noised_latent_and_the_output_is_the_latent(name):
    out, model, inner = masked_run(name, box_mask())
    keep = model.mask == 0
    assert keep.any() and (~keep).any()
    assert len(inner.seen) >= len(SIGMAS) - 1
    for x_in, sigma in inner.seen:  # every call, at its own sigma (Heun, dpmpp_sde: midpoints)
        assert torch.equal(x_in[keep], noised(sigma)[keep])
    assert torch.equal(out[keep], LATENT[keep])


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m", "dpmpp_sde"])
def test_settle_is_a_no_op_for_samplers_that_end_on_x0(name):
    inner = StandIn()
    model = masked_denoiser(inner, NoiseMask(box_mask()), NOISE, LATENT, SIGMAS, MU, SIZE, SIZE)
    raw = sample(name, model)
    assert torch.equal(model.settle(raw), raw)


def test_euler_reaches_the_latent_within_rounding_before_settling():
    model = masked_denoiser(StandIn(), NoiseMask(box_mask()), NOISE, LATENT, SIGMAS, MU, SIZE, SIZE)
    raw, keep = sample("euler", model), model.mask == 0
    assert float((raw[keep] - LATENT[keep]).abs().max()) <= 1e-6


def test_inside_the_mask_euler_is_bit_identical_to_the_unmasked_run():
    out, model, _ = masked_run("euler", box_mask())
    plain = sample("euler", StandIn())
    inside = model.mask == 1
    assert torch.equal(out[inside], plain[inside])
    assert not torch.equal(out, plain)


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_mask_of_ones_is_bit_identical_to_no_mask(name):
    out, _, _ = masked_run(name, torch.ones(SIZE, SIZE))
    assert torch.equal(out, sample(name, StandIn()))


# --- (4): differential diffusion -------------------------------------------------------------


def token_ramp() -> torch.Tensor:
    """A latent-size mask whose token k (2x2 latent pixels) holds k/15."""
    tokens = torch.arange(16, dtype=torch.float32).reshape(4, 4) / 15
    return tokens.repeat_interleave(2, 0).repeat_interleave(2, 1)


def test_threshold_formula():
    sigmas = SIGMAS.tolist()
    assert differential_threshold(sigmas[0], sigmas, MU) == 1.0
    for sigma in sigmas[1:-1]:
        expected = (sigma - SIGMA_MIN) / (sigmas[0] - SIGMA_MIN)
        assert differential_threshold(sigma, sigmas, MU) == pytest.approx(expected, abs=1e-12)
    # A schedule that stops above sigma_min ends its ramp at its own last sigma.
    assert differential_threshold(0.5, [0.9, 0.5, 0.2]) == pytest.approx(0.3 / 0.7)
    with pytest.raises(ValueError):
        differential_threshold(0.5, [0.0, 0.0])


def test_differential_denoises_a_growing_set_of_tokens_as_the_threshold_falls():
    inner = StandIn()
    noise_mask = NoiseMask(token_ramp(), differential=True)
    model = masked_denoiser(inner, noise_mask, NOISE, LATENT, SIGMAS, MU, SIZE, SIZE)
    steps: list[set[int]] = []

    def on_step(i: int, x: torch.Tensor, x0: torch.Tensor) -> None:
        # The stand-in's x0 is never the latent: a token is denoised iff its x0 is not.
        changed = (x0 != LATENT).all(dim=2)[0]
        assert (changed == (x0 != LATENT).any(dim=2)[0]).all()  # whole tokens
        steps.append({int(k) for k in changed.nonzero()})

    x = float(SIGMAS[0]) * NOISE + (1 - float(SIGMAS[0])) * LATENT
    out = model.settle(SAMPLERS["euler"](model, x, SIGMAS, None, on_step))
    expected = []
    for sigma in SIGMAS[:-1].tolist():
        threshold = (sigma - SIGMA_MIN) / (float(SIGMAS[0]) - SIGMA_MIN)
        expected.append({k for k in range(16) if k / 15 >= threshold})
    assert steps == expected
    assert steps[0] == {15}  # threshold 1 at the first step: only the mask's full value
    assert all(a < b for a, b in zip(steps, steps[1:], strict=False))  # strictly growing
    never = set(range(16)) - steps[-1]
    assert never and all(torch.equal(out[0, k], LATENT[0, k]) for k in never)
    for (x_in, sigma), denoised in zip(inner.seen, steps, strict=True):
        kept = sorted(set(range(16)) - denoised)
        assert torch.equal(x_in[0, kept], noised(sigma)[0, kept])


# --- (5): resize and packing --------------------------------------------------------------


def test_a_pixel_block_lands_in_its_token_and_channels():
    # Pixels rows 8-15 x cols 20-23: bilinear without antialias reads pixel columns 19 and 20
    # for latent column 2, so latent pixel (1, 2) gets 0.5 and every other one 0.
    mask = torch.zeros(SIZE, SIZE)
    mask[8:16, 20:24] = 1.0
    packed = latent_mask(mask, 8, 8)
    assert packed.shape == (1, 16, 64)
    expected = torch.zeros(1, 16, 64)
    # Latent (1, 2) is token (0, 1) = index 1, at dy = 1, dx = 0: channel c*4 + 2 for c < 16.
    expected[0, 1, 2::4] = 0.5
    assert torch.equal(packed, expected)


def test_resize_is_comfyui_bilinear_then_per_channel():
    mask = torch.rand(1, 72, 40, generator=torch.Generator().manual_seed(3))
    packed = latent_mask(mask, 12, 6)
    resized = F.interpolate(mask[None], size=(12, 6), mode="bilinear", align_corners=False)
    unpacked = latents.unpack(packed, 12 * 8, 6 * 8)
    assert torch.equal(unpacked, resized.expand(1, 16, 12, 6))
    single = torch.zeros(SIZE, SIZE)
    single[0, 0] = 1.0  # bilinear samples 2x2 pixels per latent pixel: this one is never read
    assert not latent_mask(single, 8, 8).any()


def test_batches_repeat_like_comfyui():
    two = torch.stack([torch.zeros(8, 8), torch.ones(8, 8)])
    packed = latent_mask(two, 8, 8, batch=3)
    assert [float(row.mean()) for row in packed] == [0.0, 1.0, 0.0]
    assert latent_mask(two, 8, 8, batch=1).shape[0] == 1


@pytest.mark.parametrize(
    "bad",
    [torch.full((8, 8), 1.5), torch.full((8, 8), -0.1), torch.zeros(8), torch.zeros(2, 3, 8, 8)],
)
def test_bad_masks_are_refused(bad):
    with pytest.raises(ValueError):
        NoiseMask(bad)


# --- through the real entry point, on the tiny Flux transformer ---------------------------------


@pytest.fixture(scope="module")
def flux():
    from engine.flux.prompt import PromptEmbeddings
    from engine.flux.sampling import Conditioning, SamplingPass
    from engine.models.manager import ModelConfig, ModelManager
    from engine.recipe import ModelParams, SettingsParams

    bundle = ModelManager(ModelConfig(tiny=True, device="cpu")).flux(ModelParams())
    config = bundle.transformer.config
    g = torch.Generator().manual_seed(5)
    embeddings = PromptEmbeddings(
        torch.randn(1, 6, config.joint_attention_dim, generator=g),
        torch.randn(1, config.pooled_projection_dim, generator=g),
    )
    settings = SettingsParams(steps=4, denoise=0.75, seed=11)
    return bundle, Conditioning(embeddings), SamplingPass(SIZE, SIZE, (11,), settings, True)


def run_flux(flux, mask: NoiseMask | None, record: list | None = None) -> torch.Tensor:
    from engine.flux.sampling import run_pass
    from engine.graph import StageContext
    from engine.runtypes import RunReport

    bundle, cond, p = flux

    def hook(module, args, kwargs):
        record.append((kwargs["hidden_states"].clone(), kwargs["timestep"].clone()))

    handle = bundle.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        return run_pass(StageContext(None, RunReport()), "detail", bundle, cond, p, LATENT, mask)
    finally:
        handle.remove()


def test_transformer_pass_keeps_the_outside_and_matches_unmasked_with_ones(flux):
    noise, _ = latents.initial_noise([11], SIZE, SIZE)
    record: list = []
    out = run_flux(flux, NoiseMask(box_mask()), record)
    keep = latent_mask(box_mask(), 8, 8) == 0
    assert len(record) == 4
    for x_in, timestep in record:
        s = timestep.to(torch.float32)[0]
        assert torch.equal(x_in[keep], (s * noise + (1 - s) * LATENT)[keep])
    assert torch.equal(out[keep], LATENT[keep])
    assert (out[~keep] != LATENT[~keep]).all()  # the masked region was re-rendered
    plain = run_flux(flux, None, [])
    assert torch.equal(run_flux(flux, NoiseMask(torch.ones(SIZE, SIZE)), []), plain)


def test_transformer_pass_with_differential_diffusion(flux):
    noise, _ = latents.initial_noise([11], SIZE, SIZE)
    record: list = []
    out = run_flux(flux, NoiseMask(token_ramp(), differential=True), record)
    packed = latent_mask(token_ramp(), 8, 8)
    sigmas, mu = pass_sigmas(flux[2])  # mu for 64x64 (ModelSamplingFlux), not the default
    for (x_in, timestep), sigma in zip(record, sigmas[:-1].tolist(), strict=True):
        kept = packed < differential_threshold(sigma, sigmas, mu)
        s = timestep.to(torch.float32)[0]
        assert torch.equal(x_in[kept], (s * noise + (1 - s) * LATENT)[kept])
    last = packed < differential_threshold(float(sigmas[-2]), sigmas, mu)
    assert last.any() and torch.equal(out[last], LATENT[last])


def test_masked_model_wraps_like_the_sigma_modifiers():
    model = MaskedModel(StandIn(), torch.ones(1, 16, 64), NOISE, LATENT, SIGMAS)
    assert model_calls(model) == 0 and model.last_mask is None
    assert torch.equal(model.settle(NOISE), NOISE)  # nothing sampled yet: nothing to settle
