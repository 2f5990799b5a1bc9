"""Token arithmetic of the Redux tab: blending two references, and the prompt balance.

Strengths are the suite's sliders, 1-100, meaning 0.01-1.00 (seed 000 §3.4).

- "average" (diffusers' FluxPriorReduxPipeline with prompt_embeds_scale=[w, 1 - w]): one
  block of N tokens, w·t1 + (1 - w)·t2 with w = s1 / (s1 + s2). Only the ratio of the two
  sliders matters (70/30 and 35/15 give the same tokens); the weights sum to 1, so the block
  keeps the magnitude Redux was trained with. A single reference gets weight 1.
- "concat" (chaining ComfyUI's StyleModelApply in "multiply" mode): both blocks, each
  scaled by its own strength / 100, one after the other: 2N tokens.

The prompt balance b in [0, 1] multiplies the Redux tokens by 2·(1 - b): 0.5 (the default)
leaves them as Redux made them, 1 silences them (zeros), 0 doubles them. That is ComfyUI's
"multiply" strength on a slider centred on Redux as trained. ComfyUI's "attn_bias" mode
(an additive log(strength) on the Redux columns of the attention) steers more evenly, since
Flux layer-normalises every token before attending and so absorbs part of a scale; but it
needs a joint-attention mask passed to every transformer call (`joint_attention_kwargs=
{"attention_mask": ...}`), which our Conditioning does not carry and the denoiser does not
pass, and on GPUs a float mask over the ~5,300 tokens of a 1024² render (512 + 729 +
4096) rules out PyTorch's flash-attention kernel at every step. Scaling keeps the tokens
a plain tensor that the rest of the engine already uses unchanged.
"""

from __future__ import annotations

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


def weighted_average(tokens: torch.Tensor, weights: tuple[float, ...]) -> torch.Tensor:
    """Σ_k w_k·tokens[k]: (K, N, D) -> (1, N, D)."""
    out = weights[0] * tokens[0]
    for weight, block in zip(weights[1:], tokens[1:], strict=True):
        out = out + weight * block
    return out.unsqueeze(0)


def concatenate(tokens: torch.Tensor, scales: tuple[float, ...]) -> torch.Tensor:
    """[s_1·tokens[1]; s_2·tokens[2]; ...]: (K, N, D) -> (1, K·N, D)."""
    blocks = [scale * block for scale, block in zip(scales, tokens, strict=True)]
    return torch.cat(blocks, dim=0).unsqueeze(0)


def blend(tokens: torch.Tensor, mode: str, scales: tuple[float, ...]) -> torch.Tensor:
    """Per-reference Redux tokens (K, N, D) as one conditioning block (1, N or K·N, D)."""
    if len(scales) != tokens.shape[0]:
        raise ValueError(f"{len(scales)} scales for {tokens.shape[0]} references")
    return weighted_average(tokens, scales) if mode == "average" else concatenate(tokens, scales)


def balance_factor(balance: float) -> float:
    """The prompt balance as the Redux tokens' factor: 2·(1 - b), 1 at b = 0.5."""
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"prompt balance {balance} is outside 0-1")
    return 2.0 * (1.0 - balance)


def apply_balance(tokens: torch.Tensor, balance: float) -> torch.Tensor:
    """Redux tokens weighted against the text prompt; unchanged at the neutral balance."""
    factor = balance_factor(balance)
    return tokens if factor == 1.0 else tokens * factor
