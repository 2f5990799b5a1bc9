"""Sigma schedules for Flux (ComfyUI semantics, specs/algorithms.md §4).

Each schedule returns `steps` sigmas plus a trailing 0. They are written here rather than
taken from diffusers because ComfyUI's grids (the 10,000-entry shifted table, beta's index
de-duplication, denoise truncation) differ from diffusers' schedulers, and people compare
results with ComfyUI.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import beta as beta_dist

TABLE_SIZE = 10_000
KARRAS_RHO = 7.0
BETA_ALPHA = BETA_BETA = 0.6


def flux_mu(width: int, height: int, base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """ModelSamplingFlux: mu grows linearly with the token count (W·H/256) from 256 to 4096."""
    slope = (max_shift - base_shift) / (4096 - 256)
    return base_shift + slope * (width * height / 256 - 256)


def time_shift(mu: float, t: np.ndarray | float) -> np.ndarray | float:
    """flux_time_shift(mu, 1, t) = e^mu / (e^mu + 1/t - 1)."""
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return math.exp(mu) / (math.exp(mu) + (1.0 / t - 1.0))


def sigma_table(mu: float) -> np.ndarray:
    """ComfyUI's table: sigma_k = shift((k+1)/10000), k = 0..9999."""
    return time_shift(mu, np.arange(1, TABLE_SIZE + 1, dtype=np.float64) / TABLE_SIZE)


def simple(table: np.ndarray, steps: int) -> list[float]:
    stride = len(table) / steps
    return [float(table[-(1 + int(x * stride))]) for x in range(steps)]


def sgm_uniform(table: np.ndarray, steps: int, mu: float) -> list[float]:
    t = np.linspace(table[-1], table[0], steps + 1)[:-1]
    return [float(s) for s in time_shift(mu, t)]


def beta(table: np.ndarray, steps: int) -> list[float]:
    q = 1.0 - np.linspace(0, 1, steps, endpoint=False)
    idx = np.rint(beta_dist.ppf(q, BETA_ALPHA, BETA_BETA) * (len(table) - 1))
    out, last = [], None
    for i in idx:
        if i != last:
            out.append(float(table[int(i)]))
        last = i
    return out


def karras(table: np.ndarray, steps: int) -> list[float]:
    lo, hi = table[0] ** (1 / KARRAS_RHO), table[-1] ** (1 / KARRAS_RHO)
    ramp = np.linspace(0, 1, steps)
    return [float(s) for s in (hi + ramp * (lo - hi)) ** KARRAS_RHO]


def exponential(table: np.ndarray, steps: int) -> list[float]:
    return [float(s) for s in np.exp(np.linspace(math.log(table[-1]), math.log(table[0]), steps))]


def _full_schedule(name: str, table: np.ndarray, steps: int, mu: float) -> list[float]:
    if name == "simple":
        return simple(table, steps)
    if name == "sgm_uniform":
        return sgm_uniform(table, steps, mu)
    if name == "beta":
        return beta(table, steps)
    if name == "karras":
        return karras(table, steps)
    if name == "exponential":
        return exponential(table, steps)
    raise ValueError(f"unknown scheduler {name!r}")


def flux_sigmas(name: str, steps: int, mu: float, denoise: float = 1.0) -> torch.Tensor:
    """Sigmas (float64): `steps` steps ending in 0; denoise < 1 keeps a longer grid's tail."""
    if denoise <= 0:
        return torch.zeros(0, dtype=torch.float64)
    total = steps if denoise >= 1 else int(steps / denoise)
    table = sigma_table(mu)
    sigmas = _full_schedule(name, table, total, mu) + [0.0]
    return torch.tensor(sigmas[-(steps + 1) :], dtype=torch.float64)
