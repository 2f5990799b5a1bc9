"""Identity benchmark: the per-step cost of PuLID and of the pose ControlNet over a Flux step.

Four denoiser calls are timed side by side, one step each per round: the plain Flux step,
the step with PuLID on (pulid_applied: the REAL_PULID cross-attention modules after double
blocks 0, 2, ... and single blocks 0, 4, ..., random ID tokens at weight 1 over the whole
sigma range), the step with the pose ControlNet (control_residuals through FluxDenoiser's
`control` hook, union mode pose, strength 0.85) and the step with both. The IDFormer runs once
per render, not per step, so it is not timed. Each figure is the median of the timed rounds
after the warm-up rounds; the ratios to the plain step follow.

On CUDA: FLUX.1-dev's real transformer (19 double + 38 single blocks) in bf16 with random
weights, a 1024² render (4096 image tokens), 512 T5 tokens, a ControlNet of the Union Pro
shape (5 double + 10 single blocks at FLUX.1 width, 10 union modes). Goal on an H100: PuLID +
ControlNet add at most 35 % to a step. On a CPU it is reduced: Flux 1 double + 2 single
blocks, PuLID built for them (REAL_PULID.with_blocks: 2 CA modules), a ControlNet of 1 double
+ 1 single block, a 256² render, the T5 tokens scaled by (size/1024)², fp32; only the ratios
mean anything there, and both extras are a larger share of the reduced Flux than of the real.

Run: .venv/bin/python bench/identity.py [--device auto] [--size 1024] [--steps 5]
A readable table, then the JSON summary as the last line (also bench/results/identity.json).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import FluxControlNetModel, FluxTransformer2DModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.random_models import build, config, weights_gb  # noqa: E402
from bench.refine_setup import Clock, peak_gb, rounded, step_bench_main  # noqa: E402
from engine.flux.denoiser import FluxDenoiser  # noqa: E402
from engine.flux.inpaint import DEFAULT_MU  # noqa: E402
from engine.flux.latents import image_ids  # noqa: E402
from engine.flux.prompt import PromptEmbeddings  # noqa: E402
from engine.identity.control_step import ControlParams, control_residuals  # noqa: E402
from engine.identity.controlnet import UNION_POSE_MODE  # noqa: E402
from engine.identity.pulid_networks import REAL_PULID, PulidModules, build_pulid_modules  # noqa: E402
from engine.identity.pulid_sampling import PulidSampling, pulid_applied  # noqa: E402
from engine.models.attention import choose_attention  # noqa: E402
from engine.models.precision import pick_device  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "identity.json"
REAL, T5_TOKENS, POOLED, T5_WIDTH = 1024, 512, 768, 4096
FLUX_BLOCKS, REDUCED_FLUX = (19, 38), (1, 2)
UNION_PRO, REDUCED_CONTROL, UNION_MODES = (5, 10), (1, 1), 10
GOAL_ADDED = 0.35  # PuLID + ControlNet add at most 35 % to a step (H100)
VARIANTS = ("plain", "pulid", "controlnet", "both")
SEED = 0


@dataclass(frozen=True)
class Setup:
    device: torch.device
    size: int
    steps: int
    warmup: int
    reduced: bool
    text_tokens: int

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.device.type == "cuda" else torch.float32


@dataclass
class Models:
    transformer: FluxTransformer2DModel
    controlnet: FluxControlNetModel
    pulid: PulidModules


def build_models(setup: Setup) -> Models:
    """Flux, the Union-Pro-shaped ControlNet and PuLID's modules, random, on the device."""
    double, single = REDUCED_FLUX if setup.reduced else FLUX_BLOCKS
    flux = config("flux1_transformer.json") | {"num_layers": double, "num_single_layers": single}
    cn_double, cn_single = REDUCED_CONTROL if setup.reduced else UNION_PRO
    control = flux | {
        "num_layers": cn_double, "num_single_layers": cn_single, "num_mode": UNION_MODES,
    }  # fmt: skip
    pulid = REAL_PULID.with_blocks(double, single)
    return Models(
        transformer=build(lambda: FluxTransformer2DModel(**flux), setup.device, setup.dtype),
        controlnet=build(lambda: FluxControlNetModel(**control), setup.device, setup.dtype),
        pulid=build_pulid_modules(pulid, seed=SEED, device=setup.device, dtype=setup.dtype),
    )


