"""One layer of a LoRA file as a weight update, with ComfyUI's alpha rules (weight_adapter/).

- LoRA: ΔW = alpha / rank · up @ down (rank = down's rows; no alpha: scale 1);
- LoHa (LyCORIS): ΔW = alpha / rank · (w1a @ w1b) ⊙ (w2a @ w2b), rank = w1b's rows;
- LoKr (LyCORIS): ΔW = scale · w1 ⊗ w2, either factor given whole or as a @ b; the scale is
  alpha / rank only when a factor is decomposed (rank = that b's rows, w2's if both are);
- full ("diff", LyCORIS full / ComfyUI model diffs): ΔW = diff, and diff_b adds to the bias.

Convolution-only parts (hada_t1/t2, lokr_t2, lora_mid), DoRA's magnitude vectors and GLoRA
are not applied (Flux's layers are Linears and DoRA changes more than a delta): the layer is
reported with the reason instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LORA, LOHA, LOKR, FULL = "LoRA", "LoHa", "LoKr", "full"
# File suffix -> our name for the factor.
LORA_SUFFIXES = {
    "lora_down.weight": "down", "lora_up.weight": "up",
    "lora_A.weight": "down", "lora_B.weight": "up",
    "lora.down.weight": "down", "lora.up.weight": "up",
    "lora_linear_layer.down.weight": "down", "lora_linear_layer.up.weight": "up",
    "down.weight": "down", "up.weight": "up",
}  # fmt: skip
LOHA_SUFFIXES = {"hada_w1_a": "w1a", "hada_w1_b": "w1b", "hada_w2_a": "w2a", "hada_w2_b": "w2b"}
LOKR_SUFFIXES = {
    "lokr_w1": "w1", "lokr_w1_a": "w1a", "lokr_w1_b": "w1b",
    "lokr_w2": "w2", "lokr_w2_a": "w2a", "lokr_w2_b": "w2b",
}  # fmt: skip
FULL_SUFFIXES = {"diff": "diff", "diff_b": "diff_b"}
# Suffixes we recognise but do not apply, with the reason shown in the match report.
UNSUPPORTED = {
    "dora_scale": "DoRA",
    "lora_magnitude_vector": "DoRA",
    "lora_mid.weight": "LoCon convolution",
    "hada_t1": "LoHa convolution",
    "hada_t2": "LoHa convolution",
    "lokr_t2": "LoKr convolution",
    "w_norm": "norm diff",
    "b_norm": "norm diff",
    "a1.weight": "GLoRA",
    "a2.weight": "GLoRA",
    "b1.weight": "GLoRA",
    "b2.weight": "GLoRA",
    "lora_B.bias": "LoRA bias",
}
ALL_SUFFIXES = (
    *LORA_SUFFIXES, *LOHA_SUFFIXES, *LOKR_SUFFIXES, *FULL_SUFFIXES, *UNSUPPORTED, "alpha"
)  # fmt: skip


class NotApplicable(ValueError):
    """A layer we recognise but do not apply; the message is the family's reason."""


@dataclass(frozen=True)
class Update:
    """A layer's weight update: its kind, factors (float32) and the alpha scale."""

    kind: str
    factors: dict[str, torch.Tensor]
    scale: float = 1.0

    @property
    def shape(self) -> tuple[int, int]:
        """(out rows, in features) of ΔW, without computing it."""
        f = self.factors
        if self.kind == LORA:
            return f["up"].shape[0], f["down"].shape[1]
        if self.kind == LOHA:
            return f["w1a"].shape[0], f["w1b"].shape[1]
        if self.kind == LOKR:
            w1, w2 = _lokr_shape(f, "1"), _lokr_shape(f, "2")
            return w1[0] * w2[0], w1[1] * w2[1]
        return tuple(f["diff"].shape)

    def delta(self) -> torch.Tensor:
        """ΔW (out, in) in float32, alpha included."""
        f = self.factors
        if self.kind == LORA:
            return self.scale * (f["up"] @ f["down"])
        if self.kind == LOHA:
            return self.scale * ((f["w1a"] @ f["w1b"]) * (f["w2a"] @ f["w2b"]))
        if self.kind == LOKR:
            return self.scale * torch.kron(_lokr_factor(f, "1"), _lokr_factor(f, "2"))
        return f["diff"]

    def bias_delta(self) -> torch.Tensor | None:
        return self.factors.get("diff_b")

    def to(self, device: torch.device) -> Update:
        moved = {name: t.to(device) for name, t in self.factors.items()}
        return Update(self.kind, moved, self.scale)


