"""Finding the CLIP-L and T5 tokenizers, which a ComfyUI models folder does not hold.

Searched in order: the diffusers folder (tokenizer/, tokenizer_2/), the folder the text
encoder came from, a ComfyUI install next to the models folder (comfy/sd1_tokenizer,
comfy/text_encoders/t5_tokenizer, older comfy/t5_tokenizer), the repo's cached snapshot, the
Hugging Face cache of openai/clip-vit-large-patch14 and google/t5-v1_1-xxl, and finally the
repo id online.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from engine.models.locate import DIFFUSERS_SUBFOLDERS, cached_snapshot, hub_offline
from engine.models.specs import Trail, WeightSpec

COMFY_TOKENIZER_FOLDERS = {
    "clip_tokenizer": (("comfy", "sd1_tokenizer"),),
    "t5_tokenizer": (("comfy", "text_encoders", "t5_tokenizer"), ("comfy", "t5_tokenizer")),
}
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
CACHE_REPOS = {
    "clip_tokenizer": ("openai/clip-vit-large-patch14", ("tokenizer.json", "vocab.json")),
    "t5_tokenizer": ("google/t5-v1_1-xxl", ("tokenizer.json", "spiece.model")),
}


def tokenizer_problem(component: str, folder: Path) -> str | None:
    """None when `folder` holds a usable tokenizer of that kind, else the reason it does not."""
    if not folder.is_dir():
        return "missing"
    if (folder / "tokenizer.json").is_file():
        return None
    if component == "clip_tokenizer":
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            return None
        return "no tokenizer.json or vocab.json + merges.txt"
    if (folder / "spiece.model").is_file():
        # transformers converts spiece.model with protobuf, which is an optional dependency.
        if importlib.util.find_spec("google.protobuf") is not None:
            return None
        return "only spiece.model, which needs the protobuf package to read"
    return "no tokenizer.json or spiece.model"


@dataclass(frozen=True)
class _Candidate:
    folder: Path | None  # None: a repo that is not in the cache
    where: str
    identity: str = ""  # fixed identity (a repo's tokenizer: the same cached or downloaded)


def find_tokenizer(
    component: str,
    *,
    diffusers_dir: Path | None,
    encoder: WeightSpec,
    models_dir: Path | None,
    repo_id: str | None,
    cache_dir: Path | None,
    trail: Trail,
) -> WeightSpec | None:
    """The first usable tokenizer folder, or a download spec when a repo id can be fetched."""
    candidates = [
        *_local_candidates(component, diffusers_dir, encoder, models_dir),
        *_cache_candidates(component, repo_id, cache_dir),
    ]
    for candidate in candidates:
        spec = _folder_spec(component, candidate, trail)
        if spec is not None:
            return spec
    if repo_id and not hub_offline():
        sub = DIFFUSERS_SUBFOLDERS[component]
        trail.place(f"Hugging Face repo {repo_id}/{sub} (downloaded on first use)")
        return WeightSpec(
            component,
            "hub",
            _hub_identity(repo_id, component),
            repo_id=repo_id,
            subfolder=sub,
            label=f"{repo_id}/{sub}",
        )
    return None


def _hub_identity(repo_id: str, component: str) -> str:
    return f"hub:{repo_id}:{DIFFUSERS_SUBFOLDERS[component]}"


def _local_candidates(
    component: str, diffusers_dir: Path | None, encoder: WeightSpec, models_dir: Path | None
) -> list[_Candidate]:
    sub = DIFFUSERS_SUBFOLDERS[component]
    found: list[_Candidate] = []
    if encoder.source == "diffusers" and encoder.path is not None:
        found.append(_Candidate(encoder.path / sub, "the text encoder's folder"))
    if diffusers_dir is not None:
        found.append(_Candidate(diffusers_dir / sub, "diffusers folder"))
    if models_dir is not None:
        install = models_dir.parent
        for parts in COMFY_TOKENIZER_FOLDERS[component]:
            found.append(_Candidate(install.joinpath(*parts), "ComfyUI install"))
    return found


def _cache_candidates(
    component: str, repo_id: str | None, cache_dir: Path | None
) -> list[_Candidate]:
    found: list[_Candidate] = []
    if repo_id:
        snapshot = cached_snapshot(repo_id, "model_index.json", cache_dir)
        folder = snapshot / DIFFUSERS_SUBFOLDERS[component] if snapshot else None
        found.append(
            _Candidate(
                folder, f"Hugging Face cache of {repo_id}", _hub_identity(repo_id, component)
            )
        )
    repo, files = CACHE_REPOS[component]
    snapshots = (cached_snapshot(repo, name, cache_dir) for name in files)
    folder = next((s for s in snapshots if s is not None), None)
    found.append(_Candidate(folder, f"Hugging Face cache of {repo}"))
    return found


def _folder_spec(component: str, candidate: _Candidate, trail: Trail) -> WeightSpec | None:
    folder, where = candidate.folder, candidate.where
    if folder is None:
        trail.place(f"{where} (not downloaded)")
        return None
    problem = tokenizer_problem(component, folder)
    trail.place(f"{folder} ({where})" + (f": {problem}" if problem else ""))
    if problem is not None:
        return None
    return WeightSpec(
        component=component,
        source="folder",
        identity=candidate.identity or _tokenizer_identity(folder),
        path=folder,
        label=f"{folder.name} ({where})",
    )


def _tokenizer_identity(folder: Path) -> str:
    """Size and mtime of the tokenizer files only (a HF snapshot also holds model weights)."""
    parts = []
    for name in TOKENIZER_FILES:
        path = folder / name
        if path.is_file():
            stat = path.stat()
            parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return f"tokenizer:{folder.name}:" + ",".join(parts)
