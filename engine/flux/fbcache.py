"""First-block cache for the Flux transformer (specs/algorithms.md §3).

Per call: embed the inputs and run the first double block only, then compare its image
residual r = h1 - h0 with the reference r_ref from the last full compute (ParaAttention and
diffusers; Comfy-WaveSpeed compares the block's output instead):

    rel = mean|r - r_ref| / mean|r_ref|

A hit (r_ref exists, rel < threshold, sigma_end <= sigma <= sigma_start with the window from
percent_to_sigma(end/start, mu), and fewer than max_consecutive_hits hits in a row; -1 means
unlimited, 0 never hits) skips every other block and adds the image residual R = h_final - h1
of the last full compute. A miss runs all blocks and refreshes r_ref and R, so drift is always
measured against the last full compute. Only the image stream is cached: norm_out/proj_out
read nothing else (the text stream is dropped after the last block), as in Comfy-WaveSpeed.

We do not use diffusers' FirstBlockCacheConfig hook (diffusers/hooks/first_block_cache.py):
its config has only `threshold`, with no sigma window and no consecutive-hit limit, and its
decision lives in FBCSharedBlockState inside the block hooks, which counts nothing we could
report. It also needs a `cache_context` per stream around every call, and it lives in the
shared transformer's blocks, where a run with the cache off would still pass through it.

Streams. True CFG calls the model twice per step (cond, then uncond) through one wrapper; each
conditioning keeps its own state, so the two references never mix. The stream is named by the
caller (`stream=`) or, by default, by the identity of the text tensor's storage (plus its
offset, shape and stride): FluxDenoiser hands the same embeddings to every step, so each
prompt is a stable stream, and a weak reference to the storage detects an address reused by
a new tensor. A caller that builds a new text tensor for every call gets only misses.

Resets: all state when sigma increases (a new run) and on reset(); a stream's state when its
shape, dtype or device changes.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import FluxTransformer2DModel
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from engine.flux.sigma_modifiers import percent_to_sigma
from engine.recipe import FirstBlockCacheParams

# Each stream holds two image-sized tensors (about 50 MB at 1024² in bf16); cond, uncond and
# a spare are all a run needs, so older streams are dropped beyond this.
MAX_STREAMS = 4


@dataclass
class StreamState:
    """What one conditioning stream remembers from its last full compute."""

    signature: tuple[Any, ...]
    owner: weakref.ref | None  # the text storage that names the stream; None for named ones
    first_residual: torch.Tensor | None = None  # r_ref = h1 - h0 of the last full compute
    tail_residual: torch.Tensor | None = None  # R = h_final - h1 of the last full compute
    consecutive_hits: int = 0


@dataclass
class Embedded:
    """The transformer's inputs after its embedders: what every block receives."""

    hidden: torch.Tensor
    context: torch.Tensor
    temb: torch.Tensor
    rotary: tuple[torch.Tensor, torch.Tensor]
    attention_kwargs: dict[str, Any] | None = None  # joint_attention_kwargs, for every block


