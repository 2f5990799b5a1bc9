"""What bench/regions.py runs on: its setup, the real-width Flux transformer, the random
rank-16 LoRAs as peft adapters, a CPU clock and the SDPA kernel probe."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import FluxTransformer2DModel
from torch.nn.attention import sdpa_kernel

from bench.random_models import build, config
from engine.lora.formats import ConvertedLora, LoraPair
from engine.lora.peft_adapters import inject, set_weights
from engine.models.attention import BACKENDS, AttentionChoice

REAL, T5_TOKENS, SHORT_TOKENS, POOLED, T5_WIDTH = 1024, 512, 128, 768, 4096
FLUX_BLOCKS, REDUCED_FLUX = (19, 38), (1, 1)
CPU_THREADS = 1  # steadier CPU-time figures on a shared machine than 2 threads
RANK, BLUR = 16, 48.0  # a character LoRA's rank; the recipe's default mask blur at 1024²
# Every attention and feed-forward Linear of the blocks (what ai-toolkit trains by default)
DOUBLE_LINEARS = (
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
)  # fmt: skip
SINGLE_LINEARS = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out")
ADAPTERS = ("global", "region_1", "region_2")
SEED = 0


@dataclass(frozen=True)
class Setup:
    device: torch.device
    size: int
    steps: int
    warmup: int
    reduced: bool
    base_tokens: int  # the base prompt's T5 length
    region_tokens: int  # each region's T5 length (the model's own)
    short_tokens: int  # each region's T5 length at regions.text_tokens = 128

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.device.type == "cuda" else torch.float32

    @property
    def image_tokens(self) -> int:
        return (self.size // 16) ** 2


def build_transformer(setup: Setup) -> FluxTransformer2DModel:
    double, single = REDUCED_FLUX if setup.reduced else FLUX_BLOCKS
    flux = config("flux1_transformer.json") | {"num_layers": double, "num_single_layers": single}
    return build(lambda: FluxTransformer2DModel(**flux), setup.device, setup.dtype)


def random_lora(transformer: torch.nn.Module, seed: int) -> ConvertedLora:
    """A rank-16 LoRA on every attention / feed-forward Linear of the blocks, small random
    values (alpha folded in, as the engine's converted files have it)."""
    gen = torch.Generator().manual_seed(seed)
    config = transformer.config
    modules = [f"transformer_blocks.{i}.{m}" for i in range(config.num_layers)
               for m in DOUBLE_LINEARS]  # fmt: skip
    modules += [f"single_transformer_blocks.{i}.{m}" for i in range(config.num_single_layers)
                for m in SINGLE_LINEARS]  # fmt: skip
    layers = {}
    for module in modules:
        linear = transformer.get_submodule(module)
        down = torch.randn(RANK, linear.in_features, generator=gen) * 0.01
        up = torch.randn(linear.out_features, RANK, generator=gen) * 0.01
        layers[module] = [LoraPair("transformer", module, down, up)]
    return ConvertedLora(format="peft", layers=layers)


def lora_params(converted: ConvertedLora) -> int:
    return sum(p.down.numel() + p.up.numel() for p in converted.pairs("transformer"))


class CpuClock:
    """Process CPU seconds of a call: on a shared CPU it leaves out the time other work ran
    (with one thread, no other thread of ours spins waiting for a descheduled one)."""

    def __call__(self, work: Callable[[], Any]) -> tuple[float, Any]:
        start = time.process_time()
        value = work()
        return time.process_time() - start, value


def sdpa_kernel_for(choice: AttentionChoice, q: torch.Tensor, mask: torch.Tensor | None) -> str:
    """The first kernel of the ranking that accepts these inputs ("cpu" off CUDA)."""
    if q.device.type != "cuda":
        return "cpu"
    for name in choice.order or tuple(BACKENDS):
        try:
            with warnings.catch_warnings(), torch.inference_mode(), sdpa_kernel([BACKENDS[name]]):
                warnings.simplefilter("ignore")  # "... kernel not used because ...": expected
                F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
            return name
        except RuntimeError:  # "No available kernel"
            continue
    return "none"


def inject_adapters(setup: Setup, transformer: torch.nn.Module) -> int:
    """The global LoRA and the two region LoRAs as peft adapters, all off; their size."""
    params = 0
    warnings.filterwarnings("ignore", message="Already found a `peft_config`")  # 3 adapters
    for index, name in enumerate(ADAPTERS):
        converted = random_lora(transformer, SEED + 1 + index)
        inject(transformer, "transformer", converted, name, setup.dtype)
        params = lora_params(converted)
    set_weights(transformer, {})
    return params


def architecture(setup: Setup, transformer: torch.nn.Module) -> str:
    c = transformer.config
    blocks = f"{c.num_layers} double + {c.num_single_layers} single blocks"
    width = f"width {c.num_attention_heads * c.attention_head_dim} ({c.num_attention_heads} heads)"
    if setup.reduced:
        return f"reduced on CPU: {blocks} at the real {width}"
    return f"FLUX.1-dev, {blocks}, {width}"
