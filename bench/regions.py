"""Regions benchmark: the per-step cost of two regional prompts, each with its own LoRA.

Six denoiser calls (FluxDenoiser.velocity, one step each per round) over one transformer:
  plain             base prompt alone, no mask, every LoRA off (the three adapters stay
                    injected but switched off, as the studio's LoRA stack leaves them);
  lora              the same with one global LoRA on (a typical character LoRA: rank 16 on
                    every attention and feed-forward Linear of the blocks, injected with
                    engine/lora/peft_adapters.inject as the studio loads a file);
  regions           two regions (left / right split): base + 2 region prompts of the model's
                    T5 length, the regional attention mask on (sigma inside its window), each
                    region's own rank-16 LoRA on its tokens (engine/regions/lora_tokens.py);
  regions_short     the same with each region's prompt at regions.text_tokens = 128;
  regions_no_lora   "regions" without the region LoRAs (what the tokens and the mask cost);
  regions_unmasked  the regions' tokens and LoRAs at a sigma outside the mask's window.
ComfyUI's way (hook LoRAs: one model call per region, each with its LoRA and its own prompt,
outputs blended by mask) is not run: it is estimated as 2 × the measured "lora" step (the
blending is a few elementwise ops). Each figure is the median of the timed rounds after the
warm-up rounds, the ratios to the plain step follow; "fastest" gives the ratios of each
variant's fastest round, steadier than the median where other work shares the machine. The
order of the variants rotates each round.

On CUDA: FLUX.1-dev's real transformer (19 double + 38 single blocks) in bf16 with random
weights, a 1024² render (4096 image tokens), 512 T5 tokens for the base and for each region
(128 for regions_short), SDPA with the kernels ranked by engine/models/attention.py; it also
reports which SDPA kernel each variant's attention gets (the mask rules out FlashAttention)
and its time per call. Goal on an H100: two regions with one LoRA each cost at most 1.3× a
plain step at 1024². On a CPU it is reduced: 1 double + 1 single block at the real width
(3072, 24 heads; one block of each kind keeps a run under ~3 minutes), a 256²
render, every T5 length scaled by (size/1024)² (so text and image tokens keep the real
proportion), fp32, one thread, each call timed by the process's CPU time (steady on a shared
machine, where wall time swings 2-3× with other work); only the ratios mean anything there,
and the shares of attention and of the LoRA updates in a step differ from the full model's.

Run: .venv/bin/python bench/regions.py [--device auto] [--size 1024] [--steps 5]
A readable table, then the JSON summary as the last line (also bench/results/regions.json).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import FluxTransformer2DModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.random_models import weights_gb  # noqa: E402
from bench.refine_setup import Clock, peak_gb, rounded, step_bench_main  # noqa: E402
from bench.regions_setup import (  # noqa: E402
    ADAPTERS,
    BLUR,
    CPU_THREADS,
    POOLED,
    RANK,
    REAL,
    SEED,
    SHORT_TOKENS,
    T5_TOKENS,
    T5_WIDTH,
    CpuClock,
    Setup,
    architecture,
    build_transformer,
    inject_adapters,
    sdpa_kernel_for,
)
from engine.flux.denoiser import FluxDenoiser  # noqa: E402
from engine.flux.latents import image_ids  # noqa: E402
from engine.flux.prompt import PromptEmbeddings  # noqa: E402
from engine.lora.peft_adapters import set_weights  # noqa: E402
from engine.models.attention import choose_attention  # noqa: E402
from engine.models.precision import pick_device  # noqa: E402
from engine.regions.attention import TextSegments  # noqa: E402
from engine.regions.layout import RegionalLayout  # noqa: E402
from engine.regions.lora_tokens import RegionAdapters, region_loras  # noqa: E402
from engine.regions.masks import split_masks  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "regions.json"
GOAL_RATIO = 1.3  # two regions with one LoRA each <= 1.3× a plain step (H100, 1024²)
WINDOW, INSIDE, OUTSIDE = (0.5, 1.0), 0.9, 0.3  # the mask's sigma window, sigmas in / out
VARIANTS = ("plain", "lora", "regions", "regions_short", "regions_no_lora", "regions_unmasked")
LABELS = {
    "plain": "plain step (base prompt)",
    "lora": "plain + one global LoRA",
    "regions": "2 regions, mask on, LoRA each",
    "regions_short": "the same, region text 128",
    "regions_no_lora": "2 regions, mask on, no LoRA",
    "regions_unmasked": "2 regions outside the mask window",
    "comfyui": "ComfyUI hooks: 2 × (plain + LoRA)",
}


@dataclass
class Regions:
    """One two-region layout with its denoiser and the regions' LoRAs."""

    denoiser: FluxDenoiser
    layout: RegionalLayout
    adapters: list[RegionAdapters]

    @property
    def text_tokens(self) -> int:
        return self.layout.text_tokens


