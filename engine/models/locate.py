"""Finding weights: a ComfyUI-style models folder, a diffusers folder, a Hugging Face repo.

Everything here reads headers and config.json files only, never weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from engine.errors import InputError, ModelNotFoundError
from engine.models.checkpoint import SUFFIXES, CheckpointError, read_header
from engine.models.detect import (
    CLIP_WIDTHS,
    DETECTORS,
    T5_WIDTHS,
    TRANSFORMER_WIDTHS,
    VAE_WIDTHS,
    Detected,
)
from engine.models.gguf import GGUF_REASON, GGUF_SUFFIX, gguf_message, has_gguf_magic
from engine.models.specs import (
    COMPONENT_NAMES,
    Trail,
    WeightSpec,
    file_identity,
    folder_identity,
    inside,
)

# checkpoints/ comes last: an all-in-one Flux checkpoint there holds every component under
# its own key prefix (model.diffusion_model., first_stage_model./vae., text_encoders.*).
COMFY_FOLDERS = {
    "transformer": ("diffusion_models", "unet", "checkpoints"),
    "fill": ("diffusion_models", "unet"),
    "vae": ("vae", "checkpoints"),
    "clip": ("text_encoders", "clip", "checkpoints"),
    "t5": ("text_encoders", "clip", "checkpoints"),
}
# File-name starts tried first when no name is given (then every other file, sorted).
PREFERRED_NAMES = {
    "transformer": ("flux1-dev", "flux1-schnell", "flux"),
    "fill": ("flux1-fill", "flux"),
    "vae": ("ae.", "flux"),
    "clip": ("clip_l",),
    "t5": ("t5xxl",),
}
DIFFUSERS_SUBFOLDERS = {
    "transformer": "transformer",
    "vae": "vae",
    "clip": "text_encoder",
    "t5": "text_encoder_2",
    "clip_tokenizer": "tokenizer",
    "t5_tokenizer": "tokenizer_2",
}


def find_in_comfy(models_dir: Path, component: str, name: str, trail: Trail) -> WeightSpec | None:
    """The named file, or the first suitable one, in the component's ComfyUI folders."""
    if not models_dir.is_dir():
        trail.place(f"{models_dir} (models folder missing)")
        return None
    folders = [models_dir / sub for sub in COMFY_FOLDERS[component]]
    for folder in folders:
        trail.place(str(folder) + ("" if folder.is_dir() else " (missing)"))
    if name:
        return _named_comfy_file(models_dir, folders, component, name, trail)
    found = None
    for path in _candidates(folders, component):
        spec = _comfy_spec(models_dir, path, component)
        if isinstance(spec, WeightSpec):
            found = spec
            break
        trail.reject(path, spec)
    _note_gguf(folders, trail)  # also when a usable file was found: `engine models` lists them
    return found


def _named_comfy_file(
    models_dir: Path, folders: list[Path], component: str, name: str, trail: Trail
) -> WeightSpec | None:
    for folder in folders:
        path = inside(folder, name)
        if path is None:
            raise ModelNotFoundError(
                f"The {COMPONENT_NAMES[component]} name {name!r} must be a file name inside "
                f"the models folder ({', '.join(str(f) for f in folders)})."
            )
        if path.suffix.lower() == GGUF_SUFFIX or (path.is_file() and has_gguf_magic(path)):
            raise InputError(gguf_message([name], component))
        if not path.is_file():
            continue
        spec = _comfy_spec(models_dir, path, component)
        if isinstance(spec, str):  # named but unusable: say why, never fall back silently
            raise trail.error(f"The {COMPONENT_NAMES[component]} file {name!r} ({path}) {spec}.")
        return spec
    return None


def _candidates(folders: list[Path], component: str) -> list[Path]:
    """Weight files in the folders: preferred names first, then folder order, then path."""
    preferred = PREFERRED_NAMES[component]
    ranked: dict[Path, tuple[int, int, str]] = {}
    for index, folder in enumerate(folders):
        if not folder.is_dir():
            continue
        for path in folder.rglob("*"):
            if path.suffix.lower() in SUFFIXES and path.is_file() and path not in ranked:
                lower = path.name.lower()
                hit = next((i for i, s in enumerate(preferred) if lower.startswith(s)), None)
                ranked[path] = (len(preferred) if hit is None else hit, index, str(path))
    return sorted(ranked, key=ranked.__getitem__)


def _note_gguf(folders: list[Path], trail: Trail) -> None:
    """GGUF files are common for Flux; say why they were passed over instead of ignoring them."""
    for path in _gguf_named(folders):
        trail.reject(path, GGUF_REASON)


def _gguf_named(folders: list[Path]) -> list[Path]:
    """Files named *.gguf (any case) in the folders and below, sorted."""
    found = {
        path
        for folder in folders
        if folder.is_dir()
        for path in folder.rglob("*")
        if path.suffix.lower() == GGUF_SUFFIX and path.is_file()
    }
    return sorted(found)


