"""Loading one component from a WeightSpec: tiny, single file, diffusers folder or the hub.

Single files go through the libraries' own paths: diffusers' from_single_file (which converts
BFL / LDM key layouts to diffusers') with a local config folder, and transformers'
from_pretrained(config=..., state_dict=...) for the text encoders.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from engine.models import tiny
from engine.models.checkpoint import CheckpointError, read_header, read_tensors
from engine.models.detect import Detected
from engine.models.locate_text import TOKENIZER_FILES
from engine.models.specs import WeightSpec
from engine.models.tiny_text import build_tiny_clip_tokenizer, build_tiny_t5_tokenizer

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
FLUX1_CONFIGS = {
    "transformer": "flux1_transformer.json",
    "vae": "flux1_vae.json",
    "clip": "clip_l.json",
    "t5": "t5xxl.json",
}
# Errors the libraries raise for a file whose tensors do not fit the architecture.
_LOAD_ERRORS = (KeyError, ValueError, RuntimeError, IndexError, TypeError, OSError)


def base_config(component: str, family: str) -> dict[str, Any]:
    """The architecture config for a family: the real FLUX.1 JSON files, or the tiny ones."""
    if family == "tiny":
        tiny_configs = {
            "transformer": tiny.TINY_TRANSFORMER,
            "vae": tiny.TINY_VAE,
            "clip": tiny.tiny_clip_config(),
            "t5": tiny.tiny_t5_config(),
        }
        return dict(tiny_configs[component])
    return json.loads((CONFIG_DIR / FLUX1_CONFIGS[component]).read_text(encoding="utf-8"))


def file_config(detected: Detected) -> dict[str, Any]:
    """Base config with what the file's header says (block counts, guidance, widths)."""
    return {**base_config(detected.component, detected.family), **detected.dims()}


@contextmanager
def config_folder(config: dict[str, Any], class_name: str) -> Iterator[str]:
    """A temporary folder holding config.json, for from_single_file(config=...)."""
    with tempfile.TemporaryDirectory(prefix="flux-config-") as folder:
        body = {"_class_name": class_name, **config}
        (Path(folder) / "config.json").write_text(json.dumps(body), encoding="utf-8")
        yield folder


def cast(model: Any, dtype: torch.dtype) -> Any:
    """model.to(dtype) unless every parameter already has that dtype (a no-op without logs)."""
    if any(p.dtype != dtype for p in model.parameters()):
        model.to(dtype=dtype)
    return model


def load_transformer(spec: WeightSpec, dtype: torch.dtype) -> FluxTransformer2DModel:
    """The Flux transformer in `dtype` (fp8 storage is applied afterwards by the caller)."""
    if spec.source == "tiny":
        return cast(tiny.build_tiny_transformer(), dtype)
    if spec.source == "diffusers":
        return _from_diffusers(FluxTransformer2DModel, spec, torch_dtype=dtype)
    return _single_file(FluxTransformer2DModel, spec, dtype)


def load_vae(spec: WeightSpec, dtype: torch.dtype) -> AutoencoderKL:
    if spec.source == "tiny":
        return cast(tiny.build_tiny_vae(), dtype)
    if spec.source == "diffusers":
        return _from_diffusers(AutoencoderKL, spec, torch_dtype=dtype)
    return _single_file(AutoencoderKL, spec, dtype)


def _single_file(cls: Any, spec: WeightSpec, dtype: torch.dtype) -> Any:
    assert spec.path is not None and spec.detected is not None
    state = read_tensors(read_header(spec.path), spec.detected.prefix, dtype=dtype)
    with config_folder(file_config(spec.detected), cls.__name__) as folder:
        try:
            # fp32 is what an empty model is built in already; passing it only adds
            # diffusers' "kept in float32" warning, which its to() logs on any dtype cast.
            torch_dtype = None if dtype == torch.float32 else dtype
            model = cls.from_single_file(state, config=folder, torch_dtype=torch_dtype)
        except _LOAD_ERRORS as exc:
            raise CheckpointError(
                f"does not fit the {cls.__name__} layout ({_brief(exc)})"
            ) from exc
    missing = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if missing:
        raise CheckpointError(f"is incomplete: {len(missing)} tensors missing, e.g. {missing[0]}")
    return model.eval()


def _from_diffusers(cls: Any, spec: WeightSpec, **kwargs: Any) -> Any:
    try:
        model = cls.from_pretrained(
            str(spec.path), subfolder=spec.subfolder, local_files_only=True, **kwargs
        )
    except _LOAD_ERRORS as exc:
        raise CheckpointError(f"cannot be loaded ({_brief(exc)})") from exc
    return model.eval()


