"""Finding and strictly loading a person's LivePortrait files from `<models>/liveportrait/`.

Two public layouts are read, per network the official file first, then Kijai's (as
ComfyUI-AdvancedLivePortrait does; specs/weights/kijai_layout.md):
- official (KwaiVGI/LivePortrait): `base_models/<name>.pth` plain state dicts, and
  `retargeting_models/stitching_retargeting_module.pth`, a dict whose `retarget_shoulder`
  entry is the stitching MLP with `module.`-prefixed keys;
- Kijai (Kijai/LivePortrait_safetensors): flat `<name>.safetensors`; the stitching file holds
  all three MLPs as `retarget_<entry>_module.mlp.N.*`.
`.pth` files are read only with `weights_only=True`, so a file that needs code is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch
from safetensors import safe_open
from torch import nn

from engine.errors import ModelNotFoundError
from engine.expression.networks import LivePortraitNetworks, build_networks
from engine.expression.networks.config import REAL_CONFIG, LivePortraitConfig
from engine.models.checkpoint import CheckpointError, read_header

OFFICIAL, KIJAI = "official", "kijai"
LAYOUT_NAMES = {OFFICIAL: "official LivePortrait .pth layout", KIJAI: "Kijai .safetensors layout"}
NETWORKS = ("appearance", "motion", "warping", "spade", "stitching")
FILE_STEMS = {
    "appearance": "appearance_feature_extractor",
    "motion": "motion_extractor",
    "warping": "warping_module",
    "spade": "spade_generator",
    "stitching": "stitching_retargeting_module",
}
LABELS = {
    "appearance": "appearance feature extractor",
    "motion": "motion extractor",
    "warping": "warping module",
    "spade": "SPADE generator",
    "stitching": "stitching module",
}
STITCHING_ENTRY = "retarget_shoulder"  # the official .pth's entry for the stitching MLP
HOW_TO_GET = (
    "Put the LivePortrait files in a liveportrait folder in one of two layouts: the official "
    "one (base_models/appearance_feature_extractor.pth, motion_extractor.pth, "
    "warping_module.pth, spade_generator.pth and retargeting_models/"
    "stitching_retargeting_module.pth, from KwaiVGI/LivePortrait on Hugging Face) or "
    "Kijai's (appearance_feature_extractor.safetensors, motion_extractor.safetensors, "
    "warping_module.safetensors, spade_generator.safetensors and "
    "stitching_retargeting_module.safetensors, from Kijai/LivePortrait_safetensors)."
)
SHOWN = 3  # how many key names a message lists


def relative_path(network: str, layout: str) -> PurePosixPath:
    """Where `network`'s file sits inside a liveportrait folder in `layout`."""
    stem = FILE_STEMS[network]
    if layout == KIJAI:
        return PurePosixPath(f"{stem}.safetensors")
    folder = "retargeting_models" if network == "stitching" else "base_models"
    return PurePosixPath(folder, f"{stem}.pth")


@dataclass(frozen=True)
class LivePortraitFile:
    """One network's file, its layout and what identifies its contents."""

    network: str
    path: Path
    layout: str
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        """The path inside the liveportrait folder, e.g. `base_models/warping_module.pth`."""
        return str(relative_path(self.network, self.layout))

    @property
    def folder(self) -> Path:
        """The liveportrait folder the file was found in."""
        return self.path.parents[len(relative_path(self.network, self.layout).parts) - 1]


@dataclass(frozen=True)
class LivePortraitFiles:
    """The five files found, one per network (layouts may differ between networks)."""

    appearance: LivePortraitFile
    motion: LivePortraitFile
    warping: LivePortraitFile
    spade: LivePortraitFile
    stitching: LivePortraitFile

    def files(self) -> list[LivePortraitFile]:
        return [getattr(self, network) for network in NETWORKS]

    @property
    def identity(self) -> str:
        """Changes when any file does (names, sizes, mtimes): for cache keys."""
        parts = [f"{f.name}:{f.size}:{f.mtime_ns}" for f in self.files()]
        return "liveportrait:" + "|".join(parts)

    @property
    def label(self) -> str:
        """'<folder> (<layout>)' for the UI."""
        files = self.files()
        roots = dict.fromkeys(str(f.folder) for f in files)
        layouts = dict.fromkeys(LAYOUT_NAMES[f.layout] for f in files)
        return f"{', '.join(roots)} ({' and '.join(layouts)})"


