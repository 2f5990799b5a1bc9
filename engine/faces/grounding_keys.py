"""IDEA-Research's original GroundingDINO checkpoints (groundingdino_swint_ogc.pth,
groundingdino_swinb_cogcoor.pth) as transformers' GroundingDinoForObjectDetection: the file
read with torch's weights-only unpickler, the architecture read from the tensor shapes, and
the keys renamed (the mapping of transformers' convert_grounding_dino_to_hf.py, restated as a
two-way table for the module names of the installed transformers, fused q/k/v split)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from engine.errors import ModelNotFoundError
from engine.load_errors import first_line, refused_by_unpickler

SWIN = "model.backbone.conv_encoder.model."
BLOCK = "backbone.0.layers.#.blocks.#."
HF_BLOCK = f"{SWIN}swin.encoder.layers.#.blocks.#."
ENC, HF_ENC = "transformer.encoder.", "model.encoder.layers.#."
DEC, HF_DEC = "transformer.decoder.layers.#.", "model.decoder.layers.#."


def _pairs(table: str, old_prefix: str, new_prefix: str) -> tuple[tuple[str, str], ...]:
    """'old new, old new' -> ((old_prefix + old, new_prefix + new), ...)."""
    pairs = (pair.split() for pair in table.split(","))
    return tuple((old_prefix + old, new_prefix + new) for old, new in pairs)


# (original prefix, transformers prefix); "#" is a number. A rule renames a whole dotted
# prefix of a key, whatever follows it (".weight", ".bias", ".0.weight", ...).
RENAMED: tuple[tuple[str, str], ...] = (
    ("backbone.0.patch_embed.proj", f"{SWIN}swin.embeddings.patch_embeddings.projection"),
    ("backbone.0.patch_embed.norm", f"{SWIN}swin.embeddings.norm"),
    *_pairs(
        "norm1 layernorm_before, norm2 layernorm_after, attn.proj attention.o_proj, mlp mlp, "
        "attn.relative_position_bias_table "
        "attention.relative_position_bias.relative_position_bias_table",
        BLOCK,
        HF_BLOCK,
    ),
    ("backbone.0.layers.#.downsample", f"{SWIN}swin.encoder.layers.#.downsample"),
    # The original numbers its output norms by Swin stage from 0; transformers from 1.
    *((f"backbone.0.norm{i}", f"{SWIN}hidden_states_norms.stage{i + 1}") for i in range(4)),
    *_pairs(
        "bert.embeddings model.text_backbone.embeddings, bert.encoder model.text_backbone.encoder, "
        "feat_map model.text_projection, input_proj model.input_proj_vision, "
        "transformer.level_embed model.level_embed",
        "",
        "",
    ),
    *_pairs(
        "self_attn self_attn, norm1 self_attn_layer_norm, linear1 fc1, linear2 fc2, "
        "norm2 final_layer_norm",
        f"{ENC}layers.#.",
        f"{HF_ENC}deformable_layer.",
    ),
    *_pairs(
        "self_attn.out_proj self_attn.out_proj, linear1 fc1, linear2 fc2, "
        "norm1 layer_norm_before, norm2 layer_norm_after",
        f"{ENC}text_layers.#.",
        f"{HF_ENC}text_enhancer_layer.",
    ),
    *_pairs(
        "gamma_v vision_param, gamma_l text_param, layer_norm_v layer_norm_vision, "
        "layer_norm_l layer_norm_text, attn.v_proj attn.vision_proj, attn.l_proj attn.text_proj, "
        "attn.values_v_proj attn.values_vision_proj, attn.values_l_proj attn.values_text_proj, "
        "attn.out_v_proj attn.out_vision_proj, attn.out_l_proj attn.out_text_proj",
        f"{ENC}fusion_layers.#.",
        f"{HF_ENC}fusion_layer.",
    ),
    *_pairs(
        "cross_attn encoder_attn, norm1 encoder_attn_layer_norm, "
        "ca_text.out_proj encoder_attn_text.out_proj, catext_norm encoder_attn_text_layer_norm, "
        "self_attn.out_proj self_attn.out_proj, norm2 self_attn_layer_norm, linear1 fc1, "
        "linear2 fc2, norm3 final_layer_norm",
        DEC,
        HF_DEC,
    ),
    *_pairs(
        "decoder.norm model.decoder.layer_norm, "
        "decoder.ref_point_head model.decoder.reference_points_head, "
        "decoder.bbox_embed model.decoder.bbox_embed, tgt_embed model.query_position_embeddings, "
        "enc_output model.enc_output, enc_output_norm model.enc_output_norm, "
        "enc_out_bbox_embed model.encoder_output_bbox_embed",
        "transformer.",
        "",
    ),
    ("bbox_embed", "bbox_embed"),
)


# (original stem, transformers parts): the original stem + leaf holds query, key and value
# stacked along dim 0; transformers keeps them as part + leaf, one tensor each.
QKV = ("query.", "key.", "value.")
FUSED: tuple[tuple[str, tuple[str, ...]], ...] = (
    (f"{BLOCK}attn.qkv.", tuple(f"{HF_BLOCK}attention.{p}_proj." for p in "qkv")),
    (
        f"{ENC}text_layers.#.self_attn.in_proj_",
        tuple(f"{HF_ENC}text_enhancer_layer.self_attn.{p}" for p in QKV),
    ),
    (f"{DEC}self_attn.in_proj_", tuple(f"{HF_DEC}self_attn.{p}" for p in QKV)),
    (f"{DEC}ca_text.in_proj_", tuple(f"{HF_DEC}encoder_attn_text.{p}" for p in QKV)),
)
FUSED_LEAVES = ("weight", "bias")
# Original tensors with nothing to load: buffers transformers recomputes, BERT's pooler (the
# model reads the last hidden state) and label_enc, the label embedding of denoising training,
# which the released files carry (the original code loads them with strict=False).
DROPPED = re.compile(
    r".*\.relative_position_index$|bert\.embeddings\.(position_ids|token_type_ids)$"
    r"|bert\.pooler\.|label_enc\."
)
# transformers' Swin keeps a final norm that its backbone output never goes through.
UNUSED_NORM = f"{SWIN}swin.layernorm."
# Numbers no tensor shape records; both released configs use them.
ATTENTION_HEADS = 8
SAMPLING_POINTS = 4
BERT_HEAD_WIDTH = 64
ORIGINAL_FILES = ("groundingdino_swint_ogc.pth", "groundingdino_swinb_cogcoor.pth")
ORIGINAL_URL = "https://huggingface.co/ShilongLiu/GroundingDINO"
WHAT_TO_DO = f"Use {ORIGINAL_FILES[0]} or {ORIGINAL_FILES[1]} from {ORIGINAL_URL}, or remove it."
# Swin variants of the released checkpoints: embed dim -> (name, pretraining image size).
SWIN_VARIANTS = {96: ("Swin-T", 224), 128: ("Swin-B", 384)}


@functools.cache
def _pattern(template: str, whole: bool) -> re.Pattern[str]:
    tail = "$" if whole else r"(\..+)?$"
    return re.compile(re.escape(template).replace("\\#", r"(\d+)") + tail)


def _fill(template: str, numbers: list[str]) -> str:
    for number in numbers:
        template = template.replace("#", number, 1)
    return template


def _rename(key: str, source: int) -> str | None:
    """`key` under the RENAMED table read from side `source` (0 original, 1 transformers)."""
    for rule in RENAMED:
        match = _pattern(rule[source], False).match(key)
        if match:
            *numbers, rest = match.groups()
            return _fill(rule[1 - source], numbers) + (rest or "")
    return None


def _split_fused(key: str, value: Any) -> dict[str, Any] | None:
    """A fused q/k/v tensor as its three transformers tensors; None when `key` is not one."""
    for stem, parts in FUSED:
        for leaf in FUSED_LEAVES:
            match = _pattern(stem + leaf, True).match(key)
            if match:
                if value.shape[0] % 3:
                    raise ValueError(f"{key} has {value.shape[0]} rows, not 3 equal parts")
                names = [_fill(part, list(match.groups())) + leaf for part in parts]
                return dict(zip(names, value.chunk(3, dim=0), strict=True))
    return None


def _fused_part(key: str) -> tuple[str, int] | None:
    """(the original fused key, 0/1/2 for q/k/v) for a transformers q/k/v tensor, else None."""
    for stem, parts in FUSED:
        for leaf in FUSED_LEAVES:
            for index, part in enumerate(parts):
                match = _pattern(part + leaf, True).match(key)
                if match:
                    return _fill(stem, list(match.groups())) + leaf, index
    return None


def to_transformers_state_dict(original: dict[str, Any]) -> dict[str, Any]:
    """The original state dict under transformers' names (fused q/k/v split, buffers and
    the pooler dropped); raises ValueError naming the keys GroundingDINO does not have."""
    converted, unknown = {}, []
    for key, value in original.items():
        if DROPPED.match(key):
            continue
        new_key = _rename(key, 0)
        renamed = _split_fused(key, value) or ({new_key: value} if new_key else {})
        converted.update(renamed)
        unknown += [] if renamed else [key]
    if unknown:
        raise ValueError(f"tensors GroundingDINO does not have: {some_keys(unknown)}")
    return converted


def to_original_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A transformers state dict in the original layout, q/k/v fused again (the inverse of
    to_transformers_state_dict; the unused Swin norm left out)."""
    import torch

    original, fused = {}, {}
    for key, value in state_dict.items():
        part = _fused_part(key)
        if part is not None:
            fused.setdefault(part[0], [None] * 3)[part[1]] = value
        elif not key.startswith(UNUSED_NORM):
            original[_original_key(key)] = value
    return {**original, **{key: torch.cat(parts) for key, parts in fused.items()}}


