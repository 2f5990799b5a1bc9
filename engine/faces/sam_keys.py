"""SAM checkpoints in the original segment-anything key layout <-> transformers' SamModel:
the key rules (after transformers' own convert_sam_to_hf.py, written as a table here) and
the architecture read from tensor shapes (vit_b / vit_l / vit_h or a custom size)."""

from __future__ import annotations

import functools
import re
from typing import Any

# (embed dim, depth, global attention blocks) of the official image encoders.
VARIANTS = {
    "vit_b": (768, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, (5, 11, 17, 23)),
    "vit_h": (1280, 32, (7, 15, 23, 31)),
}
DECODER_HEADS = 8

# Original key prefix -> transformers key prefix; "#" is a block number. Each applies to a
# whole dotted prefix of a key, whatever follows it (".weight", ".qkv.bias", ...).
_TRANSFORMER = "mask_decoder.transformer."
RENAMED: tuple[tuple[str, str], ...] = (
    ("image_encoder.pos_embed", "vision_encoder.pos_embed"),
    ("image_encoder.patch_embed.proj", "vision_encoder.patch_embed.projection"),
    *((f"image_encoder.blocks.#.{n}", f"vision_encoder.layers.#.{n}") for n in ("attn", "mlp")),
    *(
        (f"image_encoder.blocks.#.norm{i}", f"vision_encoder.layers.#.layer_norm{i}")
        for i in (1, 2)
    ),
    *(
        (f"image_encoder.neck.{i}", f"vision_encoder.neck.{new}")
        for i, new in enumerate(("conv1", "layer_norm1", "conv2", "layer_norm2"))
    ),
    (
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "prompt_encoder.shared_embedding.positional_embedding",
    ),
    ("prompt_encoder.point_embeddings.#", "prompt_encoder.point_embed.#"),
    *(
        (f"prompt_encoder.mask_downscaling.{i}", f"prompt_encoder.mask_embed.{new}")
        for i, new in ((0, "conv1"), (1, "layer_norm1"), (3, "conv2"), (4, "layer_norm2"))
        + ((6, "conv3"),)
    ),
    *(
        (f"{_TRANSFORMER}layers.#.norm{i}", f"{_TRANSFORMER}layers.#.layer_norm{i}")
        for i in range(1, 5)
    ),
    (f"{_TRANSFORMER}norm_final_attn", f"{_TRANSFORMER}layer_norm_final_attn"),
    ("mask_decoder.output_upscaling.0", "mask_decoder.upscale_conv1"),
    ("mask_decoder.output_upscaling.1", "mask_decoder.upscale_layer_norm"),
    ("mask_decoder.output_upscaling.3", "mask_decoder.upscale_conv2"),
    # segment-anything's 3-layer MLPs are layers.0-2; transformers' are proj_in, layers.0, proj_out.
    *(
        (f"mask_decoder.{mlp}.layers.{i}", f"mask_decoder.{mlp}.{new}")
        for mlp in ("output_hypernetworks_mlps.#", "iou_prediction_head")
        for i, new in enumerate(("proj_in", "layers.0", "proj_out"))
    ),
)
# Modules both layouts name alike (listed so that any other key is refused).
KEPT = (
    "prompt_encoder.not_a_point_embed",
    "prompt_encoder.no_mask_embed",
    "mask_decoder.iou_token",
    "mask_decoder.mask_tokens",
    f"{_TRANSFORMER}final_attn_token_to_image",
    *(
        f"{_TRANSFORMER}layers.#.{name}"
        for name in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token", "mlp")
    ),
)
KEY_RULES = RENAMED + tuple((name, name) for name in KEPT)
# transformers keeps a tied copy of the prompt encoder's positional matrix under this name.
TIED_KEY = "shared_image_embedding.positional_embedding"
TIED_TO = "prompt_encoder.shared_embedding.positional_embedding"
# Buffers that some segment-anything versions saved; the processor normalises instead.
DROPPED_KEYS = ("pixel_mean", "pixel_std")


@functools.cache
def _compile(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace("\\#", r"(\d+)") + r"(\..+)?$")


def _rename(key: str, source: int) -> str | None:
    """`key` under the rule table read from side `source` (0 original, 1 transformers)."""
    for rule in KEY_RULES:
        match = _compile(rule[source]).match(key)
        if match:
            *numbers, rest = match.groups()
            target = rule[1 - source]
            for number in numbers:
                target = target.replace("#", number, 1)
            return target + (rest or "")
    return None


def to_transformers_key(key: str) -> str | None:
    """A segment-anything key's name in transformers' SamModel; None for a key SAM lacks."""
    return _rename(key, 0)


def to_original_key(key: str) -> str | None:
    """A transformers SamModel key's name in segment-anything; None for the tied copy."""
    return None if key == TIED_KEY else _rename(key, 1)


