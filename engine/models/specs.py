"""Identifiers of weights found on disk, and the trail of places searched for them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import ModelNotFoundError
from engine.models.detect import Detected

COMPONENT_NAMES = {
    "transformer": "Flux transformer",
    "fill": "FLUX.1 Fill transformer",
    "vae": "Flux VAE",
    "clip": "CLIP-L text encoder",
    "t5": "T5-XXL text encoder",
    "clip_tokenizer": "CLIP-L tokenizer",
    "t5_tokenizer": "T5 tokenizer",
}

HOW_TO_GET_WEIGHTS = (
    "To get weights: put the Flux files in a ComfyUI-style models folder (diffusion_models/ "
    "or unet/: e.g. flux1-dev-fp8.safetensors; vae/: ae.safetensors or ae.sft; text_encoders/ "
    "or clip/: clip_l.safetensors and t5xxl_fp16.safetensors or t5xxl_fp8_e4m3fn(_scaled)"
    ".safetensors; the tokenizers are found in a ComfyUI, Forge or SwarmUI install around that "
    "folder or in <models>/tokenizers/, or downloaded once while online; GGUF files "
    "are not supported), or point the studio at a diffusers FLUX.1 folder, "
    "or give a Hugging Face repo id (e.g. black-forest-labs/FLUX.1-dev, a gated repo: accept "
    "its licence and log in) to download on first use while online. Run with --tiny for the "
    "labelled demo on tiny random models."
)


@dataclass(frozen=True)
class WeightSpec:
    """Where one component's weights or tokenizer are, and how to read them (no data read)."""

    component: str
    source: str  # "tiny" | "file" | "diffusers" | "hub"; tokenizers also "folder"
    identity: str
    path: Path | None = None  # the single file, or the folder holding `subfolder`
    subfolder: str = ""
    repo_id: str = ""
    detected: Detected | None = None
    label: str = ""


@dataclass
class Trail:
    """Every place searched and every file rejected, for error messages and describe()."""

    places: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def place(self, text: str) -> None:
        if text not in self.places:
            self.places.append(text)

    def reject(self, path: Path, reason: str) -> None:
        self.rejected.append(f"{path.name} {reason}")

    def summary(self) -> str:
        text = (
            "Looked in: "
            + (
                "; ".join(self.places)
                if self.places
                else "nowhere (no models folder, diffusers folder or repo id configured)"
            )
            + "."
        )
        if self.rejected:
            text += " Skipped: " + "; ".join(self.rejected) + "."
        return text

    def error(self, headline: str) -> ModelNotFoundError:
        return ModelNotFoundError(f"{headline} {self.summary()} {HOW_TO_GET_WEIGHTS}")


def file_identity(source: str, root: Path, path: Path) -> str:
    """'<source>:<path relative to root>:<size>:<mtime_ns>': changes when the file does."""
    stat = path.stat()
    return f"{source}:{path.relative_to(root).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}"


def folder_identity(source: str, folder: Path, name: str) -> str:
    """Identity of a model folder: total size and newest mtime of the files in it."""
    size = newest = 0
    for entry in sorted(folder.rglob("*")):
        if entry.is_file():
            stat = entry.stat()
            size += stat.st_size
            newest = max(newest, stat.st_mtime_ns)
    return f"{source}:{name}:{size}:{newest}"


def inside(root: Path, name: str) -> Path | None:
    """root/name when it stays inside root (no absolute paths, no '..' escapes), else None.

    The check is lexical on purpose: models folders often hold symlinks to other drives.
    """
    if not name or os.path.isabs(name):
        return None
    base = Path(os.path.normpath(root))
    candidate = Path(os.path.normpath(base / name))
    if candidate == base or base not in candidate.parents:
        return None
    return candidate