def _original_key(key: str) -> str:
    if (name := _rename(key, 1)) is None:
        raise ValueError(f"{key} has no name in the original layout")
    return name


def original_name(key: str) -> str:
    """A transformers key's original name, for messages (a q/k/v part names its fused tensor)."""
    part = _fused_part(key)
    return part[0] if part else _rename(key, 1) or key


def unused_norm(config: Any) -> dict[str, Any]:
    """Identity values for the Swin final norm the original lacks (never used by the model)."""
    import torch

    swin = config.backbone_config
    width = swin.embed_dim * 2 ** (len(swin.depths) - 1)
    return {f"{UNUSED_NORM}weight": torch.ones(width), f"{UNUSED_NORM}bias": torch.zeros(width)}


def grounding_config_from_shapes(weights: dict[str, Any]) -> Any:
    """The GroundingDinoConfig whose model has exactly these original-layout tensors' shapes
    (box heads and the two-stage head unshared in the config: each loads its own tensors).
    KeyError / ValueError when this is no GroundingDINO."""
    from transformers import GroundingDinoConfig

    levels, d_model = _shape(weights, "transformer.level_embed")
    offsets = _shape(weights, "transformer.encoder.layers.0.self_attn.attention_weights.weight")
    if offsets[0] != ATTENTION_HEADS * levels * SAMPLING_POINTS:
        raise ValueError(
            f"its deformable attention has {offsets[0]} sampling weights, not "
            f"{ATTENTION_HEADS} heads x {levels} levels x {SAMPLING_POINTS} points"
        )
    if "transformer.enc_output.weight" not in weights:
        raise ValueError("it has no two-stage query selection (transformer.enc_output)")
    return GroundingDinoConfig(
        backbone_config=swin_config(weights),
        text_config=bert_config(weights),
        d_model=d_model,
        num_feature_levels=levels,
        num_queries=_shape(weights, "transformer.tgt_embed.weight")[0],
        encoder_layers=_count(weights, "transformer.encoder.layers."),
        decoder_layers=_count(weights, "transformer.decoder.layers."),
        encoder_ffn_dim=_shape(weights, "transformer.encoder.layers.0.linear1.weight")[0],
        decoder_ffn_dim=_shape(weights, "transformer.decoder.layers.0.linear1.weight")[0],
        encoder_attention_heads=ATTENTION_HEADS,
        decoder_attention_heads=ATTENTION_HEADS,
        encoder_n_points=SAMPLING_POINTS,
        decoder_n_points=SAMPLING_POINTS,
        decoder_bbox_embed_share=False,
    )


