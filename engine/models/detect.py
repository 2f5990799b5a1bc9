"""Recognise a checkpoint from its header: which component, key layout, and shape.

Only known widths are accepted: the real FLUX.1 architecture (and its CLIP-L / T5-XXL /
16-channel VAE) and our tiny test models. Everything else (SD VAEs, CLIP-G, UMT5, Depth and
Canny's 128 input channels, LoRA files) is rejected with a short reason. FLUX.1 Fill (384
input channels: the noisy latents, the masked image's latents and the 8×8-packed mask) is
its own component, "fill", which the Refine passes use for inpainting.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.models.checkpoint import Header, is_scaled_fp8
from engine.models.precision import SAFETENSORS_FP8

# Anchor keys: a file is a candidate when one of them appears (after any prefix).
_BFL_ANCHOR = "double_blocks.0.img_attn.qkv.weight"
_DIFFUSERS_ANCHOR = "transformer_blocks.0.attn.to_q.weight"
_VAE_ANCHOR = "decoder.conv_in.weight"
_CLIP_ANCHOR = "embeddings.token_embedding.weight"
_T5_ANCHOR = "encoder.block.0.layer.0.SelfAttention.q.weight"
# Keys outside the numbered blocks: a file that lost a block (a bad conversion, a pruned
# copy) is still recognised, so loading and `engine models` can say which block is missing.
_BFL_EMBEDS = ("img_in.weight", "txt_in.weight", "final_layer.linear.weight")
_DIFFUSERS_EMBEDS = ("x_embedder.weight", "context_embedder.weight", "proj_out.weight")
_T5_EMBEDS = ("encoder.final_layer_norm.weight",)

# width -> config family; "flux1" = the JSON configs in configs/, "tiny" = tiny.py.
TRANSFORMER_WIDTHS = {3072: "flux1", 32: "tiny"}
VAE_WIDTHS = {128: "flux1", 8: "tiny"}
CLIP_WIDTHS = {768: "flux1", 32: "tiny"}
T5_WIDTHS = {4096: "flux1", 32: "tiny"}
REAL_VOCAB = {"clip": 49408, "t5": 32128}
BASE_IN_CHANNELS = 64
FILL_IN_CHANNELS = 384  # 64 noisy + 64 masked-image latent + 256 mask values per token
TRANSFORMER_KINDS = {
    BASE_IN_CHANNELS: "FLUX.1 base (dev/schnell) transformer",
    FILL_IN_CHANNELS: "FLUX.1 Fill (inpainting) transformer, used by the Refine passes",
    128: "FLUX.1 Depth/Canny (control) transformer, which this studio does not use",
}


@dataclass(frozen=True)
class Detected:
    """What a file holds: family ("flux1"/"tiny"), key prefix, layout and config overrides."""

    component: str
    family: str
    prefix: str
    layout: str
    overrides: tuple[tuple[str, object], ...] = ()
    file_fp8: str = ""  # the fp8 dtype a file stores its Linear weights in ("" if none)
    variant: str = ""
    fp8_scaled: bool = False  # ComfyUI "fp8_scaled": weights carry a scale, dequantised on load

    def dims(self) -> dict[str, object]:
        return dict(self.overrides)


def detect_transformer(header: Header, in_channels: int = BASE_IN_CHANNELS) -> Detected | str:
    """A Flux transformer (BFL, ComfyUI-prefixed or diffusers layout) taking `in_channels`
    per token, or why not."""
    prefix = header.prefix_of(_BFL_ANCHOR)
    if prefix is None:
        prefix = _prefix_with(header, _BFL_EMBEDS)
    found: Detected | str = "not a Flux transformer"
    if prefix is not None:
        found = _bfl_transformer(header, prefix)
    else:
        prefix = _diffusers_prefix(header)
        if prefix is not None:
            found = _diffusers_transformer(header, prefix)
    if isinstance(found, Detected) and found.dims()["in_channels"] != in_channels:
        channels = found.dims()["in_channels"]
        kind = TRANSFORMER_KINDS.get(channels, f"Flux transformer with {channels} input channels")
        return f"a {kind}, not a {TRANSFORMER_KINDS[in_channels].split(',')[0]}"
    return found


def _prefix_with(header: Header, keys: tuple[str, ...]) -> str | None:
    """The prefix under which the file holds every one of `keys`, or None."""
    prefix = header.prefix_of(keys[0])
    if prefix is not None and all(header.has(prefix + key) for key in keys[1:]):
        return prefix
    return None


def _diffusers_prefix(header: Header) -> str | None:
    prefix = header.prefix_of(_DIFFUSERS_ANCHOR)
    if prefix is not None and header.has(f"{prefix}single_transformer_blocks.0.proj_mlp.weight"):
        return prefix
    return _prefix_with(header, _DIFFUSERS_EMBEDS)


def detect_fill(header: Header) -> Detected | str:
    """A FLUX.1 Fill transformer, or why not."""
    return detect_transformer(header, FILL_IN_CHANNELS)


def _bfl_transformer(header: Header, prefix: str) -> Detected | str:
    p = prefix
    if not header.has(f"{p}vector_in.in_layer.weight"):
        return "a Flux-like transformer without a CLIP input (not FLUX.1)"
    width, in_channels = header.shapes[f"{p}img_in.weight"]
    family = TRANSFORMER_WIDTHS.get(width)
    if family != "flux1":  # diffusers' BFL converter is written for the real width only
        return f"a BFL-layout transformer of width {width}, not FLUX.1 (3072)"
    guidance = header.has(f"{p}guidance_in.in_layer.weight")
    overrides = {
        "in_channels": in_channels,
        "out_channels": _rows(header, f"{p}final_layer.linear.weight", in_channels),
        "num_layers": header.count_blocks(f"{p}double_blocks."),
        "num_single_layers": header.count_blocks(f"{p}single_blocks."),
        "guidance_embeds": guidance,
        "joint_attention_dim": header.shapes[f"{p}txt_in.weight"][1],
        "pooled_projection_dim": header.shapes[f"{p}vector_in.in_layer.weight"][1],
    }
    return _transformer(header, p, "bfl", family, overrides, (_BFL_ANCHOR, "img_in.weight"))


def _diffusers_transformer(header: Header, prefix: str) -> Detected | str:
    p = prefix
    text_key = f"{p}time_text_embed.text_embedder.linear_1.weight"
    if not header.has(text_key):
        return "a Flux-like transformer without a CLIP input (not FLUX.1)"
    width, in_channels = header.shapes[f"{p}x_embedder.weight"]
    family = TRANSFORMER_WIDTHS.get(width)
    if family is None:
        return f"a transformer of width {width}, neither FLUX.1 (3072) nor the tiny test model"
    guidance = header.has(f"{p}time_text_embed.guidance_embedder.linear_1.weight")
    overrides = {
        "in_channels": in_channels,
        "out_channels": _rows(header, f"{p}proj_out.weight", in_channels),
        "num_layers": header.count_blocks(f"{p}transformer_blocks."),
        "num_single_layers": header.count_blocks(f"{p}single_transformer_blocks."),
        "guidance_embeds": guidance,
        "joint_attention_dim": header.shapes[f"{p}context_embedder.weight"][1],
        "pooled_projection_dim": header.shapes[text_key][1],
    }
    anchors = (_DIFFUSERS_ANCHOR, "x_embedder.weight")
    return _transformer(header, p, "diffusers", family, overrides, anchors)


def _rows(header: Header, key: str, default: int) -> int:
    """The output size of a Linear weight (diffusers sets out_channels = in_channels unless
    told, and Fill's output is 64 wide for 384 inputs)."""
    return header.shapes[key][0] if header.has(key) else default


def _stored_fp8(header: Header, prefix: str, keys: tuple[str, ...]) -> str:
    """The fp8 dtype of the first of `keys` the file holds ("" when it is not fp8)."""
    key = next((prefix + k for k in keys if header.has(prefix + k)), None)
    return SAFETENSORS_FP8.get(header.dtypes[key], "") if key else ""


def _transformer(
    header: Header, prefix: str, layout: str, family: str, overrides: dict, anchors: tuple
) -> Detected:
    return Detected(
        component="transformer",
        family=family,
        prefix=prefix,
        layout=layout,
        overrides=tuple(sorted(overrides.items())),
        file_fp8=_stored_fp8(header, prefix, anchors),
        variant="dev" if overrides["guidance_embeds"] else "schnell",
        fp8_scaled=is_scaled_fp8(header),
    )


def detect_vae(header: Header) -> Detected | str:
    """A 16-channel Flux VAE in LDM/BFL (ae.safetensors) or diffusers layout, or why not."""
    prefix = header.prefix_of(_VAE_ANCHOR)
    if prefix is None:
        return "not a VAE"
    latent = header.shapes[f"{prefix}{_VAE_ANCHOR}"][1]
    if latent != 16:
        return f"a VAE with {latent} latent channels (Flux needs 16)"
    conv_in = f"{prefix}encoder.conv_in.weight"
    width = header.shapes[conv_in][0] if header.has(conv_in) else 0
    family = VAE_WIDTHS.get(width)
    if family is None:
        return f"a 16-channel VAE of width {width}, not the Flux VAE"
    layout = (
        "diffusers" if header.has(f"{prefix}decoder.up_blocks.0.resnets.0.conv1.weight") else "ldm"
    )
    return Detected("vae", family, prefix, layout)


def detect_clip(header: Header) -> Detected | str:
    """A CLIP-L text encoder in transformers layout (ComfyUI's clip_l.safetensors), or why not."""
    found = header.prefix_of(_CLIP_ANCHOR)
    if found is None:
        return "not a CLIP text encoder"
    # Keep "text_model." on the keys: transformers maps it either way; strip what is outside.
    prefix = found[: -len("text_model.")] if found.endswith("text_model.") else found
    vocab, width = header.shapes[f"{found}{_CLIP_ANCHOR}"]
    family = CLIP_WIDTHS.get(width)
    if family is None or (family == "flux1" and vocab != REAL_VOCAB["clip"]):
        return f"a CLIP text encoder of width {width}, not CLIP-L (768)"
    layers = header.count_blocks(f"{found}encoder.layers.")
    overrides = (("hidden_size", width), ("num_hidden_layers", layers))
    return Detected("clip", family, prefix, "transformers", overrides)


def detect_t5(header: Header) -> Detected | str:
    """A T5 encoder in transformers layout (ComfyUI's t5xxl_*.safetensors: fp16, fp8_e4m3fn
    and fp8_e4m3fn_scaled), or why not."""
    prefix = header.prefix_of(_T5_ANCHOR)
    if prefix is None:
        prefix = _prefix_with(header, _T5_EMBEDS)
    if prefix is None:
        return "not a T5 encoder"
    embed = next(
        (
            f"{prefix}{k}"
            for k in ("shared.weight", "encoder.embed_tokens.weight")
            if header.has(f"{prefix}{k}")
        ),
        None,
    )
    if embed is None:
        return "a T5 encoder without its token embedding"
    vocab, width = header.shapes[embed]
    family = T5_WIDTHS.get(width)
    if family is None or (family == "flux1" and vocab != REAL_VOCAB["t5"]):
        return f"a T5 encoder of width {width} / vocabulary {vocab}, not T5-XXL"
    layers = header.count_blocks(f"{prefix}encoder.block.")
    overrides = (("d_model", width), ("num_layers", layers))
    stem = f"{prefix}encoder.block."
    queries = [k for k in header.shapes if k.startswith(stem) and k.endswith(".q.weight")]
    fp8 = _stored_fp8(header, "", (f"{prefix}{_T5_ANCHOR}", *queries[:1]))
    return Detected(
        "t5", family, prefix, "transformers", overrides, fp8, fp8_scaled=is_scaled_fp8(header)
    )


DETECTORS = {
    "transformer": detect_transformer,
    "fill": detect_fill,
    "vae": detect_vae,
    "clip": detect_clip,
    "t5": detect_t5,
}
