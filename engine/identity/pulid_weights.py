"""Finding and strictly loading a person's PuLID-FLUX file from `<models>/pulid/`.

ComfyUI-PuLID-Flux keeps `pulid_flux_v0.9.1.safetensors` (or v0.9.0) in `models/pulid/`, the
folder this reads. As PuLID does, the keys are grouped by the text before the first "." and
each group loads strictly into its module; every key and shape is checked from the header
before any data is read. The modules are built on the meta device and the file's tensors are
assigned, so a 1.1 GB file is held in memory once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.errors import ModelNotFoundError
from engine.identity.pulid_networks import (
    REAL_PULID,
    PulidConfig,
    PulidModules,
    build_pulid_modules,
)
from engine.models.checkpoint import CheckpointError, Header, read_header, read_tensors

PULID_FOLDER = "pulid"
PREFERRED_FILES = ("pulid_flux_v0.9.1.safetensors", "pulid_flux_v0.9.0.safetensors")
# The file's groups -> PulidModules' attributes (PuLID loads each into `pipeline.<group>`).
GROUPS = ("pulid_encoder", "pulid_ca")
MANIFEST = Path(__file__).with_name("manifests") / "pulid_flux_v0.9.1.json"
HOW_TO_GET = (
    "Download pulid_flux_v0.9.1.safetensors from the guozinan/PuLID repository on Hugging "
    "Face and put it in the pulid folder of your models folder (models/pulid/, where "
    "ComfyUI-PuLID-Flux keeps it)."
)
SHOWN = 3  # how many key names a message lists
ALIGNMENT = 64  # bytes; what fresh CPU allocations get


@dataclass(frozen=True)
class PulidFile:
    """The PuLID-FLUX file found and what identifies its contents."""

    path: Path
    size: int
    mtime_ns: int

    @property
    def identity(self) -> str:
        """Changes when the file does (name, size, mtime): for cache keys."""
        return f"pulid:{self.path.name}:{self.size}:{self.mtime_ns}"


def pulid_folders(models_dir: Path | None) -> list[Path]:
    """The folders searched for a models folder (none when no models folder is set)."""
    return [Path(models_dir) / PULID_FOLDER] if models_dir is not None else []


def pulid_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA (as PuLID runs), float32 elsewhere (CPU kernels for bf16 are slow)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def read_manifest() -> dict[str, tuple[tuple[int, ...], str]]:
    """The published file's layout: key -> (shape, dtype name), in the file's order."""
    data = json.loads(MANIFEST.read_text())
    return {key: (tuple(shape), dtype) for key, (shape, dtype) in data.items()}


def find_pulid_file(folders: list[Path]) -> PulidFile:
    """pulid_flux_v0.9.1, then v0.9.0, then any other `*flux*.safetensors`, from the first
    folder that has one. ModelNotFoundError names the files wanted and the folders searched."""
    for folder in folders:
        for path in _candidates(Path(folder)):
            stat = path.stat()
            return PulidFile(path, stat.st_size, stat.st_mtime_ns)
    raise ModelNotFoundError(_missing_message(folders))


def _candidates(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    preferred = [folder / name for name in PREFERRED_FILES if (folder / name).is_file()]
    others = sorted(
        path
        for path in folder.glob("*.safetensors")
        if "flux" in path.name.lower() and path.is_file() and path not in preferred
    )
    return preferred + others


def _missing_message(folders: list[Path]) -> str:
    places = "; ".join(f"{f}" + ("" if Path(f).is_dir() else " (missing)") for f in folders)
    searched = places or "nowhere (no models folder is configured)"
    others = sorted(p.name for f in folders if Path(f).is_dir() for p in Path(f).glob("*"))
    seen = f" Found only {_first(others)}, which is not PuLID for FLUX." if others else ""
    return (
        f"PuLID-FLUX weights not found ({' or '.join(PREFERRED_FILES)}). "
        f"Looked in: {searched}.{seen} {HOW_TO_GET}"
    )


def load_pulid(
    file: PulidFile,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    config: PulidConfig = REAL_PULID,
) -> PulidModules:
    """The encoder and CA modules with the file's weights (strict: every key, every shape),
    in eval mode on `device`, in `dtype` (default: pulid_dtype(device)).

    A file that cannot be used raises ModelNotFoundError naming it, saying what is wrong
    and what to do."""
    dtype = dtype or pulid_dtype(device)
    modules = build_pulid_modules(config, device="meta", dtype=dtype)
    try:
        header = read_header(file.path)
        groups = _group(header, modules)
        for group, expected in groups.items():
            _check_shapes(header, group, expected)
        for group in groups:
            tensors = read_tensors(header, prefix=f"{group}.", dtype=dtype)
            _assign(getattr(modules, group), _owned(tensors, torch.device(device)))
    except (CheckpointError, _FileProblem) as exc:
        raise ModelNotFoundError(f"The PuLID-FLUX file {file.path} {exc}. {HOW_TO_GET}") from None
    return modules.to(device).eval()


class _FileProblem(Exception):
    """What is wrong with the file, as the end of a sentence that starts with its name."""


def _group(header: Header, modules: PulidModules) -> dict[str, dict[str, torch.Tensor]]:
    """Group -> the module's expected state_dict; keys of unknown groups are a problem."""
    found = {key.split(".", 1)[0] for key in header.shapes}
    unknown = sorted(found - set(GROUPS))
    if unknown:
        keys = [k for k in header.shapes if k.split(".", 1)[0] in unknown]
        raise _FileProblem(
            f"has {len(keys)} unexpected tensors outside {' and '.join(GROUPS)} ({_first(keys)});"
            " is it PuLID for FLUX?"
        )
    return {group: getattr(modules, group).state_dict() for group in GROUPS}


