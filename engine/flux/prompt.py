"""Prompt encoding for Flux: CLIP-L pooled vector + T5 token embeddings."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from engine.models.memory import visiting

CLIP_MAX_TOKENS = 77


@dataclass(frozen=True)
class PromptEmbeddings:
    """T5 token embeddings (1, S, D) and the pooled CLIP-L vector (1, P).

    `token_bias` (S,), when set, is an additive attention bias on each token's column: every
    text and image query adds token_bias[j] to its score for token j, except the queries of
    the biased tokens themselves (those with a non-zero bias), which get none (ComfyUI's
    StyleModelApply "attn_bias", specs §5). The Redux stage sets it to 0 for the T5 tokens
    and log(scale) for its own; None (the default) means no attention mask at all.
    """

    tokens: torch.Tensor
    pooled: torch.Tensor
    token_bias: torch.Tensor | None = None
    regions: Any = None  # engine.regions.layout.RegionalLayout: the regional attention


def _token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, truncation=False)["input_ids"])


@torch.inference_mode()
def encode_prompt(
    bundle, prompt: str, t5_length: int | None = None
) -> tuple[PromptEmbeddings, list[str]]:
    """Encode one prompt; the notes say when an encoder truncated it. The text encoders must
    be on bundle.device (see text_encoders_on_device). `t5_length` pads / cuts T5 to another
    length than the model's (a region's prompt)."""
    device = bundle.device
    t5_length = t5_length or bundle.t5_max_length
    clip_ids = bundle.clip_tokenizer(
        prompt,
        padding="max_length",
        max_length=CLIP_MAX_TOKENS,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)
    pooled = bundle.clip(clip_ids, output_hidden_states=False).pooler_output
    t5_ids = bundle.t5_tokenizer(
        prompt,
        padding="max_length",
        max_length=t5_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)
    tokens = bundle.t5(t5_ids, output_hidden_states=False)[0]
    dtype = bundle.compute_dtype
    embeddings = PromptEmbeddings(tokens=tokens.to(dtype), pooled=pooled.to(dtype))
    return embeddings, _truncation_notes(bundle, prompt, t5_length)


def text_encoders_on_device(bundle) -> AbstractContextManager:
    """CLIP-L and T5 on the bundle's device for a block: under the budget memory plan they
    wait in CPU memory and visit the GPU only to encode."""
    return visiting([bundle.clip, bundle.t5], bundle.device)


def _truncation_notes(bundle, prompt: str, t5_length: int) -> list[str]:
    notes = []
    clip_len = _token_count(bundle.clip_tokenizer, prompt)
    if clip_len > CLIP_MAX_TOKENS:
        notes.append(
            f"The prompt is {clip_len} CLIP tokens; CLIP-L reads the first {CLIP_MAX_TOKENS} "
            f"(T5 reads up to {t5_length}). Put the key words first."
        )
    t5_len = _token_count(bundle.t5_tokenizer, prompt)
    if t5_len > t5_length:
        notes.append(
            f"The prompt is {t5_len} T5 tokens; T5 reads the first "
            f"{t5_length}, the rest is ignored."
        )
    return notes