@dataclass
class Inputs:
    """One render's random inputs: prompt, latents, control tokens and ID tokens."""

    embeddings: PromptEmbeddings
    latents: torch.Tensor
    control: torch.Tensor
    id_tokens: torch.Tensor


def make_inputs(setup: Setup) -> Inputs:
    gen = torch.Generator().manual_seed(SEED)
    tokens = (setup.size // 16) ** 2

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(setup.device, setup.dtype)

    embeddings = PromptEmbeddings(rand(1, setup.text_tokens, T5_WIDTH), rand(1, POOLED))
    encoder = REAL_PULID.encoder
    return Inputs(
        embeddings, rand(1, tokens, 64), rand(1, tokens, 64),
        rand(1, encoder.num_queries, encoder.output_dim),
    )  # fmt: skip


class Bench:
    """The four variants over one transformer; each call is one denoiser step."""

    def __init__(self, setup: Setup, models: Models, inputs: Inputs) -> None:
        self.setup, self.models, self.inputs = setup, models, inputs
        self.clock = Clock(setup.device)
        ids = image_ids(setup.size, setup.size, setup.device)
        attention = choose_attention(setup.device, setup.dtype)
        self.plain = FluxDenoiser(
            models.transformer, inputs.embeddings, ids, 3.5, setup.dtype, attention=attention
        )
        self.controlled = FluxDenoiser(
            models.transformer, inputs.embeddings, ids, 3.5, setup.dtype,
            attention=attention, control=self.control,
        )  # fmt: skip

    def control(self, inputs: dict, sigma: torch.Tensor) -> dict:
        """The denoiser's hook: the ControlNet's residuals for this call's inputs."""
        params = ControlParams(strength=0.85, start=0.0, end=1.0, mode=UNION_POSE_MODE)
        residuals = control_residuals(
            self.models.controlnet, self.inputs.control, inputs, params, 0, 1
        )
        return residuals.transformer_kwargs()

    def context(self, variant: str) -> AbstractContextManager:
        """PuLID's hooks for the variants that use it."""
        if variant not in ("pulid", "both"):
            return nullcontext()
        params = PulidSampling(weight=1.0, start=0.0, end=1.0, modules="random")
        return pulid_applied(
            self.models.transformer, self.models.pulid, self.inputs.id_tokens, params, DEFAULT_MU
        )

    def step(self, variant: str, sigma: float) -> float:
        """Seconds of one denoiser call of `variant` at `sigma`."""
        denoiser = self.controlled if variant in ("controlnet", "both") else self.plain
        x, s = self.inputs.latents, torch.tensor(sigma)
        with self.context(variant):
            seconds, _ = self.clock(lambda: denoiser(x, s))
        return seconds

    def rounds(self) -> dict[str, list[float]]:
        """Warm-up rounds, then `steps` rounds of one call per variant (interleaved, so a
        slow spell of the machine hits every variant alike; the order rotates each round)."""
        total = self.setup.warmup + self.setup.steps
        sigmas = torch.linspace(1.0, 1.0 / total, total).tolist()
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for index, sigma in enumerate(sigmas):
            for variant in VARIANTS[index % 4 :] + VARIANTS[: index % 4]:  # rotated
                seconds = self.step(variant, sigma)
                if index >= self.setup.warmup:
                    times[variant].append(seconds)
            if index + 1 == self.setup.warmup and self.setup.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.setup.device)
        return times


def architecture(setup: Setup, models: Models) -> dict[str, str]:
    def blocks(model: torch.nn.Module) -> str:
        c = model.config
        return f"{c.num_layers} double + {c.num_single_layers} single blocks"

    where = "reduced on CPU" if setup.device.type == "cpu" else "reduced"
    prefix = f"{where}: " if setup.reduced else ""
    return {
        "flux": prefix + ("" if setup.reduced else "FLUX.1-dev, ") + blocks(models.transformer),
        "controlnet": f"{prefix}{blocks(models.controlnet)}, {UNION_MODES} union modes"
        + ("" if setup.reduced else " (Union Pro shape)"),
        "pulid": f"{len(models.pulid.ca)} CA modules on those blocks (REAL_PULID widths)",
    }