def find_liveportrait_files(folders: list[Path]) -> LivePortraitFiles:
    """Each network's file from the first folder that has it, official layout first.

    `folders` are liveportrait folders (e.g. `<models>/liveportrait`). ModelNotFoundError
    names every missing file, both layouts and every folder searched.
    """
    found = {network: _find_one(folders, network) for network in NETWORKS}
    missing = [network for network, file in found.items() if file is None]
    if missing:
        raise ModelNotFoundError(_missing_message(missing, folders))
    return LivePortraitFiles(**found)


def _find_one(folders: list[Path], network: str) -> LivePortraitFile | None:
    for folder in folders:
        for layout in (OFFICIAL, KIJAI):
            path = Path(folder) / relative_path(network, layout)
            if path.is_file():
                stat = path.stat()
                return LivePortraitFile(network, path, layout, stat.st_size, stat.st_mtime_ns)
    return None


def _missing_message(missing: list[str], folders: list[Path]) -> str:
    wanted = "; ".join(
        f"the {LABELS[n]} ({relative_path(n, OFFICIAL)} or {relative_path(n, KIJAI)})"
        for n in missing
    )
    places = "; ".join(f"{f}" + ("" if Path(f).is_dir() else " (missing)") for f in folders)
    searched = places or "nowhere (no models folder is configured)"
    return f"LivePortrait weights not found: {wanted}. Looked in: {searched}. {HOW_TO_GET}"


def load_networks(
    files: LivePortraitFiles, config: LivePortraitConfig = REAL_CONFIG
) -> LivePortraitNetworks:
    """The five networks with the files' weights (strict: every key, every shape), on the
    CPU in eval mode. A file that cannot be used raises ModelNotFoundError saying why."""
    nets = build_networks(config, device="meta")  # shapes only: the files fill every tensor
    for network, module in nets.modules().items():
        _load_file(getattr(files, network), module)
    return nets.eval()


class _FileProblem(Exception):
    """What is wrong with one file, as the end of a sentence that starts with its name."""


def _load_file(file: LivePortraitFile, module: nn.Module) -> None:
    expected = module.state_dict()
    try:
        tensors = _read_pth(file) if file.layout == OFFICIAL else _read_safetensors(file, expected)
        found = {k: (tuple(v.shape), v.is_floating_point()) for k, v in tensors.items()}
        _check_tensors(found, expected)
        cast = {k: _cast(v, expected[k]) for k, v in tensors.items()}
        _assign(module, cast)
    except _FileProblem as exc:
        raise ModelNotFoundError(
            f"The LivePortrait {LABELS[file.network]} file {file.path} "
            f"({LAYOUT_NAMES[file.layout]}) {exc}. {HOW_TO_GET}"
        ) from None


def _assign(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Strict load_state_dict; the checks above should leave nothing for it to reject."""
    try:
        module.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:
        reason = (str(exc).strip().splitlines() or ["unknown error"])[0][:160]
        raise _FileProblem(f"does not load into the network ({reason})") from None


def _cast(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Floating tensors take the network's dtype (fp16 copies load too); others stay."""
    if tensor.is_floating_point() and tensor.dtype != like.dtype:
        return tensor.to(like.dtype)
    return tensor


# Reading --------------------------------------------------------------------------------


def _read_pth(file: LivePortraitFile) -> dict[str, torch.Tensor]:
    """A plain state dict (base networks) or the `retarget_shoulder` entry, `module.` removed."""
    try:
        data = torch.load(file.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (zip), KeyError, EOFError, ...
        raise _FileProblem(_pth_error(exc)) from None
    if file.network == "stitching":
        if not isinstance(data, dict) or STITCHING_ENTRY not in data:
            raise _FileProblem(f"has no {STITCHING_ENTRY!r} entry ({_describe(data)})")
        data = data[STITCHING_ENTRY]
    if not isinstance(data, dict):
        raise _FileProblem(f"does not hold a state dict ({_describe(data)})")
    odd = [
        str(k) for k, v in data.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))
    ]
    if odd:
        raise _FileProblem(f"holds entries that are not named tensors ({_first(odd)})")
    if file.network == "stitching":
        return {k.replace("module.", ""): v for k, v in data.items()}
    return dict(data)


