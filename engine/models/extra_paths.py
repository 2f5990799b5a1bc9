"""ComfyUI's extra_model_paths.yaml: the installs and folders it points at.

The file has top-level sections (`comfyui:`, `a111:`, any name), each with a `base_path`
and per-kind folders relative to it (`checkpoints: models/checkpoints`, multi-line `|`
lists allowed). ComfyUI reads a relative base_path from the file's own folder and expands
`~` and environment variables; so do we. Only the places are read here: tokenizers live in
the ComfyUI (or Forge) install such a file belongs to or names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

FILE_NAME = "extra_model_paths.yaml"
TEXT_ENCODER_KINDS = ("text_encoders", "clip")


@dataclass(frozen=True)
class ExtraPaths:
    """What one extra_model_paths.yaml says: its file, the base paths, or why it is unusable."""

    file: Path
    bases: tuple[Path, ...] = ()
    folders: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    problem: str = ""

    def install_roots(self) -> list[Path]:
        """Where a ComfyUI / Forge install may be: the file's folder, each base_path and the
        folder above it (a base_path is often a models/ folder), and two folders above each
        text-encoder folder (<install>/models/text_encoders)."""
        roots = [self.file.parent]
        for base in self.bases:
            roots += [base, base.parent]
        for kind in TEXT_ENCODER_KINDS:
            roots += [folder.parent.parent for folder in self.folders.get(kind, ())]
        return list(dict.fromkeys(roots))


def read_extra_paths(file: Path) -> ExtraPaths:
    """Parse one extra_model_paths.yaml with PyYAML's safe loader; never raises."""
    import yaml  # a dependency of huggingface_hub and transformers

    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        return ExtraPaths(file, problem=f"unreadable ({reason})")
    if not isinstance(data, dict):
        return ExtraPaths(file, problem="no sections with a base_path")
    bases: list[Path] = []
    folders: dict[str, list[Path]] = {}
    for section in data.values():
        if not isinstance(section, dict):
            continue
        base = _path(section.get("base_path"), file.parent)
        if base is not None:
            bases.append(base)
        for kind, value in section.items():
            if kind in ("base_path", "is_default") or not isinstance(value, str):
                continue
            for line in value.splitlines():
                folder = _path(line, base or file.parent)
                if folder is not None:
                    folders.setdefault(str(kind), []).append(folder)
    return ExtraPaths(
        file,
        tuple(dict.fromkeys(bases)),
        {kind: tuple(paths) for kind, paths in folders.items()},
    )


def extra_paths_files(models_dir: Path | None, explicit: Path | None) -> list[Path]:
    """The file given with --extra-model-paths, then one found in the models folder or the
    folder above it (a shared drive's root), without duplicates."""
    found: list[Path] = []
    if explicit is not None:
        found.append(Path(explicit))
    if models_dir is not None:
        for folder in (models_dir, models_dir.parent):
            candidate = folder / FILE_NAME
            if candidate.is_file():
                found.append(candidate)
    return list(dict.fromkeys(found))


def _path(value: object, relative_to: Path) -> Path | None:
    if not isinstance(value, str) or not value.strip():
        return None
    path = Path(os.path.expandvars(os.path.expanduser(value.strip())))
    return Path(os.path.normpath(path if path.is_absolute() else relative_to / path))