class Bench:
    """The six variants over one transformer; each call is one denoiser step."""

    def __init__(self, setup: Setup, transformer: FluxTransformer2DModel) -> None:
        self.setup, self.transformer = setup, transformer
        self.clock = Clock(setup.device) if setup.device.type == "cuda" else CpuClock()
        self.attention = choose_attention(setup.device, setup.dtype)
        self.gen = torch.Generator().manual_seed(SEED)
        self.ids = image_ids(setup.size, setup.size, setup.device)
        self.latents = self.rand(1, setup.image_tokens, 64)
        base_tokens = self.rand(1, setup.base_tokens, T5_WIDTH)
        self.base = PromptEmbeddings(base_tokens, self.rand(1, POOLED))
        self.plain = self.denoiser(self.base)
        self.regions = self.two_regions(setup.region_tokens)
        self.short = self.two_regions(setup.short_tokens)
        self.hooked = (0, 0)  # LoRA layers region_loras hooked / left out

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen).to(self.setup.device, self.setup.dtype)

    def denoiser(self, embeddings: PromptEmbeddings) -> FluxDenoiser:
        return FluxDenoiser(
            self.transformer, embeddings, self.ids, 3.5, self.setup.dtype,
            attention=self.attention, region_window=WINDOW,
        )  # fmt: skip

    def two_regions(self, length: int) -> Regions:
        """Left / right split with the default blur (scaled to the size), isolation on."""
        size = self.setup.size
        masks = split_masks(size, size, 2, "left_right", 0, BLUR * size / REAL)
        segments = TextSegments(self.setup.base_tokens, (length, length))
        layout = RegionalLayout.from_masks(segments, masks.to(self.setup.device), isolate=True)
        texts = [self.rand(1, length, T5_WIDTH) for _ in range(2)]
        tokens = torch.cat([self.base.tokens, *texts], dim=1)
        embeddings = PromptEmbeddings(tokens, self.base.pooled, regions=layout)
        lora_tokens = layout.lora_tokens()  # on the device, fp32: the hooks use it as is
        adapters = [RegionAdapters({name: 1.0}, lora_tokens[i])
                    for i, name in enumerate(ADAPTERS[1:])]  # fmt: skip
        return Regions(self.denoiser(embeddings), layout, adapters)

    @contextmanager
    def variant(self, name: str):
        """The LoRA state of `name` (set outside the timed call), and its call."""
        model = self.transformer
        if name in ("plain", "lora"):
            set_weights(model, {"global": 1.0} if name == "lora" else {})
            yield lambda: self.plain.velocity(self.latents, torch.tensor(INSIDE))
            return
        regions = self.short if name == "regions_short" else self.regions
        sigma = torch.tensor(OUTSIDE if name == "regions_unmasked" else INSIDE)
        set_weights(model, {})  # region adapters stay loaded but off: the hooks apply them
        adapters = [] if name == "regions_no_lora" else regions.adapters
        with region_loras(model, adapters, regions.text_tokens) as report:
            if adapters:
                self.hooked = (report.layers, report.skipped)
            yield lambda: regions.denoiser.velocity(self.latents, sigma)

    def step(self, name: str) -> float:
        """Seconds of one call of `name`."""
        with torch.inference_mode(), self.variant(name) as call:
            seconds, _ = self.clock(call)
        return seconds

    def rounds(self) -> dict[str, list[float]]:
        """Warm-up rounds, then `steps` rounds of one call per variant (interleaved, so a
        slow spell of the machine hits every variant alike; the order rotates each round)."""
        total = self.setup.warmup + self.setup.steps
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for index in range(total):
            shift = index % len(VARIANTS)
            for name in VARIANTS[shift:] + VARIANTS[:shift]:
                seconds = self.step(name)
                if index >= self.setup.warmup:
                    times[name].append(seconds)
            if index + 1 == self.setup.warmup and self.setup.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.setup.device)
        return times

    def masked(self, name: str) -> bool:
        return name in ("regions", "regions_short", "regions_no_lora")

    def text_tokens(self, name: str) -> int:
        if name in ("plain", "lora"):
            return self.setup.base_tokens
        return (self.short if name == "regions_short" else self.regions).text_tokens

    def attention_probe(self) -> dict[str, dict]:
        """Per variant: the SDPA kernel its attention gets and ms per call (fastest of 5), at
        its shape (1 × 24 heads × tokens × 128, with the regional mask where it has one)."""
        heads = self.transformer.config.num_attention_heads
        dim = self.transformer.config.attention_head_dim
        out = {}
        for name in VARIANTS:
            tokens = self.text_tokens(name) + self.setup.image_tokens
            regions = self.short if name == "regions_short" else self.regions
            mask = (
                regions.layout.attention_mask(self.setup.dtype, self.setup.device)
                if self.masked(name)
                else None
            )
            q, k, v = (self.rand(1, heads, tokens, dim) for _ in range(3))
            kernel = sdpa_kernel_for(self.attention, q, mask)

            def call(q=q, k=k, v=v, mask=mask) -> torch.Tensor:
                with torch.inference_mode(), self.attention.context():
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

            call()
            runs = [self.clock(call)[0] for _ in range(5)]
            out[name] = {"tokens": tokens, "kernel": kernel, "ms": min(runs) * 1e3}
        return out


