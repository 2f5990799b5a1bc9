"""A render's cost before it starts: time and peak memory estimated from the recipe, the
model's shape and the device, and a budget that refuses a render over its limits.

The model (torch-free; the figures come from engine/device_profile.py):
- a Flux pass costs steps × evaluations per step (2 for heun and dpmpp_sde) × 2 with true
  CFG × batch transformer evaluations; one evaluation over L = image + text tokens costs
  2·params·L FLOPs in the Linears plus 4·L²·hidden per block in attention. The runtime
  (fp8 compute, compiled blocks) scales the two parts by its own factors, since fp8 speeds
  up the Linears and not attention; the sum is in bf16-eager-equivalent FLOPs;
- its activations are batch × L × hidden × 2 bytes × `act_factor` (plus the L² score
  matrices when attention runs on the plain "math" kernel, which keeps them);
- the VAE decode holds `vae_bytes_per_pixel` per output pixel of the whole batch (one tile
  of 512² per image when the VAE is tiled) and decodes `vae_pixels_per_s`;
- the peak is the warm weights plus the largest pass's activations.
The device's throughput starts from a calibrated figure and follows what it measured in
earlier renders (`DeviceProfile.observe`), so estimates sharpen after the first render.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from engine.recipe import Recipe
from engine.sizes import render_size, round_to_grid

GB = 1024**3
TWO_EVAL_SAMPLERS = ("heun", "dpmpp_sde")
LARGE_DECODE_PIXELS = 2048 * 2048


@dataclass(frozen=True)
class FluxShape:
    """What the estimate needs to know about the transformer."""

    params: float  # parameter count
    hidden: int  # heads × head dim
    heads: int
    blocks: int  # double + single
    text_tokens: int
    vae_channels: int = 128  # the VAE decoder's channels at full resolution
    vae_dtype_bytes: int = 2
    vae_tile_pixels: int = 1024 * 1024  # what one tile of the tiled decode holds


@dataclass
class DeviceProfile:
    """Speed and memory figures of the device renders run on."""

    name: str
    memory_gb: float  # what one render may use in all
    flops_per_s: float  # effective transformer throughput
    act_factor: float = 19.0  # hidden-sized tensors per token (H200: bf16 17.2, fp8c 18.7)
    vae_act_factor: float = 9.5  # full-resolution decoder activations alive per pixel
    # Decode speed with FLUX.1's VAE (128 channels at full resolution): whole images up to
    # 4 Mpx, whole images above that (their convolutions run slower), and tiled.
    vae_pixels_per_s: float = 1.1e7
    vae_large_pixels_per_s: float = 3.6e6
    vae_tiled_pixels_per_s: float = 5.5e6
    linear_factor: float = 1.0  # the runtime's time for the Linears relative to bf16 eager
    attention_factor: float = 1.0  # and for attention
    quadratic_attention: bool = False
    measured_runs: int = 0

    def observe(self, flops: float, seconds: float) -> None:
        """Fold a measured pass into the throughput (the first one replaces the guess)."""
        if flops <= 0 or seconds <= 0:
            return
        seen = flops / seconds
        weight = 1.0 if self.measured_runs == 0 else 0.3
        self.flops_per_s = (1 - weight) * self.flops_per_s + weight * seen
        self.measured_runs += 1


@dataclass(frozen=True)
class PassCost:
    stage: str  # the graph stage that runs this pass
    what: str
    seconds: float
    gb: float  # activations on top of the warm weights
    flops: float = 0.0  # bf16-eager-equivalent FLOPs (0: not a transformer pass)


@dataclass(frozen=True)
class RunEstimate:
    device: str
    weights_gb: float
    parts: tuple[PassCost, ...]

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.parts)

    @property
    def peak_gb(self) -> float:
        return self.weights_gb + max((p.gb for p in self.parts), default=0.0)

    def short(self) -> str:
        return f"about {_seconds(self.seconds)} and {_memory(self.peak_gb)} peak on {self.device}"

    def describe(self) -> str:
        parts = "; ".join(f"{p.what}: {_seconds(p.seconds)}, {_memory(p.gb)}" for p in self.parts)
        return f"{self.short()} ({_memory(self.weights_gb)} of warm weights; {parts})"


@dataclass(frozen=True)
class RunBudget:
    """Limits one render must fit; None means no limit."""

    max_seconds: float | None = None
    max_gb: float | None = None

    def problems(self, estimate: RunEstimate) -> list[str]:
        out = []
        if self.max_seconds is not None and estimate.seconds > self.max_seconds:
            out.append(f"time {_seconds(estimate.seconds)} > {_seconds(self.max_seconds)}")
        if self.max_gb is not None and estimate.peak_gb > self.max_gb:
            out.append(f"memory {_memory(estimate.peak_gb)} > {_memory(self.max_gb)}")
        return out


@dataclass(frozen=True)
class Workload:
    """Which heavy passes a run will execute (the others are cached or off)."""

    base: bool = True
    latent: bool = True
    decode: bool = True
    tiled_vae: bool = False
    # the pending refine_* stages (engine/budget_finish.py); None: all of them
    finishing: frozenset[str] | None = None


def estimate(
    recipe: Recipe,
    shape: FluxShape,
    device: DeviceProfile,
    weights_gb: float,
    work: Workload = Workload(),
) -> RunEstimate:
    """Time and memory of the passes in `work` for `recipe`."""
    width, height = render_size(recipe.prompt)
    batch = recipe.prompt.batch_size
    parts: list[PassCost] = []
    if work.base and recipe.source.kind != "image":
        evals = evaluations(recipe.settings.sampler, recipe.settings.steps, recipe.settings.cfg)
        base_shape = with_region_tokens(recipe, shape)
        parts.append(flux_pass("base", width, height, batch, evals, base_shape, device))
    if work.latent and recipe.latent.enabled and recipe.source.kind != "image":
        width = round_to_grid(width * recipe.latent.upscale)
        height = round_to_grid(height * recipe.latent.upscale)
        evals = evaluations(recipe.settings.sampler, recipe.latent.steps, recipe.settings.cfg)
        evals = evals if recipe.latent.denoise > 0 else 0
        parts.append(flux_pass("latent", width, height, batch, evals, shape, device))
    if work.decode and recipe.source.kind != "image":
        parts.append(decode_cost(width, height, batch, shape, device, work.tiled_vae))
    return RunEstimate(device.name, weights_gb, tuple(parts))


def with_region_tokens(recipe: Recipe, shape: FluxShape) -> FluxShape:
    """The base pass's shape with each region's T5 tokens added to the text tokens."""
    regions = recipe.regions
    if not regions.active():
        return shape
    extra = regions.count() * (regions.text_tokens or shape.text_tokens)
    return dataclasses.replace(shape, text_tokens=shape.text_tokens + extra)


def flux_flops(tokens: int, shape: FluxShape, linear: float = 1.0, attention: float = 1.0):
    """FLOPs of one transformer evaluation over `tokens` (image + text) tokens, its Linears
    and its attention weighted by the runtime's factors."""
    return linear * 2 * shape.params * tokens + attention * 4 * tokens**2 * shape.hidden * (
        shape.blocks
    )


