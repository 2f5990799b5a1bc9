"""The published LivePortrait checkpoints' layouts (engine/expression/manifests/*.json: every
state_dict key -> [shape, dtype], in order) and zero-filled files written from them.

The manifests were made from the upstream networks (specs/weights/README.md); files written
from them have the published byte sizes, so tests can check strict loading in both layouts
without anyone's real weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file

from engine.expression.networks import LivePortraitNetworks
from engine.expression.weights import (
    FILE_STEMS,
    KIJAI,
    NETWORKS,
    OFFICIAL,
    STITCHING_ENTRY,
    relative_path,
)

MANIFEST_DIR = Path(__file__).with_name("manifests")
KIJAI_STITCHING = "kijai_stitching_retargeting_module"
Manifest = dict[str, tuple[tuple[int, ...], str]]


def read_manifest(name: str, entry: str | None = None) -> Manifest:
    """key -> (shape, dtype name) of manifest `name` (e.g. "warping_module"), in order.

    The official stitching manifest has three entries (retarget_shoulder / _mouth / _eye);
    `entry` picks one. Flat manifests take no entry.
    """
    data = json.loads((MANIFEST_DIR / f"{name}.json").read_text())
    nested = all(isinstance(value, dict) for value in data.values())
    if nested != (entry is not None):
        need = f"an entry ({', '.join(data)})" if nested else "no entry"
        raise ValueError(f"manifest {name!r} needs {need}")
    if entry is not None:
        data = data[entry]
    return {key: (tuple(shape), dtype) for key, (shape, dtype) in data.items()}


def zeros_from(manifest: Manifest) -> dict[str, torch.Tensor]:
    """Zero tensors with the manifest's keys (in order), shapes and dtypes."""
    return {
        key: torch.zeros(shape, dtype=getattr(torch, dtype))
        for key, (shape, dtype) in manifest.items()
    }


def write_zero_files(
    folder: Path, layout: str, networks: Iterable[str] = NETWORKS
) -> dict[str, Path]:
    """Write zero-filled files for `networks` in `layout` (OFFICIAL or KIJAI) into the
    liveportrait folder `folder`, laid out exactly as the published ones."""
    return {n: _save(folder, n, layout, _zero_contents(n, layout)) for n in networks}


def write_network_files(nets: LivePortraitNetworks, folder: Path, layout: str) -> dict[str, Path]:
    """Write our networks' weights as the published files would hold them (only the
    stitching MLP of the three retargeting ones, which is all the loader reads)."""
    return {
        network: _save(folder, network, layout, _layout_contents(network, layout, module))
        for network, module in nets.modules().items()
    }


def _zero_contents(network: str, layout: str) -> dict:
    stem = FILE_STEMS[network]
    if network != "stitching":
        return zeros_from(read_manifest(stem))
    if layout == KIJAI:
        return zeros_from(read_manifest(KIJAI_STITCHING))
    entries = json.loads((MANIFEST_DIR / f"{stem}.json").read_text())
    return {entry: zeros_from(read_manifest(stem, entry)) for entry in entries}


def _layout_contents(network: str, layout: str, module: torch.nn.Module) -> dict:
    state = {key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}
    if network != "stitching":
        return state
    if layout == KIJAI:
        return {f"{STITCHING_ENTRY}_module.{key}": value for key, value in state.items()}
    return {STITCHING_ENTRY: {f"module.{key}": value for key, value in state.items()}}


def _save(folder: Path, network: str, layout: str, contents: dict) -> Path:
    if layout not in (OFFICIAL, KIJAI):
        raise ValueError(f"unknown layout {layout!r} (use {OFFICIAL!r} or {KIJAI!r})")
    path = Path(folder) / relative_path(network, layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == OFFICIAL:
        torch.save(contents, path)
    else:
        save_file(contents, str(path), metadata={"format": "pt"})
    return path
