"""Sigma modifiers: Detail Daemon (specs §1) and Lying Sigma (§2).

Both wrap a denoiser x0(x, sigma) and change only the sigma handed to it; the sampler keeps
its own grid. For Flux the inner denoiser is x - sigma_hat * v(x, sigma_hat), so a sampler
sees (x - x0) / sigma = (sigma_hat / sigma) * v(x, sigma_hat), which is the spec's effect for
every sampler and every model evaluation. Wrappers nest like ComfyUI's sampler wrappers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.flux.schedules import time_shift
from engine.recipe import DetailDaemonParams, LyingSigmaParams, SettingsParams

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

DD_MIN_SIGMA_MARGIN = 1e-5  # the wrapper is inactive within this of the last sigma
DD_MIN_FACTOR = 1e-6  # sigma is never scaled to zero or below


def percent_to_sigma(percent: float, mu: float) -> float:
    """ModelSamplingFlux.percent_to_sigma: 1 at p <= 0, 0 at p >= 1, else shift(mu, 1 - p)."""
    if percent <= 0.0:
        return 1.0
    if percent >= 1.0:
        return 0.0
    return float(time_shift(mu, 1.0 - percent))


def _ramp(values: np.ndarray, params: DetailDaemonParams, offset: float) -> np.ndarray:
    if params.smooth:
        values = 0.5 * (1 - np.cos(values * np.pi))
    values = values**params.exponent
    if values.any():
        # An all-zero ramp stays zero: the offset only shifts a ramp that exists.
        values = values * (params.amount - offset) + offset
    return values


def detail_daemon_schedule(steps: int, params: DetailDaemonParams) -> np.ndarray:
    """The per-step multiplier m[0..steps-1] of Detail Daemon (specs §1)."""
    start = min(params.start, params.end)
    mid = start + params.bias * (params.end - start)
    # Python's round (half to even) on purpose: it decides the indices exactly as the node.
    i_s, i_m, i_e = (int(round(p * (steps - 1))) for p in (start, mid, params.end))
    schedule = np.zeros(steps)
    schedule[i_s : i_m + 1] = _ramp(np.linspace(0, 1, i_m - i_s + 1), params, params.start_offset)
    schedule[i_m : i_e + 1] = _ramp(np.linspace(1, 0, i_e - i_m + 1), params, params.end_offset)
    schedule[:i_s] = params.start_offset
    schedule[i_e + 1 :] = params.end_offset
    return schedule * (1 - params.fade)


def multiplier_at(sigma: float, sigmas: np.ndarray, schedule: np.ndarray) -> float:
    """m(sigma): the schedule entry of the nearest grid sigma, interpolated between grid points
    so second evaluations of multi-step samplers get an in-between value."""
    if len(schedule) < 2 or len(sigmas) < 2 or sigma <= 0 or not sigmas[-1] <= sigma <= sigmas[0]:
        return 0.0
    deltas = np.abs(sigmas[:-1] - sigma)
    idx = int(np.argmin(deltas))
    at_head = idx == 0 and sigma >= sigmas[0]
    at_tail = idx == len(schedule) - 1 and sigma <= sigmas[-2]
    if at_head or at_tail or deltas[idx] == 0:
        return float(schedule[idx])
    low, high = (idx, idx - 1) if sigma > sigmas[idx] else (idx + 1, idx)
    s_low, s_high = sigmas[low], sigmas[high]
    if s_high == s_low:
        return float(schedule[low])
    ratio = min(max((sigma - s_low) / (s_high - s_low), 0.0), 1.0)
    return float(schedule[low] + ratio * (schedule[high] - schedule[low]))


def detail_daemon_cfg(params: DetailDaemonParams, guider_cfg: float | None) -> float:
    """The cfg that scales the effect: the override if > 0, else the guider's cfg, else 1."""
    if params.cfg_scale_override > 0:
        return params.cfg_scale_override
    return 1.0 if guider_cfg is None else float(guider_cfg)


@dataclass
class DetailDaemonModel:
    """Denoiser wrapper: feeds sigma * max(1e-6, 1 - 0.1 * m(sigma) * cfg) to the inner model."""

    model: Denoiser
    sigmas: torch.Tensor
    params: DetailDaemonParams
    cfg: float = 1.0
    schedule: np.ndarray = field(init=False)
    _grid: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._grid = self.sigmas.detach().cpu().double().numpy()
        self.schedule = detail_daemon_schedule(len(self._grid) - 1, self.params)

    def adjust(self, sigma: torch.Tensor) -> torch.Tensor:
        """The sigma the inner model sees; unchanged outside [sigma_last + 1e-5, sigma_0]."""
        value = float(sigma.max())
        if not self._grid[-1] + DD_MIN_SIGMA_MARGIN <= value <= self._grid[0]:
            return sigma
        adjustment = multiplier_at(value, self._grid, self.schedule) * 0.1
        return sigma * max(DD_MIN_FACTOR, 1.0 - adjustment * self.cfg)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.adjust(sigma))


@dataclass
class LyingSigmaModel:
    """Denoiser wrapper: feeds sigma * (1 + dishonesty) inside [s_end, s_start] (specs §2)."""

    model: Denoiser
    params: LyingSigmaParams
    mu: float
    sigma_start: float = field(init=False)
    sigma_end: float = field(init=False)

    def __post_init__(self) -> None:
        self.sigma_start = round(percent_to_sigma(self.params.start_percent, self.mu), 4)
        self.sigma_end = round(percent_to_sigma(self.params.end_percent, self.mu), 4)

    def adjust(self, sigma: torch.Tensor) -> torch.Tensor:
        """The sigma the inner model sees."""
        if self.sigma_end <= float(sigma.max()) <= self.sigma_start:
            return sigma * (1.0 + self.params.dishonesty)
        return sigma

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.adjust(sigma))


def apply_sigma_modifiers(
    model: Denoiser, sigmas: torch.Tensor, settings: SettingsParams, mu: float
) -> Denoiser:
    """Wrap `model` with the enabled modifiers: Detail Daemon outside, Lying Sigma inside."""
    # Detail Daemon outermost so it looks up its schedule at the sampler's own (grid) sigma;
    # Lying Sigma then scales the result. In ComfyUI the order is however the graph chains them.
    if settings.lying_sigma.enabled:
        model = LyingSigmaModel(model, settings.lying_sigma, mu)
    if settings.detail_daemon.enabled:
        cfg = detail_daemon_cfg(settings.detail_daemon, settings.cfg)
        model = DetailDaemonModel(model, sigmas, settings.detail_daemon, cfg)
    return model
