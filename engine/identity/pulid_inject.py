"""Attaching PuLID's cross-attention modules to a diffusers FluxTransformer2DModel.

Forward hooks on the blocks, not an edited or patched transformer: after double block 0, 2,
4, ... and single block 0, 4, 8, ... (pulid_networks.ca_placements), the hook adds
`weight · ca(id_tokens, image_tokens)` to the image tokens, as PuLID's Flux loop does. In
diffusers 0.42 both block kinds return `(encoder_hidden_states, hidden_states)` with the
text and image tokens already apart (a single block joins them inside and splits them before
returning), so the hook touches only the second element: for single blocks that is PuLID's
"image part of the joint sequence". With no ID tokens, weight 0 or outside the step window
the hook returns nothing and the block's output passes through untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from engine.errors import ModelNotFoundError
from engine.identity.pulid_networks import (
    DOUBLE,
    CaPlacement,
    PulidModules,
    ca_placements,
)

StepGate = Callable[[], bool]


@dataclass(frozen=True)
class StepWindow:
    """The part of the sampling where the identity acts, as fractions: 0 is the first step,
    1 the end. Bounds are inclusive (as ComfyUI's sigma_start >= sigma >= sigma_end)."""

    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ValueError(f"need 0 <= start <= end <= 1, got {self.start}, {self.end}")

    def contains(self, progress: float) -> bool:
        return self.start <= progress <= self.end


class PulidHandle:
    """The hooks of one attachment: what identity to add, how strongly, and when.

    The caller sets the ID tokens and weight with `set`, and each step either reports its
    place in the sampling with `set_progress` (checked against the `StepWindow`) or installs
    its own gate with `set_gate`. `remove()` takes every hook off again.
    """

    def __init__(self, ca: nn.ModuleList, placements: tuple[CaPlacement, ...]) -> None:
        self.ca = ca
        self.placements = placements
        self.id_tokens: torch.Tensor | None = None
        self.weight = 0.0
        self.window = StepWindow()
        self.progress = 0.0
        self.gate: StepGate | None = None
        self._hooks: list[RemovableHandle] = []

    def set(self, id_tokens: torch.Tensor | None, weight: float = 1.0) -> None:
        """The ID tokens [B or 1, queries, kv_dim] to add (None: none) and their weight."""
        self.id_tokens = id_tokens
        self.weight = float(weight)

    def set_window(self, start: float, end: float) -> None:
        self.window = StepWindow(start, end)

    def set_progress(self, progress: float) -> None:
        """Where the next model call sits in the sampling: step index / number of steps."""
        self.progress = float(progress)

    def set_gate(self, gate: StepGate | None) -> None:
        """A callable that says whether to act now; it replaces the window (None: window)."""
        self.gate = gate

    @property
    def active(self) -> bool:
        """Whether the hooks change anything on the next call."""
        if self.id_tokens is None or self.weight == 0.0:
            return False
        return self.gate() if self.gate is not None else self.window.contains(self.progress)

    def remove(self) -> None:
        """Take every hook off; the transformer then computes exactly as before."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def add_to_image(self, index: int, image: torch.Tensor) -> torch.Tensor:
        """image + weight · ca[index](id_tokens, image), computed in the CA's dtype."""
        ca = self.ca[index]
        compute = next(ca.parameters()).dtype
        id_tokens = _batched(self.id_tokens, image.shape[0]).to(image.device, compute)
        delta = ca(id_tokens, image.to(compute)).to(image.dtype)
        return image + self.weight * delta

    def hook_onto(self, block: nn.Module, index: int) -> None:
        """Run CA module `index` after `block` (see the module docstring)."""
        self._hooks.append(block.register_forward_hook(self._after_block(index)))

    def _after_block(self, index: int) -> Callable[..., Any]:
        def after_block(_module: nn.Module, _args: Any, output: Any) -> Any:
            if not self.active:
                return None  # the block's own output object, bit for bit
            text, image = output
            return text, self.add_to_image(index, image)

        return after_block


def attach_pulid(transformer: nn.Module, modules: PulidModules) -> PulidHandle:
    """Hook `modules.ca` onto `transformer`'s blocks; returns the handle (inactive until
    `set` gives it ID tokens and a weight). The CA count must fit the block counts."""
    double = transformer.transformer_blocks
    single = transformer.single_transformer_blocks
    config = modules.config
    placements = ca_placements(
        len(double), len(single), config.double_interval, config.single_interval
    )
    if len(placements) != len(modules.ca):
        raise ModelNotFoundError(
            f"The PuLID file has {len(modules.ca)} cross-attention modules, but this Flux "
            f"model ({len(double)} double and {len(single)} single blocks) needs "
            f"{len(placements)}. PuLID-FLUX fits FLUX.1-dev-sized models (19 + 38 blocks)."
        )
    handle = PulidHandle(modules.ca, placements)
    for index, place in enumerate(placements):
        block = (double if place.stream == DOUBLE else single)[place.block]
        handle.hook_onto(block, index)
    return handle


def _batched(id_tokens: torch.Tensor | None, batch: int) -> torch.Tensor:
    if id_tokens is None:
        raise ValueError("no ID tokens set")
    if id_tokens.shape[0] == batch:
        return id_tokens
    if id_tokens.shape[0] == 1:
        return id_tokens.expand(batch, *id_tokens.shape[1:])
    raise ValueError(f"ID tokens for {id_tokens.shape[0]} images, but the batch has {batch}")