def evaluations(sampler: str, steps: int, cfg: float) -> int:
    per_step = 2 if sampler in TWO_EVAL_SAMPLERS else 1
    return steps * per_step * (2 if cfg > 1 else 1)


def flux_pass(
    stage: str, width: int, height: int, batch: int, evals: int, shape: FluxShape,
    dev: DeviceProfile,
) -> PassCost:  # fmt: skip
    tokens = (width // 16) * (height // 16) + shape.text_tokens
    flops = evals * batch * flux_flops(tokens, shape, dev.linear_factor, dev.attention_factor)
    act = batch * tokens * shape.hidden * 2 * dev.act_factor
    if dev.quadratic_attention:
        act += batch * shape.heads * tokens**2 * 4  # fp32 scores and their softmax
    label = f"{stage} pass {width}×{height}" + (f" ×{batch}" if batch > 1 else "")
    return PassCost(stage, label, flops / dev.flops_per_s, act / GB, flops)


def decode_cost(
    width: int, height: int, batch: int, shape: FluxShape, dev: DeviceProfile, tiled: bool
) -> PassCost:
    pixels = width * height
    held = min(pixels, shape.vae_tile_pixels) if tiled else pixels
    per_pixel = shape.vae_channels * shape.vae_dtype_bytes * dev.vae_act_factor
    gb = (batch * held * per_pixel + batch * pixels * 3 * 4 * 2) / GB  # + the fp32 RGB out
    rate = dev.vae_pixels_per_s if pixels <= LARGE_DECODE_PIXELS else dev.vae_large_pixels_per_s
    rate = dev.vae_tiled_pixels_per_s if tiled and pixels > shape.vae_tile_pixels else rate
    seconds = batch * pixels * (shape.vae_channels / 128) ** 2 / rate
    return PassCost("decode", f"decode {width}×{height}", seconds, gb)


def cheaper_variants(recipe: Recipe) -> list[tuple[str, Recipe]]:
    """Recipes with one cost lowered, each with a phrase saying what changed."""
    p, s, lat = recipe.prompt, recipe.settings, recipe.latent
    out: list[tuple[str, Recipe]] = []
    if p.batch_size > 1:
        out.append(("batch 1", _with(recipe, prompt=dataclasses.replace(p, batch_size=1))))
    if p.resolution > 1:
        out.append(("resolution ×1.0", _with(recipe, prompt=dataclasses.replace(p, resolution=1))))
    if max(p.width, p.height) > 1024:
        scale = 1024 / max(p.width, p.height)
        smaller = dataclasses.replace(
            p, width=round_to_grid(p.width * scale), height=round_to_grid(p.height * scale)
        )
        out.append((f"size {smaller.width}×{smaller.height}", _with(recipe, prompt=smaller)))
    if lat.enabled and recipe.source.kind != "image":
        no_latent = dataclasses.replace(lat, enabled=False)
        out.append(("latent pass off", _with(recipe, latent=no_latent)))
    if s.steps > 30:
        out.append(("30 steps", _with(recipe, settings=dataclasses.replace(s, steps=30))))
    if s.cfg > 1:
        out.append(("true CFG 1.0", _with(recipe, settings=dataclasses.replace(s, cfg=1.0))))
    return out


def _with(recipe: Recipe, **parts) -> Recipe:
    return dataclasses.replace(recipe, **parts)


def _memory(gb: float) -> str:
    return f"{gb:.1f} GB" if gb >= 1 else f"{gb * 1024:.0f} MB"


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 90:
        return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"
    return f"{value / 60:.0f} min" if value < 5400 else f"{value / 3600:.1f} h"
