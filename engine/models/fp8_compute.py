"""fp8 compute: the transformer's Linears as scaled fp8 matmuls on GPUs with fp8 tensor cores.

Storage-only fp8 (precision.py) keeps weights in fp8 and casts them to bf16 in every layer,
which saves memory but costs time. Here a Linear keeps its weight in float8_e4m3fn with one
float32 scale per output row, quantises its input per row on the fly (amax / 448), and
multiplies the two in fp8 with `torch._scaled_mm` (fp32 accumulation, bf16 out): on Hopper
and Ada the fp8 tensor cores run about twice the bf16 rate.

Weights read from fp8 files are used as stored: a plain fp8 file's values come back exactly
with scale 1, and an fp8_scaled file's (values x one scale per tensor, dequantised on load)
with the scale amax / 448 that ComfyUI's quantiser used, accepted only when the fp8 values
times it give back the loaded weight to its dtype's precision. Other weights get per-row
scales (which also recover files scaled per output row). Row counts are padded to a
multiple of 16 for the fp8 kernels; for the adaLN modulation Linears (one row per image)
that still reads each weight once, in fp8.

Why our own layer rather than torchao's Float8 configs: torchao is not in the studio's stack,
it would requantise an fp8 file's weights instead of using them, and peft wraps a plain
nn.Linear subclass (this one) without any extra dispatch, so LoRA adapters keep working on
top of it.
"""

from __future__ import annotations

import re

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
# The fp8 matmul kernels want every dimension a multiple of 16: weights must have them, row
# counts are padded.
ALIGN = 16
_TINY = 1e-12  # an all-zero row gets this amax, so its scale is never 0


def quantise_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, K) -> fp8 values and float32 scales (rows, 1) with x ≈ values * scales."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=_TINY)
    scale = amax / FP8_MAX
    values = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return values, scale


def quantise_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) -> fp8 values and float32 scales (N,): a stored fp8 grid is kept (see above)."""
    rows = weight.shape[0]
    amax = weight.abs().max().float().item()
    for scale in (1.0, amax / FP8_MAX):
        if scale > 0:
            values = (weight.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
            if _gives_back(values, scale, weight):
                return values, torch.full((rows,), scale, device=weight.device)
    values, scales = quantise_rows(weight)
    return values, scales.flatten()


def _gives_back(values: torch.Tensor, scale: float, weight: torch.Tensor) -> bool:
    """Whether values * scale is `weight` up to one rounding step of weight's dtype."""
    back = (values.float() * scale).to(weight.dtype)
    return torch.allclose(back, weight, rtol=torch.finfo(weight.dtype).eps, atol=0.0)


class Fp8Linear(torch.nn.Linear):
    """A Linear with an fp8 weight and per-row scales, computed as a scaled fp8 matmul."""

    def __init__(
        self,
        weight: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor | None,
        compute_dtype: torch.dtype,
    ) -> None:
        torch.nn.Module.__init__(self)  # nn.Linear's own __init__ would allocate a weight
        self.out_features, self.in_features = weight.shape
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)
        self.register_buffer("weight_scale", scale.reshape(1, -1).float())
        self.compute_dtype = compute_dtype

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, compute_dtype: torch.dtype) -> Fp8Linear:
        values, scale = quantise_weight(linear.weight.detach())
        bias = None if linear.bias is None else linear.bias.detach().to(compute_dtype)
        return cls(values, scale, bias, compute_dtype)

    def dequantised_weight(self) -> torch.Tensor:
        """The weight as the compute dtype sees it: fp8 values times their row scales."""
        scale = self.weight_scale.float().reshape(-1, 1)
        return (self.weight.float() * scale).to(self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        count = rows.shape[0]
        pad = -count % ALIGN
        if pad:
            rows = torch.nn.functional.pad(rows, (0, 0, 0, pad))
        values, scale = quantise_rows(rows)
        out = torch._scaled_mm(
            values.contiguous(),
            self.weight.t(),  # column-major, as _scaled_mm requires of its second operand
            scale_a=scale,
            scale_b=self.weight_scale.float(),
            out_dtype=self.compute_dtype,
        )
        if pad:
            out = out[:count]
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8 compute"


def convertible(name: str, module: torch.nn.Module, skip_patterns: tuple[str, ...]) -> bool:
    """A plain Linear with fp8-friendly dimensions whose name no skip pattern matches."""
    if type(module) is not torch.nn.Linear:  # not already converted, not a LoRA wrapper
        return False
    if module.in_features % ALIGN or module.out_features % ALIGN:
        return False
    return not any(re.search(pattern, name) for pattern in skip_patterns)


def apply_fp8_compute(
    model: torch.nn.Module, compute_dtype: torch.dtype, skip_patterns: tuple[str, ...]
) -> int:
    """Replace every convertible Linear of `model` by an Fp8Linear; returns how many.

    Linears inside peft LoRA wrappers (`...to_q.base_layer`) are converted too, so adapters
    loaded before or after keep adding their low-rank update to the fp8 result.
    """
    # Names only: holding the old modules would keep every bf16 weight alive to the end.
    names = [
        name for name, module in model.named_modules() if convertible(name, module, skip_patterns)
    ]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Fp8Linear.from_linear(getattr(parent, child), compute_dtype))
    return len(names)
