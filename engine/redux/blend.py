"""Token arithmetic of the Redux tab: blending two references, and the prompt balance.

Strengths are the suite's sliders, 1-100, meaning 0.01-1.00 (seed 000 §3.4).

- "average" (diffusers' FluxPriorReduxPipeline with prompt_embeds_scale=[w, 1 - w]): one
  block of N tokens, w·t1 + (1 - w)·t2 with w = s1 / (s1 + s2). Only the ratio of the two
  sliders matters (70/30 and 35/15 give the same tokens); the weights sum to 1, so the block
  keeps the magnitude Redux was trained with. A single reference gets weight 1.
- "concat" (chaining ComfyUI's StyleModelApply in "multiply" mode): both blocks, each
  scaled by its own strength / 100, one after the other: 2N tokens.

The prompt balance b in [0, 1] weighs the references against the text prompt through
attention, as ComfyUI's StyleModelApply in "attn_bias" mode (specs §5): the tokens are not
scaled; every text and image query adds log(scale) to its scores for the Redux tokens (their
columns), with scale = 2·(1 - b), and the Redux tokens' own queries get no bias. 0.5 (the
default) is scale 1: no bias, and no mask at all, so the render is exactly Redux as trained
and attention keeps its fast mask-free kernels. 1 is scale 0: a -inf bias, the references
are ignored (the image is what the prompt alone gives). 0 is scale 2: log 2, each Redux
token counts twice in every softmax. Scaling the tokens instead barely steers, since Flux
normalises every context token (LayerNorm in AdaLayerNormZero, RMSNorm on q and k) before
attending.

Each reference also has its own attention bias, in the same log domain: its columns get the
balance's bias (0 at 0.5) plus its own, so -inf stays -inf. With the balance at 0.5 and
every own bias 0 there is no bias at all, as above.

The bias travels as PromptEmbeddings.token_bias; FluxDenoiser builds the mask from it. Its
cost: one (L, L) mask in the compute dtype per pass, L = 512 + 729·k + 4096 tokens at 1024²
with k Redux blocks (k = 1: 57 MB in bf16), and on GPUs no flash-attention kernel for the
positive calls (the memory-efficient one takes the mask).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

MODES = ("average", "concat")
BALANCE_NEUTRAL = 0.5


def strength_scale(strength: int) -> float:
    """A slider value 1-100 as the factor 0.01-1.00."""
    return strength / 100


def average_weights(strength1: int, strength2: int) -> tuple[float, float]:
    """(w, 1 - w) with w = s1 / (s1 + s2)."""
    w = strength1 / (strength1 + strength2)
    return w, 1.0 - w


def blend_scales(mode: str, strengths: tuple[int, ...]) -> tuple[float, ...]:
    """The factor each reference's tokens get in `mode`, in reference order."""
    if mode not in MODES:
        raise ValueError(f"unknown Redux blend mode {mode!r}")
    if mode == "concat":
        return tuple(strength_scale(s) for s in strengths)
    if len(strengths) == 1:
        return (1.0,)
    if len(strengths) != 2:
        raise ValueError(f"the average blends two references, not {len(strengths)}")
    return average_weights(*strengths)


def weighted_average(tokens: Sequence[torch.Tensor], weights: tuple[float, ...]) -> torch.Tensor:
    """Σ_k w_k·tokens[k]: K blocks of (N, D) -> (1, N, D)."""
    out = weights[0] * tokens[0]
    for weight, block in zip(weights[1:], tokens[1:], strict=True):
        out = out + weight * block
    return out.unsqueeze(0)


def concatenate(tokens: Sequence[torch.Tensor], scales: tuple[float, ...]) -> torch.Tensor:
    """[s_1·tokens[1]; s_2·tokens[2]; ...]: blocks of (N_k, D) -> (1, Σ N_k, D)."""
    blocks = [scale * block for scale, block in zip(scales, tokens, strict=True)]
    return torch.cat(blocks, dim=0).unsqueeze(0)


def blend(tokens: Sequence[torch.Tensor], mode: str, scales: tuple[float, ...]) -> torch.Tensor:
    """Per-reference Redux tokens (K blocks of (N_k, D), or a (K, N, D) tensor) as one
    conditioning block: (1, N, D) averaged, (1, Σ N_k, D) concatenated."""
    if len(scales) != len(tokens):
        raise ValueError(f"{len(scales)} scales for {len(tokens)} references")
    return weighted_average(tokens, scales) if mode == "average" else concatenate(tokens, scales)


def balance_scale(balance: float) -> float:
    """The prompt balance as the Redux tokens' attention weight: 2·(1 - b), 1 at b = 0.5."""
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"prompt balance {balance} is outside 0-1")
    return 2.0 * (1.0 - balance)


def balance_bias(balance: float) -> float | None:
    """The attention bias on the Redux columns: log(scale), -inf at b = 1, None at 0.5."""
    scale = balance_scale(balance)
    if scale == 1.0:
        return None
    return math.log(scale) if scale > 0 else -math.inf


def reference_biases(balance: float, own: tuple[float, ...]) -> tuple[float, ...] | None:
    """Each reference's column bias: the balance's (0 at 0.5) plus its own; None if all 0."""
    shared = balance_bias(balance)
    if shared is None and not any(own):
        return None
    base = 0.0 if shared is None else shared
    return tuple(base + bias for bias in own)  # -inf + a finite bias stays -inf


def column_bias(sizes: tuple[int, ...], biases: tuple[float, ...]) -> torch.Tensor:
    """One float32 bias per Redux token: biases[k] repeated sizes[k] times."""
    blocks = [torch.full((size,), bias) for size, bias in zip(sizes, biases, strict=True)]
    return torch.cat(blocks)
