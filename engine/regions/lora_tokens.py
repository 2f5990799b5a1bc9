"""A region's model LoRA on its own tokens only: one pass, each LoRA layer's update scaled
per token by the region's weight.

Why not ComfyUI's way (hook LoRAs: one model call per region, outputs blended by mask)?
That costs a full transformer call per region and step; a LoRA update is a rank-r product,
so masking it per token costs about what the LoRA costs anyway (bench/regions.py). The
region adapters stay loaded as peft adapters but inactive; a forward hook on each LoRA layer
adds Σ_r B_r(w_r[token] · s_r · A_r(x)) to the layer's output (the per-token weight scales
the rank-r activations, not the layer's wide output), where w_r is 1 on region r's text, 0
on other text and the region's mask weight on image tokens.

Layers without a token axis (the modulation of every block, the time / guidance / pooled
embedders, the final norm) act on the whole image at once: a region's update there cannot be
confined to its tokens, so those layers of a region LoRA are left out, and the note says how
many.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from peft.tuners.lora import LoraLayer

# diffusers FluxTransformer2DModel module names by the tokens their input holds
_IMAGE = re.compile(
    r"^(transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2))"
    r"|x_embedder|proj_out)$"
)
_TEXT = re.compile(
    r"^(transformer_blocks\.\d+\.(attn\.(add_q_proj|add_k_proj|add_v_proj|to_add_out)"
    r"|ff_context\.net\.(0\.proj|2))|context_embedder)$"
)
_JOINT = re.compile(r"^single_transformer_blocks\.\d+\.(proj_mlp|proj_out|attn\.(to_q|to_k|to_v))$")


def token_stream(module_name: str) -> str | None:
    """ "image", "text" or "joint" ([text; image]) for a layer with a token axis, else None."""
    for stream, pattern in (("image", _IMAGE), ("text", _TEXT), ("joint", _JOINT)):
        if pattern.match(module_name):
            return stream
    return None


@dataclass(frozen=True)
class RegionAdapters:
    """One region's model LoRA: adapter name -> strength, and its per-token weights over the
    joint sequence [text; image] (T,)."""

    weights: dict[str, float]
    tokens: torch.Tensor


@dataclass
class RegionLoraReport:
    layers: int = 0  # LoRA layers masked to their tokens
    skipped: int = 0  # layers of region adapters without a token axis, left out


@contextmanager
def region_loras(
    transformer: torch.nn.Module, regions: list[RegionAdapters], text_tokens: int
) -> Iterator[RegionLoraReport]:
    """Inside the block, every region adapter acts on its tokens; afterwards none does."""
    report = RegionLoraReport()
    handles = []
    names = {name for region in regions for name in region.weights}
    for module_name, module in transformer.named_modules():
        if not isinstance(module, LoraLayer) or not names & set(module.lora_A):
            continue
        stream = token_stream(module_name)
        if stream is None:
            report.skipped += 1
            continue
        parts = [_part(module, region, stream, text_tokens) for region in regions]
        parts = [p for p in parts if p is not None]
        if parts:
            handles.append(module.register_forward_hook(_hook(module, parts)))
            report.layers += 1
    try:
        yield report
    finally:
        for handle in handles:
            handle.remove()


def _part(
    layer: LoraLayer, region: RegionAdapters, stream: str, text_tokens: int
) -> tuple[list[tuple[str, float]], torch.Tensor] | None:
    """This layer's adapters of the region with their scaled strengths, and the token
    weights of the stream the layer sees."""
    adapters = [
        (name, strength * layer.lora_alpha[name] / layer.r[name])
        for name, strength in region.weights.items()
        if name in layer.lora_A and strength != 0.0
    ]
    if not adapters:
        return None
    tokens = region.tokens
    if stream == "text":
        tokens = tokens[:text_tokens]
    elif stream == "image":
        tokens = tokens[text_tokens:]
    return adapters, tokens


def _hook(layer: LoraLayer, parts: list):
    """Adds every region's update in one pair of products: x·[A_1; A_2; …]ᵀ gives the rank-r
    activations of all adapters, each column scaled per token by its region's weight and
    strength (cheap: r columns, not the layer's width), then ·[B_1, B_2, …]ᵀ onto the output."""
    names = [name for adapters, _ in parts for name, _ in adapters]
    ranks = [layer.lora_A[name].weight.shape[0] for name in names]
    down = torch.cat([layer.lora_A[name].weight for name in names])
    up = torch.cat([layer.lora_B[name].weight for name in names], dim=1)
    columns = _column_weights(parts, ranks)  # float32: strengths keep their precision
    cache: dict = {}

    def add_updates(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        if columns.shape[0] != x.shape[-2]:
            raise RuntimeError(
                f"a region LoRA layer saw {x.shape[-2]} tokens, expected {columns.shape[0]}"
            )
        a, b, w = _on(cache, (down, up, columns), x.device)
        low = (torch.nn.functional.linear(x.to(a.dtype), a).float() * w).to(a.dtype)
        return output + torch.nn.functional.linear(low, b).to(output.dtype)

    return add_updates


def _column_weights(parts: list, ranks: list[int]) -> torch.Tensor:
    """(T, Σ ranks): for each adapter's rank columns, its region's token weights × its scaled
    strength."""
    blocks, index = [], 0
    for adapters, tokens in parts:
        for _, scale in adapters:
            weight = tokens.float()[:, None] * scale
            blocks.append(weight.expand(-1, ranks[index]))
            index += 1
    return torch.cat(blocks, dim=1)


def _on(cache: dict, tensors: tuple, device: torch.device) -> tuple:
    """The factors and column weights on the input's device (moved once)."""
    if device not in cache:
        cache[device] = tuple(t.to(device) for t in tensors)
    return cache[device]
