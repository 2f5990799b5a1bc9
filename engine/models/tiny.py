"""Tiny random Flux components built in code from fixed seeds (tests and the demo mode).

They keep every interface of the real models (64-channel packed latents, 16 latent
channels, CLIP pooled vector, T5 tokens) at widths of 8 to 32, so a 4-step render takes
milliseconds on a CPU. Two builds are bit-identical and never touch torch's global RNG.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from engine.models.tiny_text import (
    build_tiny_clip_tokenizer,
    build_tiny_t5_tokenizer,
    clip_vocab_and_merges,
    t5_pieces,
)

# The T5 sequence is shorter than real Flux-dev's 512: text tokens join the image tokens in
# every attention, and at tiny sizes 512 of them would dominate the demo's cost.
TINY_T5_MAX_LENGTH = 64
TINY_SEEDS = {"transformer": 1001, "vae": 1002, "clip": 1003, "t5": 1004, "fill": 1005}

# sum(axes_dims_rope) = attention_head_dim; in_channels = 4 x latent channels;
# joint_attention_dim = T5 d_model; pooled_projection_dim = CLIP hidden size.
TINY_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 32,
    "guidance_embeds": True,
    "axes_dims_rope": [4, 4, 8],
}
# FLUX.1 Fill's input: 64 noisy + 64 masked-image latent + 256 mask values per token.
TINY_FILL = {**TINY_TRANSFORMER, "in_channels": 384, "out_channels": 64}
TINY_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 8, 8, 8],
    "layers_per_block": 1,
    "latent_channels": 16,
    "norm_num_groups": 4,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
TINY_T5_BASE: dict[str, Any] = {
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 4,
    "feed_forward_proj": "gated-gelu",
    "dense_act_fn": "gelu_new",
    "is_encoder_decoder": False,
    "use_cache": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}


def tiny_clip_config() -> dict[str, Any]:
    """CLIP config whose special ids match the tiny tokenizer (pooling finds the eos id)."""
    vocab, _ = clip_vocab_and_merges()
    eos = vocab["<|endoftext|>"]
    return {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "projection_dim": 32,
        "hidden_act": "quick_gelu",
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": eos,
        "pad_token_id": eos,
    }


def tiny_t5_config() -> dict[str, Any]:
    """T5 encoder config sized to the tiny T5 vocabulary."""
    return {**TINY_T5_BASE, "vocab_size": len(t5_pieces())}


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block under a fixed CPU seed and restore the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_tiny_transformer() -> FluxTransformer2DModel:
    with seeded(TINY_SEEDS["transformer"]):
        return FluxTransformer2DModel(**TINY_TRANSFORMER).eval()


def build_tiny_fill() -> FluxTransformer2DModel:
    with seeded(TINY_SEEDS["fill"]):
        return FluxTransformer2DModel(**TINY_FILL).eval()


def build_tiny_vae() -> AutoencoderKL:
    with seeded(TINY_SEEDS["vae"]):
        return AutoencoderKL(**TINY_VAE).eval()


def build_tiny_clip() -> CLIPTextModel:
    with seeded(TINY_SEEDS["clip"]):
        return CLIPTextModel(CLIPTextConfig(**tiny_clip_config())).eval()


def build_tiny_t5() -> T5EncoderModel:
    with seeded(TINY_SEEDS["t5"]):
        return T5EncoderModel(T5Config(**tiny_t5_config())).eval()


def build_tiny_components() -> dict[str, Any]:
    """All six tiny components, keyed like a diffusers FluxPipeline's."""
    return {
        "transformer": build_tiny_transformer(),
        "vae": build_tiny_vae(),
        "text_encoder": build_tiny_clip(),
        "tokenizer": build_tiny_clip_tokenizer(),
        "text_encoder_2": build_tiny_t5(),
        "tokenizer_2": build_tiny_t5_tokenizer(),
    }