def _lokr_factor(f: dict[str, torch.Tensor], i: str) -> torch.Tensor:
    whole = f.get(f"w{i}")
    return whole if whole is not None else f[f"w{i}a"] @ f[f"w{i}b"]


def _lokr_shape(f: dict[str, torch.Tensor], i: str) -> tuple[int, int]:
    whole = f.get(f"w{i}")
    if whole is not None:
        return tuple(whole.shape)
    return f[f"w{i}a"].shape[0], f[f"w{i}b"].shape[1]


def parse_update(tensors: dict[str, torch.Tensor], default_scale=None) -> Update:
    """A layer's tensors by suffix -> its Update; NotApplicable names what is not applied.

    `default_scale(rank)` gives a LoRA's scale when the file has no alpha for it (diffusers
    keeps lora_alpha in its metadata); None means scale 1.
    """
    if reasons := sorted({UNSUPPORTED[s] for s in tensors if s in UNSUPPORTED}):
        raise NotApplicable(", ".join(reasons))
    alpha = tensors.get("alpha")
    alpha = float(alpha) if alpha is not None else None
    factors = {k: v.float() for k, v in tensors.items() if k != "alpha"}
    if any(s in LOHA_SUFFIXES for s in factors):
        return _loha(_renamed(factors, LOHA_SUFFIXES), alpha)
    if any(s in LOKR_SUFFIXES for s in factors):
        return _lokr(_renamed(factors, LOKR_SUFFIXES), alpha)
    if any(s in FULL_SUFFIXES for s in factors):
        return _full(_renamed(factors, FULL_SUFFIXES))
    return _lora(_renamed(factors, LORA_SUFFIXES), alpha, default_scale)


def _renamed(factors: dict[str, torch.Tensor], names: dict[str, str]) -> dict:
    if unknown := sorted(set(factors) - set(names)):
        raise NotApplicable(f"mixed tensors {', '.join(unknown)}")
    return {names[k]: v for k, v in factors.items()}


def _need(f: dict, names: tuple[str, ...], kind: str) -> None:
    if missing := [n for n in names if n not in f]:
        raise NotApplicable(f"{kind} without {', '.join(missing)}")
    if any(f[n].ndim != 2 for n in names):
        raise NotApplicable(f"{kind} convolution")


def _lora(f: dict, alpha: float | None, default_scale) -> Update:
    _need(f, ("down", "up"), LORA)
    rank = f["down"].shape[0]
    if alpha is not None:
        return Update(LORA, f, alpha / rank)
    return Update(LORA, f, default_scale(rank) if default_scale else 1.0)


def _loha(f: dict, alpha: float | None) -> Update:
    _need(f, ("w1a", "w1b", "w2a", "w2b"), LOHA)
    return Update(LOHA, f, alpha / f["w1b"].shape[0] if alpha is not None else 1.0)


def _lokr(f: dict, alpha: float | None) -> Update:
    rank = None
    for i in ("1", "2"):
        if f"w{i}" not in f:
            _need(f, (f"w{i}a", f"w{i}b"), LOKR)
            rank = f[f"w{i}b"].shape[0]
        else:
            _need(f, (f"w{i}",), LOKR)
    scale = alpha / rank if alpha is not None and rank is not None else 1.0
    return Update(LOKR, f, scale)


def _full(f: dict) -> Update:
    if "diff" not in f:
        raise NotApplicable("bias diff without a weight diff")
    if f["diff"].ndim != 2:
        raise NotApplicable("full convolution")
    return Update(FULL, f)
