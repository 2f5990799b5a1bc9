"""Writing the tiny models to disk the way people's real weights are laid out.

`save_tiny_diffusers` writes a complete diffusers FluxPipeline folder. `save_tiny_comfy`
writes ComfyUI-style single files plus the tokenizers a ComfyUI install keeps next to its
models folder, so tests run the same discovery and loading code as real files. Diffusers'
BFL-layout transformer converter is written for the real width (3072), so the tiny
transformer file keeps the diffusers key layout (under ComfyUI's "model.diffusion_model."
prefix); the VAE is written in the original LDM layout of ae.safetensors, which diffusers
converts at any width. The transformer and the T5 can be written in ComfyUI's fp8 layouts
(plain e4m3fn, or scaled with a float32 scale_weight per Linear).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from engine.models.tiny import build_tiny_components
from engine.models.tiny_text import CLIP_BOS, CLIP_EOS, clip_vocab_and_merges

# FLUX.1-dev's scheduler_config.json.
FLUX_SCHEDULER = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
TRANSFORMER_FORMATS = ("fp32", "fp8_e4m3fn", "fp8_e5m2", "fp8_e4m3fn_scaled")
# ComfyUI's T5-XXL files: t5xxl_fp16, t5xxl_fp8_e4m3fn and t5xxl_fp8_e4m3fn_scaled.
T5_FORMATS = ("fp32", "fp8_e4m3fn", "fp8_e4m3fn_scaled")
COMFY_PREFIX = "model.diffusion_model."


@dataclass(frozen=True)
class TinyComfyFiles:
    """The files save_tiny_comfy wrote."""

    transformer: Path
    vae: Path
    clip: Path
    t5: Path
    clip_tokenizer: Path
    t5_tokenizer: Path


def save_tiny_diffusers(folder: Path) -> Path:
    """Save the tiny models as a diffusers FluxPipeline folder (model_index.json and all)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    pipeline = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), **build_tiny_components()
    )
    pipeline.save_pretrained(str(folder))
    return Path(folder)


def save_tiny_comfy(
    models_dir: Path, transformer_format: str = "fp32", t5_format: str = "fp32"
) -> TinyComfyFiles:
    """Save the tiny models as ComfyUI files; tokenizers go to <models_dir>/../comfy/."""
    if transformer_format not in TRANSFORMER_FORMATS:
        raise ValueError(f"transformer_format must be one of {TRANSFORMER_FORMATS}")
    if t5_format not in T5_FORMATS:
        raise ValueError(f"t5_format must be one of {T5_FORMATS}")
    parts = build_tiny_components()
    models_dir = Path(models_dir)
    suffix = "" if transformer_format == "fp32" else f"-{transformer_format}"
    t5_suffix = "" if t5_format == "fp32" else f"_{t5_format}"
    install = models_dir.parent / "comfy"
    files = TinyComfyFiles(
        transformer=models_dir / "diffusion_models" / f"flux1-tiny{suffix}.safetensors",
        vae=models_dir / "vae" / "ae-tiny.safetensors",
        clip=models_dir / "text_encoders" / "clip_l-tiny.safetensors",
        t5=models_dir / "text_encoders" / f"t5xxl-tiny{t5_suffix}.safetensors",
        clip_tokenizer=install / "sd1_tokenizer",
        t5_tokenizer=install / "text_encoders" / "t5_tokenizer",
    )
    transformer = quantise(parts["transformer"].state_dict(), transformer_format)
    _save({COMFY_PREFIX + k: v for k, v in transformer.items()}, files.transformer)
    _save(vae_to_ldm(parts["vae"].state_dict()), files.vae)
    _save({"text_model." + k: v for k, v in parts["text_encoder"].state_dict().items()}, files.clip)
    t5 = parts["text_encoder_2"].state_dict()
    t5.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight, as in t5xxl files
    _save(quantise_t5(t5, t5_format), files.t5)
    save_clip_vocab(files.clip_tokenizer)
    parts["tokenizer_2"].save_pretrained(str(files.t5_tokenizer))
    return files


