"""Samplers against an analytic Gaussian denoiser, and true CFG (specs §4).

Data x0 ~ N(mu, s^2) per dimension, flow noising x = (1 - sigma) x0 + sigma eps. Then
x ~ N((1 - sigma) mu, V) with V = (1 - sigma)^2 s^2 + sigma^2, the exact denoiser is
E[x0 | x] = mu + (1 - sigma) s^2 / V * (x - (1 - sigma) mu), and the probability-flow ODE
from x = eps at sigma = 1 ends exactly at mu + s * eps.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from engine.flux.denoiser import FluxDenoiser
from engine.flux.guidance import (
    FluxCfgDenoiser,
    TrueCfgVelocity,
    VelocityDenoiser,
    cfg_velocity,
    flux_cfg_denoiser,
)
from engine.flux.prompt import PromptEmbeddings
from engine.flux.samplers import SAMPLERS
from engine.flux.schedules import flux_sigmas

MU = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
STD = torch.tensor([0.2, 0.5, 1.0, 1.5, 0.8], dtype=torch.float64)
DETERMINISTIC = ("euler", "heun", "dpmpp_2m")
STOCHASTIC = ("euler_ancestral", "dpmpp_sde")


@dataclass
class GaussianDenoiser:
    """The exact posterior mean for Gaussian data; counts its calls."""

    mean: torch.Tensor
    std: torch.Tensor
    calls: int = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        alpha = 1 - sigma
        var = alpha**2 * self.std**2 + sigma**2
        return self.mean + alpha * self.std**2 / var * (x - alpha * self.mean)


def run(name: str, steps: int, eps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    sigmas = flux_sigmas("simple", steps, mu=1.15)
    generator = torch.Generator("cpu").manual_seed(seed)
    return SAMPLERS[name](GaussianDenoiser(MU, STD), eps.clone(), sigmas, generator, None)


@pytest.fixture(scope="module")
def eps() -> torch.Tensor:
    return torch.randn(16, len(MU), dtype=torch.float64, generator=torch.Generator().manual_seed(7))


def test_registry_has_stable_ids() -> None:
    assert set(SAMPLERS) == {"euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_sde"}


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_samplers_converge_to_the_ode_endpoint(name: str, eps: torch.Tensor) -> None:
    exact = MU + STD * eps
    errors = [(run(name, n, eps) - exact).abs().max().item() for n in (10, 20, 50, 200)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < {"euler": 0.025, "heun": 0.002, "dpmpp_2m": 0.005}[name]


@pytest.mark.parametrize("steps", [10, 20, 50])
def test_second_order_samplers_beat_euler(steps: int, eps: torch.Tensor) -> None:
    exact = MU + STD * eps
    error = {n: (run(n, steps, eps) - exact).abs().max().item() for n in DETERMINISTIC}
    assert error["heun"] < error["euler"]
    assert error["dpmpp_2m"] < error["euler"]


@pytest.mark.parametrize(
    ("name", "steps", "tol"), [("euler_ancestral", 400, 0.05), ("dpmpp_sde", 100, 0.04)]
)
def test_stochastic_samplers_reach_the_data_distribution(name: str, steps: int, tol: float) -> None:
    noise = torch.randn(
        20_000, len(MU), dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    out = run(name, steps, noise, seed=2)
    assert (out.mean(0) - MU).abs().max().item() < 0.03
    assert (out.std(0) / STD - 1).abs().max().item() < tol
    # Too few steps lose variance (the posterior mean stands in for x0): convergence shows.
    coarse = run(name, 10, noise, seed=2)
    assert (coarse.std(0) / STD - 1).abs().max() > (out.std(0) / STD - 1).abs().max()


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_follow_the_generator(name: str, eps: torch.Tensor) -> None:
    assert torch.equal(run(name, 8, eps, seed=3), run(name, 8, eps, seed=3))
    assert not torch.equal(run(name, 8, eps, seed=3), run(name, 8, eps, seed=4))


@pytest.mark.parametrize(
    ("name", "calls"),
    [("euler", 6), ("euler_ancestral", 6), ("heun", 11), ("dpmpp_2m", 6), ("dpmpp_sde", 11)],
)
def test_calls_and_callback(name: str, calls: int, eps: torch.Tensor) -> None:
    model, seen = GaussianDenoiser(MU, STD), []
    sigmas = flux_sigmas("simple", 6, mu=1.15)
    gen = torch.Generator().manual_seed(0)
    out = SAMPLERS[name](model, eps.clone(), sigmas, gen, lambda i, x, x0: seen.append((i, x)))
    assert model.calls == calls  # second-order steps skip the second call on the step to 0
    assert [i for i, _ in seen] == list(range(6))
    assert torch.equal(seen[-1][1], out)


def test_final_step_to_zero_returns_x0(eps: torch.Tensor) -> None:
    sigmas = torch.tensor([0.5, 0.0], dtype=torch.float64)
    model = GaussianDenoiser(MU, STD)
    expected = model(eps, sigmas[0])
    for name in SAMPLERS:
        out = SAMPLERS[name](model, eps.clone(), sigmas, torch.Generator().manual_seed(0), None)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


# --- true CFG -------------------------------------------------------------------------


@dataclass
class CountingVelocity:
    shift: float
    calls: int = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.sin(x) * sigma + self.shift


def test_cfg_velocity_formula() -> None:
    v_c, v_u = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    assert torch.equal(cfg_velocity(v_c, v_u, 2.0), torch.tensor([1.5, 5.0]))


def test_true_cfg_at_scale_one_is_the_conditional_model_with_one_call(eps: torch.Tensor) -> None:
    sigmas = flux_sigmas("simple", 5, mu=1.15)
    cond, uncond = CountingVelocity(0.3), CountingVelocity(-0.2)
    guided = SAMPLERS["euler"](VelocityDenoiser(TrueCfgVelocity(cond, uncond, 1.0)), eps, sigmas)
    plain = SAMPLERS["euler"](VelocityDenoiser(CountingVelocity(0.3)), eps, sigmas)
    assert torch.equal(guided, plain)
    assert (cond.calls, uncond.calls) == (5, 0)


def test_true_cfg_at_scale_two(eps: torch.Tensor) -> None:
    cond, uncond = CountingVelocity(0.3), CountingVelocity(-0.2)
    sigma = torch.tensor(0.7, dtype=torch.float64)
    v = TrueCfgVelocity(cond, uncond, 2.0)(eps, sigma)
    assert torch.equal(v, cfg_velocity(cond(eps, sigma), uncond(eps, sigma), 2.0))
    by_hand = 2 * (torch.sin(eps) * sigma + 0.3) - (torch.sin(eps) * sigma - 0.2)
    torch.testing.assert_close(v, by_hand)


class TinyTransformer(torch.nn.Module):
    """Stands in for the Flux transformer: output depends on the prompt tokens and timestep."""

    config = SimpleNamespace(guidance_embeds=False)

    def forward(self, hidden_states, timestep, encoder_hidden_states, **_) -> tuple:
        return (hidden_states * timestep[:, None, None] + encoder_hidden_states.mean(),)


def tiny_flux_denoiser(value: float) -> FluxDenoiser:
    emb = PromptEmbeddings(tokens=torch.full((1, 3, 4), value), pooled=torch.zeros(1, 4))
    return FluxDenoiser(TinyTransformer(), emb, torch.zeros(6, 3), 3.5, torch.float32)


def test_flux_cfg_denoiser() -> None:
    positive = tiny_flux_denoiser(1.0)
    negative = PromptEmbeddings(tokens=torch.full((1, 3, 4), -1.0), pooled=torch.zeros(1, 4))
    assert flux_cfg_denoiser(positive, negative, 1.0) is positive
    assert flux_cfg_denoiser(positive, None, 3.0) is positive
    guided = flux_cfg_denoiser(positive, negative, 3.0)
    assert isinstance(guided, FluxCfgDenoiser)
    x, sigma = torch.randn(1, 6, 4), torch.tensor(0.5)
    v = guided.velocity(x, sigma)
    torch.testing.assert_close(v, cfg_velocity(x * 0.5 + 1.0, x * 0.5 - 1.0, 3.0))
    torch.testing.assert_close(guided(x, sigma), x - 0.5 * v)
    assert guided.calls == 4 and positive.calls == 2
