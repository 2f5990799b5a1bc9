"""Detail Daemon and Lying Sigma against values computed by hand from specs §1 and §2."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from engine.flux.guidance import VelocityDenoiser
from engine.flux.samplers import SAMPLERS
from engine.flux.schedules import flux_sigmas
from engine.flux.sigma_modifiers import (
    DetailDaemonModel,
    LyingSigmaModel,
    apply_sigma_modifiers,
    detail_daemon_cfg,
    detail_daemon_schedule,
    multiplier_at,
    percent_to_sigma,
)
from engine.recipe import DetailDaemonParams, LyingSigmaParams, SettingsParams

MU = 1.15


def smooth(u: float) -> float:
    return 0.5 * (1 - math.cos(math.pi * u))


@dataclass
class RecordingVelocity:
    """A nonlinear velocity that records the sigma it was called with."""

    seen: list[float] = field(default_factory=list)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.seen.append(float(sigma))
        return torch.sin(3 * x) * sigma + x * (1 - sigma)


# --- schedule -------------------------------------------------------------------------


def test_worked_example_20_steps_defaults() -> None:
    m = detail_daemon_schedule(20, DetailDaemonParams())
    # i_s = round(3.8) = 4, i_m = round(9.5) = 10 (half to even), i_e = round(15.2) = 15.
    expected = np.zeros(20)
    expected[4:11] = [0.1 * smooth(k / 6) for k in range(7)]
    expected[10:16] = [0.1 * smooth(1 - k / 5) for k in range(6)]
    np.testing.assert_allclose(m, expected, rtol=0, atol=1e-15)
    assert int(np.argmax(m)) == 10 and m[10] == pytest.approx(0.1)
    assert 1 - 0.1 * m[10] == pytest.approx(0.99)  # the peak sigma factor at cfg 1


def test_linear_ramps_without_smoothing() -> None:
    m = detail_daemon_schedule(11, DetailDaemonParams(amount=0.6, smooth=False))
    # indices 2, 5, 8 on 10 intervals
    np.testing.assert_allclose(m, [0, 0, 0, 0.2, 0.4, 0.6, 0.4, 0.2, 0, 0, 0], atol=1e-15)


def test_exponent_zero_is_a_plateau() -> None:
    m = detail_daemon_schedule(11, DetailDaemonParams(amount=0.5, exponent=0.0))
    np.testing.assert_array_equal(m, [0, 0] + [0.5] * 7 + [0, 0])


def test_offsets() -> None:
    params = DetailDaemonParams(amount=0.5, smooth=False, start_offset=0.2, end_offset=-0.1)
    m = detail_daemon_schedule(11, params)
    # rise [0, 1/3, 2/3, 1] * 0.3 + 0.2; fall [1, 2/3, 1/3, 0] * 0.6 - 0.1
    expected = [0.2, 0.2, 0.2, 0.3, 0.4, 0.5, 0.3, 0.1, -0.1, -0.1, -0.1]
    np.testing.assert_allclose(m, expected, atol=1e-15)


def test_fade_and_start_after_end() -> None:
    assert not detail_daemon_schedule(20, DetailDaemonParams(fade=1.0)).any()
    half = detail_daemon_schedule(20, DetailDaemonParams(fade=0.5))
    np.testing.assert_allclose(half, detail_daemon_schedule(20, DetailDaemonParams()) * 0.5)
    swapped = detail_daemon_schedule(11, DetailDaemonParams(start=0.9, end=0.5, smooth=False))
    # start = min(0.9, 0.5) = 0.5: a one-point peak at index 5
    np.testing.assert_allclose(swapped, [0] * 5 + [0.1] + [0] * 5, atol=1e-15)


# --- interpolation --------------------------------------------------------------------

GRID = np.array([1.0, 0.8, 0.6, 0.4, 0.2, 0.0])
SCHEDULE = np.array([0.0, 1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize(
    ("sigma", "expected"),
    [
        (0.8, 1.0),  # exact match
        (0.7, 1.5),
        (0.9, 0.5),
        (0.25, 3.75),
        (1.0, 0.0),  # head
        (0.1, 4.0),  # past the last non-zero sigma: the tail entry
        (0.0, 0.0),
        (1.2, 0.0),  # outside the grid
    ],
)
def test_multiplier_interpolation(sigma: float, expected: float) -> None:
    assert multiplier_at(sigma, GRID, SCHEDULE) == pytest.approx(expected)


# --- the wrapper ----------------------------------------------------------------------


def sample(name: str, model, sigmas: torch.Tensor) -> torch.Tensor:
    x = torch.randn(2, 8, 4, generator=torch.Generator().manual_seed(5))
    return SAMPLERS[name](model, x, sigmas, torch.Generator().manual_seed(0), None)


@pytest.mark.parametrize("name", ["euler", "heun"])
def test_neutral_settings_are_bit_identical(name: str) -> None:
    sigmas = flux_sigmas("simple", 12, MU)
    plain = sample(name, VelocityDenoiser(RecordingVelocity()), sigmas)
    dd = DetailDaemonModel(
        VelocityDenoiser(RecordingVelocity()), sigmas, DetailDaemonParams(amount=0)
    )
    ls = LyingSigmaModel(VelocityDenoiser(RecordingVelocity()), LyingSigmaParams(dishonesty=0), MU)
    assert torch.equal(sample(name, dd, sigmas), plain)
    assert torch.equal(sample(name, ls, sigmas), plain)
    assert not torch.equal(
        sample(name, DetailDaemonModel(dd.model, sigmas, DetailDaemonParams(amount=1)), sigmas),
        plain,
    )
    assert not torch.equal(
        sample(name, LyingSigmaModel(ls.model, LyingSigmaParams(), MU), sigmas), plain
    )


def test_one_euler_step_by_hand() -> None:
    sigmas = flux_sigmas("simple", 20, MU)
    velocity = RecordingVelocity()
    model = DetailDaemonModel(
        VelocityDenoiser(velocity), sigmas, DetailDaemonParams(amount=0.5), cfg=2.0
    )
    x = torch.randn(1, 8, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = SAMPLERS["euler"](model, x, sigmas[10:12])  # step 10 is the schedule's peak
    sigma, sigma_next = sigmas[10], sigmas[11]
    sigma_hat = sigma * (1 - 0.1 * 0.5 * 2.0)
    assert velocity.seen == [pytest.approx(float(sigma_hat), rel=1e-15)]
    by_hand = x + (sigma_next - sigma) * (sigma_hat / sigma) * RecordingVelocity()(x, sigma_hat)
    torch.testing.assert_close(out, by_hand, rtol=1e-12, atol=1e-12)


def test_every_evaluation_is_adjusted() -> None:
    sigmas = flux_sigmas("simple", 20, MU)
    velocity = RecordingVelocity()
    model = DetailDaemonModel(VelocityDenoiser(velocity), sigmas, DetailDaemonParams(amount=1.0))
    m = model.schedule
    sample("heun", model, sigmas[8:10])  # corrector evaluation at the next grid sigma
    assert velocity.seen[0] == pytest.approx(float(sigmas[8]) * (1 - 0.1 * m[8]))
    assert velocity.seen[1] == pytest.approx(float(sigmas[9]) * (1 - 0.1 * m[9]))
    velocity.seen.clear()
    sample("dpmpp_sde", model, sigmas[8:10])  # midpoint evaluation between grid sigmas
    lam = [math.log((1 - float(s)) / float(s)) for s in sigmas[8:10]]
    s_mid = 1 / (1 + math.exp((lam[0] + lam[1]) / 2))
    m_mid = multiplier_at(s_mid, sigmas.numpy(), m)
    assert m[8] < m_mid < m[9]  # strictly between the neighbouring entries
    assert velocity.seen[1] == pytest.approx(s_mid * (1 - 0.1 * m_mid))


def test_detail_daemon_window_and_floor() -> None:
    sigmas = flux_sigmas("simple", 10, MU)
    params = DetailDaemonParams(amount=5.0, start=0.0, end=1.0, exponent=0.0)
    model = DetailDaemonModel(VelocityDenoiser(RecordingVelocity()), sigmas, params, cfg=100.0)
    for outside in (0.0, 5e-6, 1.5):
        sigma = torch.tensor(outside)
        assert model.adjust(sigma) is sigma
    assert float(model.adjust(torch.tensor(0.5))) == pytest.approx(0.5e-6)  # max(1e-6, ...)


def test_detail_daemon_cfg() -> None:
    assert detail_daemon_cfg(DetailDaemonParams(), None) == 1.0
    assert detail_daemon_cfg(DetailDaemonParams(), 4.0) == 4.0
    assert detail_daemon_cfg(DetailDaemonParams(cfg_scale_override=2.5), 4.0) == 2.5


# --- Lying Sigma ----------------------------------------------------------------------


def test_percent_to_sigma() -> None:
    assert percent_to_sigma(0.0, MU) == 1.0
    assert percent_to_sigma(-0.5, MU) == 1.0
    assert percent_to_sigma(1.0, MU) == 0.0
    s = math.exp(MU)
    assert percent_to_sigma(0.5, MU) == pytest.approx(s / (s + 1))  # 0.759511...
    assert percent_to_sigma(0.9, MU) == pytest.approx(s / (s + 1 / 0.1 - 1))


def test_lying_sigma_window() -> None:
    model = LyingSigmaModel(VelocityDenoiser(RecordingVelocity()), LyingSigmaParams(), MU)
    s = math.exp(MU)
    assert model.sigma_start == round(s / (s + 1 / 0.9 - 1), 4)  # 0.966
    assert model.sigma_end == round(s / (s + 1 / 0.1 - 1), 4)  # 0.2597
    for inside in (model.sigma_start, 0.5, model.sigma_end):
        assert float(model.adjust(torch.tensor(inside, dtype=torch.float64))) == pytest.approx(
            inside * 0.95
        )
    for outside in (1.0, 0.2, 0.0):
        sigma = torch.tensor(outside)
        assert model.adjust(sigma) is sigma


def test_modifiers_compose_detail_daemon_outside() -> None:
    sigmas = flux_sigmas("simple", 20, MU)
    dd, ls = DetailDaemonParams(enabled=True, amount=0.5), LyingSigmaParams(enabled=True)
    velocity = RecordingVelocity()
    inner = VelocityDenoiser(velocity)
    assert apply_sigma_modifiers(inner, sigmas, SettingsParams(), MU) is inner
    settings = SettingsParams(detail_daemon=dd, lying_sigma=ls)
    model = apply_sigma_modifiers(inner, sigmas, settings, MU)
    assert isinstance(model, DetailDaemonModel) and isinstance(model.model, LyingSigmaModel)
    model(torch.zeros(1, 2, 4), sigmas[10])
    assert velocity.seen == [pytest.approx(float(sigmas[10]) * (1 - 0.1 * 0.5) * 0.95)]