def run(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    size = args.size or (REAL if cuda else 256)
    if size % 16:
        raise SystemExit(f"--size must be a multiple of 16, got {size}")
    reduced = not cuda
    scale = (size / REAL) ** 2 if reduced else 1.0

    def scaled(tokens: int) -> int:
        return max(8, round(tokens * scale))

    setup = Setup(
        device, size, args.steps or (5 if cuda else 3), 2 if cuda else 1, reduced,
        scaled(T5_TOKENS), scaled(T5_TOKENS), scaled(SHORT_TOKENS),
    )  # fmt: skip
    torch.set_grad_enabled(False)
    if not cuda:
        torch.set_num_threads(CPU_THREADS)
    clock = Clock(device)
    build_s, transformer = clock(lambda: build_transformer(setup))
    inject_s, params = clock(lambda: inject_adapters(setup, transformer))
    bench = Bench(setup, transformer)
    times = bench.rounds()
    probe = bench.attention_probe()
    median = {v: statistics.median(t) for v, t in times.items()}
    fastest = {v: min(t) for v, t in times.items()}
    for figures in (median, fastest):
        figures["comfyui"] = 2 * figures["lora"]  # one call per region, each with its LoRA
    ratios = {f"{v}/plain": median[v] / median["plain"] for v in median if v != "plain"}
    fastest_ratios = {f"{v}/plain": fastest[v] / fastest["plain"] for v in fastest if v != "plain"}
    ratio = ratios["regions/plain"]
    comparable = cuda and not reduced and size == REAL
    blocks = transformer.config.num_layers + transformer.config.num_single_layers
    return rounded(
        {
            "benchmark": "regions",
            "device": torch.cuda.get_device_name(device) if cuda else "CPU",
            "architecture": architecture(setup, transformer),
            "random_weights": True,
            "dtype": str(setup.dtype).removeprefix("torch."),
            "size": size,
            "image_tokens": setup.image_tokens,
            "text_tokens": {v: bench.text_tokens(v) for v in VARIANTS},
            "masked": {v: bench.masked(v) for v in VARIANTS},
            "lora": {
                "rank": RANK,
                "layers": bench.hooked[0],
                "skipped": bench.hooked[1],
                "params_each": params,
            },
            "steps": setup.steps,
            "warmup": setup.warmup,
            "timing": "wall, CUDA synchronised" if cuda else f"CPU time, {CPU_THREADS} thread",
            "reduced": reduced,
            "build_s": build_s,
            "inject_s": inject_s,
            "weights_gb": weights_gb(transformer),
            "attention_choice": bench.attention.name,
            "step_s": median,
            "step_runs_s": times,
            "comfyui_estimate": "2 × the measured lora step (one call per region), not run",
            "ratios": ratios,
            "fastest_s": fastest,
            "fastest_ratios": fastest_ratios,
            "attention": {
                v: p | {"step_share": blocks * p["ms"] / 1e3 / median[v]} for v, p in probe.items()
            },
            "goal": {"ratio": GOAL_RATIO, "met": ratio <= GOAL_RATIO if comparable else None},
            "peak_memory_gb": peak_gb(device),
            "peak_memory_kind": "GPU allocated" if cuda else "process RSS (host)",
        }
    )


def show(f: dict) -> None:
    note = "" if f["goal"]["met"] is not None else " — only the ratios mean anything"
    label = "CPU, reduced" if f["reduced"] else f["device"]
    tokens, lora = f["text_tokens"], f["lora"]
    fastest = f["fastest_ratios"]
    print(
        f"Regions step cost on {f['device']}: random weights, {f['dtype']}, {f['size']}² "
        f"({f['image_tokens']} image tokens), median of {f['steps']} steps after "
        f"{f['warmup']} warm-up, {f['timing']}{note}"
    )
    print(
        f"  Flux: {f['architecture']}; T5 tokens: base {tokens['plain']}, with 2 regions "
        f"{tokens['regions']} (short: {tokens['regions_short']}); each LoRA rank {lora['rank']} "
        f"on {lora['layers']} layers ({lora['params_each'] / 1e6:.1f} M params)"
    )
    print(f"  [{label}]{'ms/step':>32}{'/ plain':>9}{'fastest':>9}  attention per call")
    for name, seconds in f["step_s"].items():
        key = f"{name}/plain"
        row = f"  {LABELS[name]:<36}{seconds * 1e3:>10.1f}{f['ratios'].get(key, 1.0):>9.2f}"
        row += f"{fastest.get(key, 1.0):>9.2f}"
        probe = f["attention"].get(name)
        if probe:
            share = probe["step_share"]
            row += f"  {probe['ms']:.2f} ms, {probe['kernel']}, ~{share:.0%} of the step"
        else:
            row += "  (estimate, not run)"
        print(row)
    met = f["goal"]["met"]
    verdict = "" if met is None else (": met" if met else ": NOT met")
    print(
        f"  two regions with a LoRA each: {f['ratios']['regions/plain']:.2f}× a plain step   "
        f"[goal on an H100 at 1024²: <= {f['goal']['ratio']:.2f}×{verdict}]"
    )
    if f["reduced"]:
        print(
            f"  reduced: T5 lengths scaled by (size/1024)² so text and image tokens keep the real "
            f"proportion; attention is a smaller share of a step at {f['image_tokens']} image "
            "tokens than at 4096, and a CPU has no flash kernel for the mask to rule out"
        )
    print(
        f"  peak memory {f['peak_memory_gb']:.2f} GB ({f['peak_memory_kind']}); weights "
        f"{f['weights_gb']:.2f} GB; built in {f['build_s']:.1f} s, 3 LoRAs injected in "
        f"{f['inject_s']:.1f} s; attention ranking: {f['attention_choice']}"
    )


def main(argv: list[str] | None = None) -> None:
    step_bench_main(__doc__, run, show, RESULTS, argv)


if __name__ == "__main__":
    main()