def _check_shapes(header: Header, group: str, expected: dict[str, torch.Tensor]) -> None:
    """Raise _FileProblem on a missing or unexpected key, a wrong shape or a non-float."""
    prefix = f"{group}."
    found = {k[len(prefix) :]: k for k in header.shapes if k.startswith(prefix)}
    missing = [prefix + k for k in expected if k not in found]
    unexpected = [found[k] for k in found if k not in expected]
    problems = []
    if missing:
        problems.append(f"lacks {len(missing)} of the {len(expected)} {group} tensors")
        problems[-1] += f" ({_first(missing)})"
    if unexpected:
        problems.append(f"has {len(unexpected)} unexpected tensors ({_first(unexpected)})")
    for key in (k for k in expected if k in found):
        name = found[key]
        shape, want = header.shapes[name], tuple(expected[key].shape)
        if shape != want:
            problems.append(f"has {name} of shape {list(shape)} where {list(want)} is expected")
        elif not _is_float(header.dtypes[name]):
            problems.append(f"has {name} in {header.dtypes[name]} (floats expected)")
        if len(problems) >= SHOWN:
            break
    if problems:
        raise _FileProblem(
            "does not match PuLID-FLUX: " + "; ".join(problems) + " (is it the right file?)"
        )


def _owned(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Each tensor on `device` in memory of its own, one at a time (peak: one extra tensor).

    Tensors read without a dtype change can be unaligned views into the file's memory map,
    which changes CPU kernels' rounding and would fault if the file changed under us."""
    for key, tensor in tensors.items():
        if device.type != "cpu":
            tensors[key] = tensor.to(device)
        elif tensor.data_ptr() % ALIGNMENT:
            tensors[key] = tensor.clone()
    return tensors


def _assign(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Strict load_state_dict; the checks above should leave nothing for it to reject."""
    try:
        module.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:
        reason = (str(exc).strip().splitlines() or ["unknown error"])[0][:160]
        raise _FileProblem(f"does not load into PuLID's modules ({reason})") from None


def _is_float(safetensors_dtype: str) -> bool:
    return safetensors_dtype.startswith("F") or safetensors_dtype == "BF16"


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN])
    return shown + (", ..." if len(keys) > SHOWN else "")