def save_clip_vocab(folder: Path) -> None:
    """The tiny CLIP tokenizer as ComfyUI's sd1_tokenizer holds CLIP's: vocab.json + merges.txt."""
    vocab, merges = clip_vocab_and_merges()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "model_max_length": 77,
        "bos_token": CLIP_BOS,
        "eos_token": CLIP_EOS,
        "unk_token": CLIP_EOS,
        "pad_token": CLIP_EOS,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def quantise(state: dict, fmt: str) -> dict:
    """Store 2-D weights (the Linear layers) in fp8, plain or ComfyUI-scaled; rest untouched."""
    if fmt == "fp32":
        return dict(state)
    dtype = torch.float8_e5m2 if fmt == "fp8_e5m2" else torch.float8_e4m3fn
    scaled = fmt.endswith("_scaled")
    out: dict = {}
    for key, tensor in state.items():
        if not (key.endswith(".weight") and tensor.dim() == 2):
            out[key] = tensor
            continue
        if scaled:
            scale = tensor.abs().max().clamp(min=1e-12) / torch.finfo(dtype).max
            out[key] = (tensor / scale).to(dtype)
            out[key[: -len("weight")] + "scale_weight"] = scale.reshape(()).float()
        else:
            out[key] = tensor.to(dtype)
    if scaled:
        out["scaled_fp8"] = torch.empty(0, dtype=dtype)  # ComfyUI's format marker
    return out


def is_t5_linear(key: str) -> bool:
    """The T5 encoder's Linear weights (attention q/k/v/o, feed-forward wi/wo); not the token
    embedding, the relative attention bias or the layer norms."""
    if not key.endswith(".weight") or "relative_attention_bias" in key:
        return False
    return ".SelfAttention." in key or ".DenseReluDense." in key


def quantise_t5(state: dict, fmt: str, others: torch.dtype = torch.float16) -> dict:
    """A T5 state dict as ComfyUI's t5xxl files store it: Linear weights in fp8 (scaled: with
    a float32 `scale_weight` and `scale_input` per Linear and the `scaled_fp8` marker), every
    other tensor in `others` (fp16). fp32 is returned unchanged."""
    if fmt == "fp32":
        return dict(state)
    linears = {k: v for k, v in state.items() if is_t5_linear(k)}
    out = {k: v.to(others) for k, v in state.items() if k not in linears}
    out.update(quantise(linears, fmt))
    if fmt.endswith("_scaled"):
        for key in linears:
            out[key[: -len("weight")] + "scale_input"] = torch.ones((), dtype=torch.float32)
    return out


def vae_to_ldm(state: dict, num_blocks: int = 4) -> dict:
    """Diffusers AutoencoderKL keys -> the original LDM/BFL keys of ae.safetensors."""

    def up(match: re.Match, what: str) -> str:
        return f"up.{num_blocks - 1 - int(match[1])}.{what}."

    out = {}
    for key, tensor in state.items():
        new = key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        new = re.sub(r"down_blocks\.(\d+)\.resnets\.", r"down.\1.block.", new)
        new = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample.", new)
        new = re.sub(r"up_blocks\.(\d+)\.resnets\.", lambda m: up(m, "block"), new)
        new = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: up(m, "upsample"), new)
        new = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", new)
        if "mid_block.attentions.0." in new:
            new = new.replace("mid_block.attentions.0.", "mid.attn_1.")
            for old, ldm in (
                ("group_norm", "norm"),
                ("to_q", "q"),
                ("to_k", "k"),
                ("to_v", "v"),
                ("to_out.0", "proj_out"),
            ):
                new = new.replace(f".{old}.", f".{ldm}.")
            if tensor.dim() == 2:  # 1x1 convolutions in the original
                tensor = tensor[:, :, None, None]
        out[new] = tensor
    return out


def _save(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
