"""Schedules against sigmas computed by hand from the spec's formulas (algorithms.md §4)."""

import math

import pytest
import torch

from engine.flux.schedules import flux_mu, flux_sigmas, sigma_table, time_shift


def shift_by_hand(mu: float, t: float) -> float:
    s = math.exp(mu)
    return s * t / (1 + (s - 1) * t)


def test_mu_is_resolution_dependent():
    assert flux_mu(1024, 1024) == pytest.approx(1.15)
    assert flux_mu(512, 512) == pytest.approx(0.5 + 0.65 / 3840 * (1024 - 256))
    assert flux_mu(256, 256) == pytest.approx(0.5)  # 256 tokens -> base_shift


def test_time_shift_known_value():
    # e^1.15 = 3.158192909..., at t = 0.5: 1.5790964545 / 2.0790964545 = 0.759511...
    assert time_shift(1.15, 0.5) == pytest.approx(0.7595113, abs=1e-6)


@pytest.mark.parametrize(
    ("steps", "ts"),
    [
        (4, [1.0, 0.75, 0.5, 0.25]),
        (3, [1.0, 0.6667, 0.3334]),  # int(x*10000/3) truncates: table index 6666 and 3333
        (1, [1.0]),
    ],
)
@pytest.mark.parametrize("mu", [1.15, 0.5, 0.0])
def test_simple_schedule_by_hand(steps, ts, mu):
    expected = [shift_by_hand(mu, t) for t in ts] + [0.0]
    assert flux_sigmas("simple", steps, mu).tolist() == pytest.approx(expected, abs=1e-12)


def test_simple_denoise_keeps_the_tail_of_a_longer_grid():
    mu = 1.15
    expected = [shift_by_hand(mu, t) for t in (0.5, 0.375, 0.25, 0.125)] + [0.0]
    assert flux_sigmas("simple", 4, mu, denoise=0.5).tolist() == pytest.approx(expected)
    assert len(flux_sigmas("simple", 4, mu, denoise=0.0)) == 0


def test_table_ends():
    table = sigma_table(1.15)
    assert table[-1] == 1.0
    assert table[0] == pytest.approx(shift_by_hand(1.15, 1e-4))  # ~3.2e-4 per the spec
    assert 3.1e-4 < table[0] < 3.3e-4


def test_karras_and_exponential_by_hand():
    mu = 1.15
    lo, hi = shift_by_hand(mu, 1e-4), 1.0
    karras = [(hi ** (1 / 7) + i / 3 * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7 for i in range(4)]
    assert flux_sigmas("karras", 4, mu).tolist() == pytest.approx(karras + [0.0])
    expo = [math.exp(math.log(hi) + i / 3 * (math.log(lo) - math.log(hi))) for i in range(4)]
    assert flux_sigmas("exponential", 4, mu).tolist() == pytest.approx(expo + [0.0])


def test_sgm_uniform_and_beta_shapes():
    mu = 1.15
    lo = shift_by_hand(mu, 1e-4)
    ts = [1 + i / 4 * (lo - 1) for i in range(4)]
    assert flux_sigmas("sgm_uniform", 4, mu).tolist() == pytest.approx(
        [shift_by_hand(mu, t) for t in ts] + [0.0]
    )
    beta = flux_sigmas("beta", 20, mu)
    assert beta[0] == 1.0 and beta[-1] == 0.0
    assert torch.all(beta[:-1] > beta[1:])  # strictly decreasing after de-duplication