def comfy_gguf_files(models_dir: Path, component: str) -> list[Path]:
    """The GGUF files (by name or by content) in a component's own ComfyUI folders: what a
    "nothing usable found" message names. checkpoints/ counts for the transformer only, and
    text encoders are told apart by name ("t5" / "clip")."""
    subs = [s for s in COMFY_FOLDERS[component] if component == "transformer" or s != "checkpoints"]
    folders = [models_dir / sub for sub in subs]
    found = _gguf_named(folders) + [p for p in _candidates(folders, component) if has_gguf_magic(p)]
    other = {"clip": "t5", "t5": "clip"}.get(component)
    return [p for p in found if other is None or other not in p.name.lower()]


def _comfy_spec(models_dir: Path, path: Path, component: str) -> WeightSpec | str:
    """The spec for a file, or the reason it cannot serve as `component`."""
    try:
        header = read_header(path)
    except CheckpointError as exc:
        return str(exc)
    found = DETECTORS[component](header)
    if isinstance(found, str):
        return f"is {found}"
    return WeightSpec(
        component=component,
        source="file",
        identity=file_identity("comfy", models_dir, path),
        path=path,
        detected=found,
        label=path.name,
    )


def find_in_diffusers(root: Path, component: str, trail: Trail) -> WeightSpec | None:
    """A component subfolder (config.json + weights) of a diffusers FLUX.1 folder."""
    sub = DIFFUSERS_SUBFOLDERS[component]
    folder = root / sub
    trail.place(f"{folder} (diffusers folder)")
    config_file = folder / "config.json"
    if not config_file.is_file() or not _has_weights(folder):
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        trail.reject(config_file, f"unreadable config ({exc})")
        return None
    return WeightSpec(
        component=component,
        source="diffusers",
        identity=folder_identity("diffusers", folder, sub),
        path=root,
        subfolder=sub,
        detected=describe_config(component, config),
        label=f"{root.name}/{sub}",
    )


def _has_weights(folder: Path) -> bool:
    return any(
        p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")
        for p in folder.iterdir()
    )


def describe_config(component: str, config: dict) -> Detected:
    """Family and interface dimensions from a diffusers/transformers config.json."""
    if component == "transformer":
        width = config.get("num_attention_heads", 0) * config.get("attention_head_dim", 0)
        dims = {
            "in_channels": config.get("in_channels", 64),
            "joint_attention_dim": config.get("joint_attention_dim"),
            "pooled_projection_dim": config.get("pooled_projection_dim"),
            "guidance_embeds": bool(config.get("guidance_embeds", False)),
        }
        family = TRANSFORMER_WIDTHS.get(width, "other")
        variant = "dev" if dims["guidance_embeds"] else "schnell"
        return Detected(
            component, family, "", "diffusers", tuple(sorted(dims.items())), "", variant
        )
    if component == "vae":
        width = (config.get("block_out_channels") or [0])[0]
        dims = {"latent_channels": config.get("latent_channels")}
        return Detected(
            component, VAE_WIDTHS.get(width, "other"), "", "diffusers", tuple(dims.items())
        )
    if component == "clip":
        width = config.get("hidden_size", 0)
        return Detected(
            component, CLIP_WIDTHS.get(width, "other"), "", "diffusers", (("hidden_size", width),)
        )
    width = config.get("d_model", 0)
    return Detected(
        component, T5_WIDTHS.get(width, "other"), "", "diffusers", (("d_model", width),)
    )


def hub_offline() -> bool:
    """True when huggingface_hub must not go online (HF_HUB_OFFLINE, read now, not at import)."""
    import huggingface_hub.constants as hub_constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(hub_constants.HF_HUB_OFFLINE)


def cached_snapshot(repo_id: str, filename: str, cache_dir: Path | None) -> Path | None:
    """The local snapshot folder of `repo_id` when `filename` is in the HF cache, else None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    except Exception:  # a malformed repo id or cache folder simply means "not cached"
        return None
    if not isinstance(found, str):
        return None
    path = Path(found)
    return path.parents[len(Path(filename).parts) - 1]


def find_in_hub(
    repo_id: str,
    component: str,
    cache_dir: Path | None,
    trail: Trail,
    subfolders: dict[str, str] = DIFFUSERS_SUBFOLDERS,
    find_local: Callable[[Path, str, Trail], WeightSpec | None] | None = None,
    offline: bool = False,
) -> WeightSpec | None:
    """The repo's diffusers subfolder from the HF cache, or a download spec when online
    (not `offline`, no HF_HUB_OFFLINE).

    `subfolders` and `find_local` let other model families (Redux) reuse the same rules.
    """
    sub = subfolders[component]
    snapshot = cached_snapshot(repo_id, "model_index.json", cache_dir)
    identity = f"hub:{repo_id}:{sub}"  # the same before and after the download
    if snapshot is not None:
        spec = (find_local or find_in_diffusers)(snapshot, component, trail)
        if spec is not None:
            return replace(spec, identity=identity, label=f"{repo_id}/{sub}")
    if offline or hub_offline():
        trail.place(f"Hugging Face cache for {repo_id}/{sub} (not downloaded; offline)")
        return None
    trail.place(f"Hugging Face repo {repo_id}/{sub} (downloaded on first use)")
    return WeightSpec(
        component=component,
        source="hub",
        identity=identity,
        repo_id=repo_id,
        subfolder=sub,
        label=f"{repo_id}/{sub}",
    )