def swin_config(weights: dict[str, Any]) -> Any:
    """The Swin backbone: widths, depths, heads and window from the patch embedding and the
    relative position tables; the stages it outputs from the output norms present."""
    from transformers import SwinConfig

    embed_dim, _, patch, _ = _shape(weights, "backbone.0.patch_embed.proj.weight")
    stages = _count(weights, "backbone.0.layers.")
    depths = [_count(weights, f"backbone.0.layers.{i}.blocks.") for i in range(stages)]
    tables = [
        _shape(weights, f"backbone.0.layers.{i}.blocks.0.attn.relative_position_bias_table")
        for i in range(stages)
    ]
    span = round(tables[0][0] ** 0.5)
    if span * span != tables[0][0] or span % 2 == 0:
        raise ValueError(f"its relative position table has {tables[0][0]} rows, not (2w-1)²")
    out_features = [f"stage{i + 1}" for i in range(4) if f"backbone.0.norm{i}.weight" in weights]
    fc1 = _shape(weights, "backbone.0.layers.0.blocks.0.mlp.fc1.weight")
    return SwinConfig(
        embed_dim=embed_dim,
        depths=depths,
        num_heads=[table[1] for table in tables],
        window_size=(span + 1) // 2,
        patch_size=patch,
        image_size=SWIN_VARIANTS.get(embed_dim, ("", 224))[1],
        mlp_ratio=fc1[0] / embed_dim,
        qkv_bias="backbone.0.layers.0.blocks.0.attn.qkv.bias" in weights,
        out_features=out_features,
    )


