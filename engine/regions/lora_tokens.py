"""A region's model LoRA on its own tokens only: one pass, each LoRA layer's update scaled
per token by the region's weight.

Why not ComfyUI's way (hook LoRAs: one model call per region, outputs blended by mask)?
That costs a full transformer call per region and step; a LoRA update is a rank-r product,
so masking it per token costs about what the LoRA costs anyway (bench/regions.py). The
region adapters stay loaded as peft adapters but inactive; a forward hook on each LoRA layer
adds Σ_r w_r[token] · s_r · B_r(A_r(x)) to the layer's output, where w_r is 1 on region r's
text, 0 on other text and the region's mask weight on image tokens.

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
    cache: dict = {}

    def add_updates(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        for adapters, tokens in parts:
            if tokens.shape[0] != x.shape[-2]:
                raise RuntimeError(
                    f"a region LoRA layer saw {x.shape[-2]} tokens, expected {tokens.shape[0]}"
                )
            weight = _on(cache, tokens, output)
            for name, scale in adapters:
                lora_a, lora_b = layer.lora_A[name], layer.lora_B[name]
                update = lora_b(lora_a(x.to(lora_a.weight.dtype))) * scale
                output = output + (weight * update).to(output.dtype)
        return output

    return add_updates


def _on(cache: dict, tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The token weights as a (T, 1) column on the output's device (converted once)."""
    key = (id(tokens), like.device)
    if key not in cache:
        cache[key] = tokens.to(like.device, torch.float32)[:, None]
    return cache[key]
