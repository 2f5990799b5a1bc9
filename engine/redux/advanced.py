"""ReduxAdvanced per reference (specs §5): fewer and weaker Redux tokens.

kaibioinfo's ReduxAdvanced views a reference's N Redux tokens as a √N × √N grid (27 × 27
for SigLIP so400m at 384 px), resizes the grid to round(√N / f) per side when the factor f
is above 1 (f = 3: 9 × 9 = 81 tokens), flattens it back and multiplies the tokens by
weight². Factor 1 and weight 1 leave the tokens untouched.

In "average" the two references are mixed token by token into one block, so both must have
the same grid and, since that block has one set of columns, the same attention bias;
`check_average` refuses anything else with what to do about it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.errors import InputError

# 384 px / 14 px patches: the grid side of the SigLIP the Redux MLP was trained on.
REDUX_GRID = 27


@dataclass(frozen=True)
class TokenShaping:
    """One reference's downsampling factor, function (a recipe id) and weight."""

    factor: float = 1.0
    function: str = "area"
    weight: float = 1.0


def grid_side(side: int, factor: float) -> int:
    """The grid side after downsampling: round(side / f) when f > 1, else `side`."""
    if factor <= 1:
        return side
    # At least one token: the tiny test models have a 4 × 4 grid, where f = 9 would give 0.
    return max(1, round(side / factor))


def downsample(tokens: torch.Tensor, factor: float, function: str) -> torch.Tensor:
    """(N, D) tokens as a √N × √N grid, resized to grid_side(√N, f) per side: (M, D)."""
    if factor <= 1:
        return tokens
    count, width = tokens.shape
    side = math.isqrt(count)
    if side * side != count:
        raise ValueError(f"{count} Redux tokens do not form a square grid")
    grid = tokens.view(1, side, side, width).permute(0, 3, 1, 2)  # (1, D, rows, columns)
    target = grid_side(side, factor)
    mode = function.replace("_", "-")  # the recipe's "nearest_exact" is torch's "nearest-exact"
    resized = F.interpolate(grid, size=(target, target), mode=mode)
    return resized.permute(0, 2, 3, 1).reshape(target * target, width)


def shape_tokens(tokens: torch.Tensor, shaping: TokenShaping) -> torch.Tensor:
    """ReduxAdvanced on one reference's (N, D) tokens: downsample, then times weight²."""
    out = downsample(tokens, shaping.factor, shaping.function)
    if shaping.weight == 1:
        return out
    return out * (shaping.weight * shaping.weight)


def check_average(
    mode: str, shapings: tuple[TokenShaping, ...], biases: tuple[float, ...], side: int
) -> None:
    """Refuse an "average" of references whose grids (of `side`) or biases differ."""
    if mode != "average" or len(shapings) < 2:
        return
    sides = [grid_side(side, s.factor) for s in shapings]
    if len(set(sides)) > 1:
        grids = " and ".join(f"{n}×{n}" for n in sides)
        _refuse(f"token by token, but their downsampling factors give grids of {grids} tokens",
                "the same downsampling factor")  # fmt: skip
    if len(set(biases)) > 1:
        values = " and ".join(f"{b:g}" for b in biases)
        _refuse(f"into one block of tokens, which takes one attention bias, but theirs are "
                f"{values}", "the same attention bias")  # fmt: skip


def _refuse(problem: str, remedy: str) -> None:
    raise InputError(
        f"Redux 'Weighted average' mixes the two references {problem}. Give both references "
        f"{remedy}, or switch the blend mode to Concatenation."
    )