def run(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    size = args.size or (REAL if cuda else 256)
    if size % 16:
        raise SystemExit(f"--size must be a multiple of 16, got {size}")
    reduced = not cuda
    tokens = max(8, round(T5_TOKENS * (size / REAL) ** 2)) if reduced else T5_TOKENS
    setup = Setup(device, size, args.steps or (5 if cuda else 3), 2, reduced, tokens)
    torch.set_grad_enabled(False)
    clock = Clock(device)
    build_s, models = clock(lambda: build_models(setup))
    bench = Bench(setup, models, make_inputs(setup))
    times = bench.rounds()
    median = {v: statistics.median(t) for v, t in times.items()}
    plain = median["plain"]
    added = median["both"] / plain - 1
    comparable = cuda and not reduced and size == REAL
    return rounded(
        {
            "benchmark": "identity",
            "device": torch.cuda.get_device_name(device) if cuda else "CPU",
            "architecture": architecture(setup, models),
            "random_weights": True,
            "dtype": str(setup.dtype).removeprefix("torch."),
            "size": size,
            "image_tokens": (size // 16) ** 2,
            "t5_tokens": tokens,
            "steps": setup.steps,
            "warmup": setup.warmup,
            "reduced": reduced,
            "build_s": build_s,
            "weights_gb": {
                "flux": weights_gb(models.transformer),
                "controlnet": weights_gb(models.controlnet),
                "pulid": weights_gb(models.pulid),
            },
            "step_s": median,
            "step_runs_s": times,
            "ratios": {f"{v}/plain": median[v] / plain for v in VARIANTS[1:]},
            "added": added,
            "goal": {"added": GOAL_ADDED, "met": added <= GOAL_ADDED if comparable else None},
            "peak_memory_gb": peak_gb(device),
            "peak_memory_kind": "GPU allocated" if cuda else "process RSS (host)",
        }
    )


def show(f: dict) -> None:
    note = "" if f["goal"]["met"] is not None else " — only the ratios mean anything"
    arch = f["architecture"]
    print(
        f"Identity step cost on {f['device']}: random weights, {f['dtype']}, {f['size']}² "
        f"({f['image_tokens']} image tokens), {f['t5_tokens']} T5 tokens, median of "
        f"{f['steps']} steps after {f['warmup']} warm-up{note}"
    )
    print(f"  Flux: {arch['flux']}; ControlNet: {arch['controlnet']}; PuLID: {arch['pulid']}")
    print(f"  {'variant':<12}{'s/step':>10}{'/ plain':>10}")
    for variant, seconds in f["step_s"].items():
        ratio = f["ratios"].get(f"{variant}/plain", 1.0)
        print(f"  {variant:<12}{seconds:>10.3f}{ratio:>10.2f}")
    met = f["goal"]["met"]
    verdict = "" if met is None else (": met" if met else ": NOT met")
    print(
        f"  PuLID + ControlNet add {f['added']:.0%} to a step   "
        f"[goal on an H100 at 1024²: <= {f['goal']['added']:.0%}{verdict}]"
    )
    if f["reduced"]:
        print(
            "  reduced: the ControlNet (1 + 1 blocks) and PuLID (2 CA modules) are a larger share "
            "of the 1 + 2 block Flux than Union Pro (5 + 10) and PuLID (20) are of FLUX.1 (19 + 38)"
        )
    weights = ", ".join(f"{k} {v:.2f} GB" for k, v in f["weights_gb"].items())
    print(
        f"  peak memory {f['peak_memory_gb']:.2f} GB ({f['peak_memory_kind']}); weights "
        f"{weights}; built in {f['build_s']:.1f} s"
    )


def main(argv: list[str] | None = None) -> None:
    step_bench_main(__doc__, run, show, RESULTS, argv)


if __name__ == "__main__":
    main()