def load_clip(spec: WeightSpec, dtype: torch.dtype) -> CLIPTextModel:
    if spec.source == "tiny":
        return cast(tiny.build_tiny_clip(), dtype)
    if spec.source == "diffusers":
        return _from_diffusers(CLIPTextModel, spec, dtype=dtype)
    assert spec.path is not None and spec.detected is not None
    state = read_tensors(read_header(spec.path), spec.detected.prefix, dtype=dtype)
    # Keep the text tower only: full CLIP files also hold the vision tower and projections.
    state = {
        k: v
        for k, v in state.items()
        if k.startswith(("text_model.", "embeddings.", "encoder.", "final_layer_norm."))
        and not k.endswith("position_ids")
    }
    return _text_from_state(
        CLIPTextModel, CLIPTextConfig(**file_config(spec.detected)), state, dtype
    )


def load_t5(spec: WeightSpec, dtype: torch.dtype) -> T5EncoderModel:
    if spec.source == "tiny":
        return cast(tiny.build_tiny_t5(), dtype)
    if spec.source == "diffusers":
        return _from_diffusers(T5EncoderModel, spec, dtype=dtype)
    assert spec.path is not None and spec.detected is not None
    state = read_tensors(read_header(spec.path), spec.detected.prefix, dtype=dtype)
    if "shared.weight" not in state and "encoder.embed_tokens.weight" in state:
        state["shared.weight"] = state["encoder.embed_tokens.weight"]
    # Encoder only: whole T5 checkpoints also carry a decoder and an LM head.
    state = {k: v for k, v in state.items() if k.startswith(("encoder.", "shared."))}
    return _text_from_state(T5EncoderModel, T5Config(**file_config(spec.detected)), state, dtype)


def _text_from_state(cls: Any, config: Any, state: dict, dtype: torch.dtype) -> Any:
    try:
        model, info = cls.from_pretrained(
            None, config=config, state_dict=state, dtype=dtype, output_loading_info=True
        )
    except _LOAD_ERRORS as exc:
        raise CheckpointError(f"does not fit the {cls.__name__} layout ({_brief(exc)})") from exc
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(info.get("mismatched_keys") or ())
    if missing or mismatched:
        first = (missing or mismatched)[0]
        raise CheckpointError(f"is incomplete or of another size (e.g. {first})")
    return model.eval()


def load_tokenizer(spec: WeightSpec) -> Any:
    """CLIP or T5 tokenizer from a folder (or the tiny ones built in code)."""
    clip = spec.component == "clip_tokenizer"
    if spec.source == "tiny":
        return build_tiny_clip_tokenizer() if clip else build_tiny_t5_tokenizer()
    assert spec.path is not None
    cls = CLIPTokenizer if clip else T5Tokenizer
    try:
        return cls.from_pretrained(str(spec.path), local_files_only=True)
    except _LOAD_ERRORS as exc:
        raise CheckpointError(f"cannot be loaded ({_brief(exc)})") from exc


def download(spec: WeightSpec, cache_dir: Path | None) -> WeightSpec:
    """Fetch a hub spec's subfolder (tqdm progress) and return it as a local spec; for a
    tokenizer, only its tokenizer files (a few MB, never the repo's weights)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError

    patterns = [f"{spec.subfolder}/*", "model_index.json"]
    if spec.component.endswith("_tokenizer"):
        patterns = [f"{spec.subfolder}/{n}" if spec.subfolder else n for n in TOKENIZER_FILES]
        files = ", ".join(patterns)
        log.info("Downloading the tokenizer files of %s once (%s)", spec.repo_id, files)
    try:
        root = Path(snapshot_download(spec.repo_id, allow_patterns=patterns, cache_dir=cache_dir))
    except GatedRepoError as exc:
        raise CheckpointError(
            "is a gated repo: accept its licence on huggingface.co and log in "
            "(hf auth login, or set HF_TOKEN)"
        ) from exc
    except Exception as exc:  # hub, HTTP-client and disk errors all mean "not downloaded"
        raise CheckpointError(f"could not be downloaded ({_brief(exc)})") from exc
    if spec.component.endswith("_tokenizer"):
        return replace(spec, source="folder", path=root / spec.subfolder)
    return replace(spec, source="diffusers", path=root)


def _brief(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