def bert_config(weights: dict[str, Any]) -> Any:
    """The BERT text encoder: sizes from the embeddings and the first layer, and BERT's 64
    features per attention head (bert-base-uncased's 12 heads; no shape records it)."""
    from transformers import BertConfig

    vocab, hidden = _shape(weights, "bert.embeddings.word_embeddings.weight")
    return BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=_count(weights, "bert.encoder.layer."),
        num_attention_heads=max(1, hidden // BERT_HEAD_WIDTH),
        intermediate_size=_shape(weights, "bert.encoder.layer.0.intermediate.dense.weight")[0],
        max_position_embeddings=_shape(weights, "bert.embeddings.position_embeddings.weight")[0],
        type_vocab_size=_shape(weights, "bert.embeddings.token_type_embeddings.weight")[0],
    )


def variant_name(config: Any) -> str:
    """'Swin-T' or 'Swin-B' for the released backbones, else a description."""
    swin = config.backbone_config
    name = SWIN_VARIANTS.get(swin.embed_dim, ("",))[0]
    return name or f"custom Swin ({swin.embed_dim} wide, depths {list(swin.depths)})"


def _shape(weights: dict[str, Any], key: str) -> tuple[int, ...]:
    return tuple(int(n) for n in weights[key].shape)


def _count(weights: dict[str, Any], prefix: str) -> int:
    """How many numbered children `prefix` has (0, 1, ... with no gaps)."""
    numbers = {
        int(key[len(prefix) :].split(".", 1)[0]) for key in weights if key.startswith(prefix)
    }
    if not numbers or numbers != set(range(len(numbers))):
        raise ValueError(f"its {prefix}N modules are {sorted(numbers) or 'missing'}")
    return len(numbers)


def some_keys(keys: list[str]) -> str:
    """The first few key names, for a message."""
    shown = ", ".join(sorted(keys)[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


# --- reading and loading a file --------------------------------------------------------------


def read_original_weights(path: Path) -> dict[str, Any]:
    """The checkpoint's "model" state dict (DataParallel's "module." removed), read with
    torch's weights-only unpickler: a file whose pickle needs more is refused unread."""
    import pickle

    import torch

    if not path.is_file():
        raise ModelNotFoundError(f"GroundingDINO file {path} does not exist. {WHAT_TO_DO}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if (refused := refused_by_unpickler(error)) is None:
            raise _unreadable(path, error) from error
        raise ModelNotFoundError(
            f"GroundingDINO file {path} was not loaded: its pickle is more than tensors "
            f"({refused}), which a released checkpoint never is, and loading it could run "
            f"code. {WHAT_TO_DO}"
        ) from None
    except Exception as error:
        raise _unreadable(path, error) from error
    weights = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise not_grounding_error(path, "it holds no state dict of tensors under 'model'")
    return {key.removeprefix("module."): value for key, value in weights.items()}


def not_grounding_error(path: Path, what: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"GroundingDINO file {path} is not a GroundingDINO checkpoint: {what}. {WHAT_TO_DO}"
    )


def _unreadable(path: Path, error: BaseException) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"GroundingDINO file {path} could not be read as a PyTorch checkpoint "
        f"({first_line(error)}): it is empty, truncated or not a .pth file. {WHAT_TO_DO}"
    )
