"""Finding the CLIP-L and T5 tokenizers, which a ComfyUI models folder does not hold.

Searched in order: the folder the text encoder came from, the diffusers folder (tokenizer/,
tokenizer_2/), the places on disk tokenizer_places.py lists for the models folder
(<models>/tokenizers/, ComfyUI / Desktop / SwarmUI / Stability Matrix / Forge installs around
it or named by extra_model_paths.yaml), the repo's cached snapshot, the Hugging Face cache of
openai/clip-vit-large-patch14 and google/t5-v1_1-xxl; and, when downloads are allowed (no
--offline, no HF_HUB_OFFLINE), a one-time download of just the tokenizer files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from engine.models.locate import DIFFUSERS_SUBFOLDERS, cached_snapshot, hub_offline
from engine.models.specs import Trail, WeightSpec
from engine.models.tokenizer_places import Place, disk_places

TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
# The public repos whose tokenizers FLUX.1 uses, and a file that marks each as cached.
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


def find_tokenizer(
    component: str,
    *,
    diffusers_dir: Path | None,
    encoder: WeightSpec | None,
    models_dir: Path | None,
    repo_id: str | None,
    cache_dir: Path | None,
    trail: Trail,
    extra_paths: Path | None = None,
    offline: bool = False,
) -> WeightSpec | None:
    """The first usable tokenizer folder, else a download spec when downloads are allowed."""
    places = [
        *_own_places(component, diffusers_dir, encoder),
        *disk_places(component, models_dir, extra_paths, trail),
        *_cache_places(component, repo_id, cache_dir),
    ]
    for place in places:
        spec = _folder_spec(component, place, trail)
        if spec is not None:
            return spec
    repo = CACHE_REPOS[component][0]
    if offline or hub_offline():
        switch = "--offline" if offline else "HF_HUB_OFFLINE"
        trail.place(f"Hugging Face repo {repo} (not downloaded: {switch} is set)")
        return None
    if repo_id:
        sub = DIFFUSERS_SUBFOLDERS[component]
        trail.place(f"Hugging Face repo {repo_id}/{sub} (downloaded on first use)")
        identity = _hub_identity(repo_id, sub)
        label = f"{repo_id}/{sub}"
        return WeightSpec(component, "hub", identity, repo_id=repo_id, subfolder=sub, label=label)
    trail.place(f"Hugging Face repo {repo} (its tokenizer files downloaded once, on first use)")
    label = f"{repo} (downloaded on first use)"
    return WeightSpec(component, "hub", _hub_identity(repo, ""), repo_id=repo, label=label)


def _hub_identity(repo_id: str, subfolder: str) -> str:
    """The same before and after the download, so a first download reloads nothing."""
    return f"hub:{repo_id}:{subfolder}"


def _own_places(
    component: str, diffusers_dir: Path | None, encoder: WeightSpec | None
) -> list[Place]:
    sub = DIFFUSERS_SUBFOLDERS[component]
    found: list[Place] = []
    if encoder is not None and encoder.source == "diffusers" and encoder.path is not None:
        found.append(Place(encoder.path / sub, "the text encoder's folder"))
    if diffusers_dir is not None:
        found.append(Place(diffusers_dir / sub, "diffusers folder"))
    return found


def _cache_places(component: str, repo_id: str | None, cache_dir: Path | None) -> list[Place]:
    found: list[Place] = []
    sub = DIFFUSERS_SUBFOLDERS[component]
    if repo_id:
        snapshot = cached_snapshot(repo_id, "model_index.json", cache_dir)
        folder = snapshot / sub if snapshot else None
        where = f"Hugging Face cache of {repo_id}"
        found.append(Place(folder, where, identity=_hub_identity(repo_id, sub)))
    repo, files = CACHE_REPOS[component]
    snapshots = (cached_snapshot(repo, name, cache_dir) for name in files)
    folder = next((s for s in snapshots if s is not None), None)
    where = f"Hugging Face cache of {repo}"
    found.append(Place(folder, where, identity=_hub_identity(repo, "")))
    return found


def _folder_spec(component: str, place: Place, trail: Trail) -> WeightSpec | None:
    folder, where = place.folder, place.where
    if folder is None:
        trail.place(f"{where} (not downloaded)")
        return None
    if not place.listed and not folder.is_dir():
        if place.summary:
            trail.place(place.summary)
        return None
    problem = tokenizer_problem(component, folder)
    trail.place(f"{folder} ({where})" + (f": {problem}" if problem else ""))
    if problem is not None:
        return None
    return WeightSpec(
        component=component,
        source="folder",
        identity=place.identity or _tokenizer_identity(folder),
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