def _pth_error(exc: Exception) -> str:
    text = str(exc)
    if "weights only" in text.lower() or "weights_only" in text:
        return (
            "is a pickle that needs code to load, which the studio refuses to run (only plain "
            "tensors are read); use the official file again or Kijai's .safetensors"
        )
    reason = (text.strip().splitlines() or [type(exc).__name__])[0][:160]
    return f"cannot be read ({reason}); it may be truncated or damaged"


def _read_safetensors(
    file: LivePortraitFile, expected: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Header first (keys and shapes checked before any data is read), then the tensors."""
    try:
        header = read_header(file.path)
    except CheckpointError as exc:
        raise _FileProblem(str(exc)) from None
    names = _kijai_names(file.network, list(header.shapes))
    floats = {k: _is_float(header.dtypes[old]) for k, old in names.items()}
    _check_tensors({k: (header.shapes[old], floats[k]) for k, old in names.items()}, expected)
    try:
        with safe_open(str(file.path), framework="pt") as handle:
            # Copied out of the file's memory map: views into it can be unaligned (which
            # changes CPU kernels' rounding) and would fault if the file changed under us.
            return {new: handle.get_tensor(old).clone() for new, old in names.items()}
    except Exception as exc:  # SafetensorError is not an OSError
        raise _FileProblem(f"cannot be read ({exc}); it may be truncated or damaged") from None


def _kijai_names(network: str, keys: list[str]) -> dict[str, str]:
    """Our key -> the file's key. The stitching file keeps `retarget_shoulder*` keys with the
    substring `retarget_shoulder_module.` deleted (as AdvancedLivePortrait reads it)."""
    if network != "stitching":
        return {key: key for key in keys}
    prefix = f"{STITCHING_ENTRY}_module."
    return {k.replace(prefix, ""): k for k in keys if k.startswith(STITCHING_ENTRY)}


def _is_float(safetensors_dtype: str) -> bool:
    return safetensors_dtype.startswith("F") or safetensors_dtype == "BF16"


# Checking -------------------------------------------------------------------------------


def _check_tensors(
    found: dict[str, tuple[tuple[int, ...], bool]], expected: dict[str, torch.Tensor]
) -> None:
    """Raise _FileProblem on missing or unexpected keys, a wrong shape or a wrong kind."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    problems = []
    if missing:
        problems.append(f"lacks {len(missing)} of the {len(expected)} tensors ({_first(missing)})")
    if unexpected:
        noun = "tensor" if len(unexpected) == 1 else "tensors"
        problems.append(f"has {len(unexpected)} unexpected {noun} ({_first(unexpected)})")
    for key in (k for k in expected if k in found):
        shape, is_float = found[key]
        want = tuple(expected[key].shape)
        if shape != want:
            problems.append(f"has {key} of shape {list(shape)} where {list(want)} is expected")
        elif is_float != expected[key].is_floating_point():
            kind = "floating-point" if expected[key].is_floating_point() else "integer"
            problems.append(f"has {key} in the wrong dtype ({kind} expected)")
        if len(problems) >= SHOWN:
            break
    if problems:
        raise _FileProblem(
            "does not match the network: " + "; ".join(problems) + " (is it the right file?)"
        )


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN])
    return shown + (", ..." if len(keys) > SHOWN else "")


def _describe(data: object) -> str:
    if isinstance(data, dict):
        return f"its top-level keys are {_first([str(k) for k in data])}"
    return f"it holds a {type(data).__name__}"
