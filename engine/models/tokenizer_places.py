"""Where the CLIP-L and T5 tokenizers may be on disk, for any models folder.

A ComfyUI-style models folder holds no tokenizers: they ship with the programs around it.
Searched, in order: <models>/tokenizers/ (the documented place to drop them); then, from the
folder above the models folder up to three levels, every install an extra_model_paths.yaml
names, and ComfyUI Desktop's installed app: a ComfyUI install (a checkout, the portable
build's ComfyUI/, ComfyUI Desktop's resources/ComfyUI, SwarmUI's dlbackend/comfy/ComfyUI,
Stability Matrix's Packages/ComfyUI) and Forge's backend/huggingface. Installs are found by
their structure, not by one operating system's path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.models.extra_paths import extra_paths_files, read_extra_paths
from engine.models.specs import Trail

# <models>/tokenizers/<name>: the first name is the documented one, the others are accepted.
TOKENIZER_NAMES = {
    "clip_tokenizer": ("clip-vit-large-patch14", "openai/clip-vit-large-patch14", "clip_l"),
    "t5_tokenizer": ("t5-v1_1-xxl", "google/t5-v1_1-xxl", "t5xxl"),
}
COMFY_TOKENIZER_FOLDERS = {
    "clip_tokenizer": (("comfy", "sd1_tokenizer"),),
    "t5_tokenizer": (("comfy", "text_encoders", "t5_tokenizer"), ("comfy", "t5_tokenizer")),
}
# A ComfyUI install relative to a folder: the folder itself, a checkout in it, ComfyUI
# Desktop's bundled copy, SwarmUI's backend, Stability Matrix's package.
COMFY_INSTALLS = (
    "",
    "ComfyUI",
    "resources/ComfyUI",
    "Resources/ComfyUI",
    "dlbackend/comfy/ComfyUI",
    "Packages/ComfyUI",
)
FORGE_HF = ("backend", "huggingface")
FORGE_FOLDERS = {
    "clip_tokenizer": (
        "openai/clip-vit-large-patch14",
        "black-forest-labs/FLUX.1-dev/tokenizer",
        "black-forest-labs/FLUX.1-schnell/tokenizer",
    ),
    "t5_tokenizer": (
        "google/t5-v1_1-xxl",
        "black-forest-labs/FLUX.1-dev/tokenizer_2",
        "black-forest-labs/FLUX.1-schnell/tokenizer_2",
    ),
}
LEVELS_UP = 3
MAC_APPS = Path("/Applications")
LAYOUTS = "ComfyUI, Desktop, SwarmUI, Stability Matrix and Forge layouts"
AROUND = ""  # a folder around the models folder: no reason to add


@dataclass(frozen=True)
class Place:
    """One folder that may hold a tokenizer. `listed`: named in "Looked in" even when it
    does not exist; otherwise a missing folder only adds its `summary` line."""

    folder: Path | None  # None: a repo that is not in the Hugging Face cache
    where: str
    listed: bool = True
    summary: str = ""
    identity: str = ""  # fixed identity (a repo's tokenizer: the same cached or downloaded)


def dropped_in(component: str, models_dir: Path) -> Path:
    """The documented folder a person drops a tokenizer into: <models>/tokenizers/<name>."""
    return models_dir / "tokenizers" / TOKENIZER_NAMES[component][0]


def disk_places(
    component: str, models_dir: Path | None, extra_paths: Path | None, trail: Trail
) -> list[Place]:
    """Every on-disk place for `component`'s tokenizer around `models_dir`, in search order."""
    places: list[Place] = []
    roots: list[tuple[Path, str]] = []
    if models_dir is not None:
        folder = models_dir / "tokenizers"
        for index, name in enumerate(TOKENIZER_NAMES[component]):
            places.append(Place(folder / name, "the models folder's tokenizers/", index == 0))
        # A relative models folder keeps its relative look in messages; the levels above
        # it come from its absolute path (Path("models").parents stops at ".").
        above = list(models_dir.absolute().parents)[1:LEVELS_UP]
        roots += [(root, AROUND) for root in (models_dir.parent, *above)]
    for file in extra_paths_files(models_dir, extra_paths):
        extra = read_extra_paths(file)
        if extra.problem:
            trail.place(f"{file} ({extra.problem})")
            continue
        roots += [(root, f"named by {file}") for root in extra.install_roots()]
    roots += [(root, "ComfyUI Desktop") for root in desktop_installs()]
    beside = models_dir.parent if models_dir is not None else None
    seen: set[Path] = set()
    for root, why in roots:
        if root not in seen:
            seen.add(root)
            places += _layout_places(component, root, why, listed=root == beside)
    return places


def _layout_places(component: str, root: Path, why: str, listed: bool) -> list[Place]:
    """The ComfyUI and Forge tokenizer folders under `root`; only a ComfyUI install right
    beside the models folder is listed path by path (the others: one summary line)."""
    summary = f"{root} ({why}; {LAYOUTS})" if why else f"{root} ({LAYOUTS})"
    places = []
    for install in COMFY_INSTALLS:
        base = root / install if install else root
        where = "ComfyUI install" if not install else f"ComfyUI install ({install})"
        for parts in COMFY_TOKENIZER_FOLDERS[component]:
            show = listed and not install
            places.append(Place(base.joinpath(*parts), where, show, "" if show else summary))
    forge = root.joinpath(*FORGE_HF)
    for sub in FORGE_FOLDERS[component]:
        places.append(Place(forge / sub, "Forge", False, summary))
    return places


def desktop_installs() -> list[Path]:
    """ComfyUI Desktop's bundled ComfyUI, found by structure under the usual app folders
    (Windows: %LOCALAPPDATA%/Programs/<app>/resources/ComfyUI; macOS: <app>.app/Contents/
    Resources/ComfyUI)."""
    bases: list[tuple[Path, str]] = []
    local = os.environ.get("LOCALAPPDATA")
    if local:
        bases.append((Path(local) / "Programs", "*/resources/ComfyUI"))
    bases.append((MAC_APPS, "*.app/Contents/Resources/ComfyUI"))
    home = os.environ.get("HOME")
    if home:
        bases.append((Path(home) / "Applications", "*.app/Contents/Resources/ComfyUI"))
    found: list[Path] = []
    for base, pattern in bases:
        if base.is_dir():
            found += sorted(p for p in base.glob(pattern) if (p / "comfy").is_dir())
    return found