def to_transformers_state_dict(original: dict[str, Any]) -> dict[str, Any]:
    """The state dict renamed for SamModel; raises ValueError naming the unknown keys."""
    renamed, unknown = {}, []
    for key, value in original.items():
        if key in DROPPED_KEYS:
            continue
        new_key = to_transformers_key(key)
        if new_key is None:
            unknown.append(key)
        else:
            renamed[new_key] = value
    if unknown:
        raise ValueError(f"keys a SAM checkpoint does not have: {some_keys(unknown)}")
    if TIED_TO in renamed:
        renamed[TIED_KEY] = renamed[TIED_TO]
    return renamed


def to_original_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A SamModel state dict in segment-anything's layout (the tied copy left out)."""
    return {to_original_key(key): value for key, value in state_dict.items() if key != TIED_KEY}


def sam_config_from_shapes(weights: dict[str, Any]) -> Any:
    """The SamConfig whose model has exactly these (original-layout) tensors' shapes;
    KeyError / ValueError when the state dict is not a SAM."""

    def dim(key: str, axis: int) -> int:
        return int(weights[key].shape[axis])

    blocks, block0 = "image_encoder.blocks.", "image_encoder.blocks.0."
    hidden, _, _, patch = (int(n) for n in weights["image_encoder.patch_embed.proj.weight"].shape)
    grid, depth = dim("image_encoder.pos_embed", 1), _count(weights, blocks)
    # A global block's relative positions span the grid (2·grid - 1), a windowed one its window.
    spans = [dim(f"{blocks}{i}.attn.rel_pos_h", 0) for i in range(depth)]
    global_blocks = [i for i, span in enumerate(spans) if span == 2 * grid - 1]
    windows = {(span + 1) // 2 for span in spans if span != 2 * grid - 1}
    if len(windows) > 1:
        raise ValueError(f"its windowed blocks have different windows {sorted(windows)}")
    width = dim("mask_decoder.iou_token.weight", 1)
    q_proj = "mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight"
    return sam_config(
        vision={
            "hidden_size": hidden,
            "output_channels": dim("image_encoder.neck.0.weight", 0),
            "num_hidden_layers": depth,
            "num_attention_heads": hidden // dim(f"{block0}attn.rel_pos_h", 1),
            "image_size": grid * patch,
            "patch_size": patch,
            "window_size": windows.pop() if windows else grid,
            "global_attn_indexes": global_blocks,
            "num_pos_feats": dim("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", 1),
            "mlp_dim": dim(f"{block0}mlp.lin1.weight", 0),
            "qkv_bias": f"{block0}attn.qkv.bias" in weights,
        },
        prompt={
            "hidden_size": dim("prompt_encoder.no_mask_embed.weight", 1),
            "mask_input_channels": dim("prompt_encoder.mask_downscaling.3.weight", 0),
        },
        decoder={
            "hidden_size": width,
            "mlp_dim": dim("mask_decoder.transformer.layers.0.mlp.lin1.weight", 0),
            "num_hidden_layers": _count(weights, "mask_decoder.transformer.layers."),
            "attention_downsample_rate": width // dim(q_proj, 0),
            "num_multimask_outputs": dim("mask_decoder.mask_tokens.weight", 0) - 1,
            "iou_head_hidden_dim": dim("mask_decoder.iou_prediction_head.layers.0.weight", 0),
            "iou_head_depth": _count(weights, "mask_decoder.iou_prediction_head.layers."),
        },
    )


def sam_config(vision: dict[str, Any], prompt: dict[str, Any], decoder: dict[str, Any]) -> Any:
    """SamConfig from its three parts; the prompt encoder reads images as the vision encoder
    does, and the mask decoder has SAM's 8 heads (a number no tensor's shape records)."""
    from transformers import SamConfig

    size = {key: vision[key] for key in ("image_size", "patch_size")}
    return SamConfig(
        vision_config=vision,
        prompt_encoder_config={**prompt, **size},
        mask_decoder_config={"num_attention_heads": DECODER_HEADS, **decoder},
    )


def variant_name(config: Any) -> str:
    """'vit_b', 'vit_l' or 'vit_h' for the official image encoders, else a description."""
    vision = config.vision_config
    found = (vision.hidden_size, vision.num_hidden_layers, tuple(vision.global_attn_indexes))
    for name, known in VARIANTS.items():
        if found == known:
            return name
    return f"custom ({vision.hidden_size} wide, {vision.num_hidden_layers} blocks)"


def _count(weights: dict[str, Any], prefix: str) -> int:
    """How many numbered children `prefix` has (0, 1, ... with no gaps)."""
    numbers = {
        int(key[len(prefix) :].split(".", 1)[0]) for key in weights if key.startswith(prefix)
    }
    if numbers != set(range(len(numbers))) or not numbers:
        raise ValueError(f"its {prefix}N blocks are {sorted(numbers) or 'missing'}")
    return len(numbers)


def some_keys(keys: list[str]) -> str:
    """The first few key names, for a message."""
    shown = ", ".join(sorted(keys)[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