class FirstBlockCache:
    """Calls like FluxTransformer2DModel and skips all but the first block when it can."""

    def __init__(
        self, transformer: FluxTransformer2DModel, params: FirstBlockCacheParams, mu: float
    ) -> None:
        if len(transformer.transformer_blocks) == 0:
            raise ValueError("the first-block cache needs at least one double block")
        self.transformer = transformer
        self.params = params
        self.sigma_start = percent_to_sigma(params.start, mu)
        self.sigma_end = percent_to_sigma(params.end, mu)
        self.hits = 0
        self.misses = 0
        self._states: dict[tuple[Any, ...], StreamState] = {}
        self._last_sigma: float | None = None

    @property
    def config(self) -> Any:
        """The transformer's config (FluxDenoiser reads guidance_embeds from it)."""
        return self.transformer.config

    @property
    def active(self) -> bool:
        """False when the wrapper is just the plain transformer call."""
        return self.params.enabled and self.params.threshold > 0

    def reset(self) -> None:
        """Forget every stream's references and zero the hit and miss counts."""
        self._states.clear()
        self._last_sigma = None
        self.hits = self.misses = 0

    def __call__(
        self,
        *,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        guidance: torch.Tensor | None = None,
        pooled_projections: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        txt_ids: torch.Tensor,
        img_ids: torch.Tensor,
        joint_attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = False,
        stream: str | None = None,
    ) -> tuple[torch.Tensor] | Transformer2DModelOutput:
        """The transformer's output for these inputs, from the cache on a hit."""
        inputs = {
            "hidden_states": hidden_states,
            "timestep": timestep,
            "guidance": guidance,
            "pooled_projections": pooled_projections,
            "encoder_hidden_states": encoder_hidden_states,
            "txt_ids": txt_ids,
            "img_ids": img_ids,
        }
        if not self.active:
            # The transformer itself, so "off" is bit-identical to no wrapper at all.
            self.misses += 1
            return self.transformer(
                **inputs, joint_attention_kwargs=joint_attention_kwargs, return_dict=return_dict
            )
        sigma = float(timestep.max())
        if self._last_sigma is not None and sigma > self._last_sigma:
            self._states.clear()  # sigma went up: a new run
        self._last_sigma = sigma
        state = self._state_for(stream, hidden_states, encoder_hidden_states)
        embedded = self._embed(**inputs)
        embedded.attention_kwargs = joint_attention_kwargs  # e.g. the Redux balance's mask
        output = self._forward(state, sigma, embedded)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)

    def _state_for(
        self, stream: str | None, hidden: torch.Tensor, text: torch.Tensor
    ) -> StreamState:
        signature = (tuple(hidden.shape), hidden.dtype, hidden.device, tuple(text.shape))
        owner: weakref.ref | None = None
        if stream is not None:
            key: tuple[Any, ...] = ("named", stream)
        else:
            # The Python storage object lives exactly as long as the storage, so a dead weak
            # reference means this address now belongs to another tensor.
            storage = text.untyped_storage()
            owner = weakref.ref(storage)
            key = ("tensor", id(storage), text.storage_offset(), tuple(text.shape), text.stride())
        state = self._states.get(key)
        stale = state is not None and state.owner is not None and state.owner() is None
        if state is None or stale or state.signature != signature:
            state = StreamState(signature=signature, owner=owner)
        self._states.pop(key, None)
        self._states[key] = state  # most recently used last
        self._drop_old_streams()
        return state

    def _drop_old_streams(self) -> None:
        dead = [k for k, s in self._states.items() if s.owner is not None and s.owner() is None]
        for key in dead:
            del self._states[key]
        while len(self._states) > MAX_STREAMS:
            del self._states[next(iter(self._states))]

    def _embed(
        self,
        *,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        guidance: torch.Tensor | None,
        pooled_projections: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        txt_ids: torch.Tensor,
        img_ids: torch.Tensor,
    ) -> Embedded:
        # The same modules, inputs and order as FluxTransformer2DModel.forward before its first
        # block (diffusers 0.42), so a full compute here equals the transformer call bit for bit.
        t = self.transformer
        hidden = t.x_embedder(hidden_states)
        timestep = timestep.to(hidden.dtype) * 1000
        if guidance is None:
            temb = t.time_text_embed(timestep, pooled_projections)
        else:
            temb = t.time_text_embed(timestep, guidance.to(hidden.dtype) * 1000, pooled_projections)
        context = t.context_embedder(encoder_hidden_states)
        txt_ids = txt_ids[0] if txt_ids.ndim == 3 else txt_ids
        img_ids = img_ids[0] if img_ids.ndim == 3 else img_ids
        rotary = t.pos_embed(torch.cat((txt_ids, img_ids), dim=0))
        return Embedded(hidden=hidden, context=context, temb=temb, rotary=rotary)

    def _forward(self, state: StreamState, sigma: float, emb: Embedded) -> torch.Tensor:
        t = self.transformer
        context, hidden = _run_block(t.transformer_blocks[0], emb, emb.context, emb.hidden)
        residual = hidden - emb.hidden
        if self._can_hit(state, residual, sigma):
            self.hits += 1
            state.consecutive_hits += 1
            hidden = hidden + state.tail_residual
        else:
            self.misses += 1
            state.consecutive_hits = 0
            first = hidden
            for block in (*t.transformer_blocks[1:], *t.single_transformer_blocks):
                context, hidden = _run_block(block, emb, context, hidden)
            state.first_residual = residual.detach()
            state.tail_residual = (hidden - first).detach()
        return t.proj_out(t.norm_out(hidden, emb.temb))

    def _can_hit(self, state: StreamState, residual: torch.Tensor, sigma: float) -> bool:
        # The cheap tests first: the relative difference costs a device sync.
        limit = self.params.max_consecutive_hits
        if state.first_residual is None or state.tail_residual is None:
            return False
        if limit >= 0 and state.consecutive_hits >= limit:
            return False
        if not self.sigma_end <= sigma <= self.sigma_start:
            return False
        return relative_difference(residual, state.first_residual) < self.params.threshold


def relative_difference(residual: torch.Tensor, reference: torch.Tensor) -> float:
    """mean|r - r_ref| / mean|r_ref|, accumulated in fp32 (inf for an all-zero reference)."""
    diff = (residual - reference).abs().mean(dtype=torch.float32)
    scale = reference.abs().mean(dtype=torch.float32)
    diff_value, scale_value = torch.stack((diff, scale)).tolist()  # one device sync
    return diff_value / scale_value if scale_value > 0 else float("inf")


def _run_block(
    block: torch.nn.Module, emb: Embedded, context: torch.Tensor, hidden: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    # diffusers 0.42: double and single blocks share this signature and both return
    # (encoder_hidden_states, hidden_states); single blocks concatenate and split internally.
    return block(
        hidden_states=hidden,
        encoder_hidden_states=context,
        temb=emb.temb,
        image_rotary_emb=emb.rotary,
        joint_attention_kwargs=emb.attention_kwargs,
    )
