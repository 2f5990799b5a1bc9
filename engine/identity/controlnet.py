"""Finding and strictly loading a FLUX.1 ControlNet from `<models>/controlnet/`.

Two layouts are read, both with diffusers' key names, as InstantX and Shakker-Labs publish them:
a folder holding config.json and diffusion_pytorch_model.safetensors, and a
single renamed file such as FLUX.1-dev-ControlNet-Union-Pro-2.0.safetensors, whose config
(block counts, widths, union modes) is read from the header's keys and shapes. Every key and
shape is checked against FluxControlNetModel before any weight is read; loading goes through
diffusers' from_pretrained (a single file through a temporary config folder beside it).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import FluxControlNetModel

from engine.errors import ModelNotFoundError
from engine.models.checkpoint import CheckpointError, Header, read_header
from engine.models.loaders import cast
from engine.models.specs import file_identity, folder_identity, inside
from engine.models.tiny import TINY_TRANSFORMER, seeded

CONTROLNET_FOLDER = "controlnet"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
PREFERRED_NAMES = ("flux.1-dev-controlnet-union-pro-2.0", "flux.1-dev-controlnet-union", "flux")
# The pose index of the 10-mode union models (InstantX Union, Shakker-Labs Union-Pro model
# cards: canny 0, tile 1, depth 2, blur 3, pose 4, gray 5, low quality 6). Union-Pro-2.0
# has no mode embedding: it reads the mode from the control image itself.
UNION_POSE_MODE = 4
# width -> (family, axes_dims_rope); RoPE axes cannot be read from any weight shape.
ROPE_AXES = {3072: ("flux1", (16, 56, 56)), 32: ("tiny", (4, 4, 8))}
HOW_TO_GET = (
    "Put a FLUX.1 ControlNet in the controlnet folder of your models folder (models/controlnet/): "
    "either the folder as published (config.json + diffusion_pytorch_model.safetensors, e.g. "
    "Shakker-Labs/FLUX.1-dev-ControlNet-Union-Pro-2.0) or its .safetensors file renamed, e.g. "
    "FLUX.1-dev-ControlNet-Union-Pro-2.0.safetensors."
)
SHOWN = 3  # how many key names a message lists
INCOMPLETE = "a ControlNet that does not fit FluxControlNetModel (damaged, or another kind)"
TINY_CONTROLNET: dict[str, Any] = {**TINY_TRANSFORMER, "num_mode": 10}
TINY_SEED = 1021
_ANCHOR = "controlnet_x_embedder.weight"
_TEXT_KEY = "time_text_embed.text_embedder.linear_1.weight"
# Keys the config is read from (the strict check then covers every other key).
_REQUIRED = ("x_embedder.weight", "context_embedder.weight", _TEXT_KEY)
_LOAD_ERRORS = (KeyError, ValueError, RuntimeError, IndexError, TypeError, OSError)


@dataclass(frozen=True)
class ControlNetLayout:
    """What a ControlNet file holds: its layout, family and FluxControlNetModel config."""

    layout: str  # "diffusers folder" | "diffusers file" | "tiny"
    family: str  # "flux1" | "tiny"
    config: tuple[tuple[str, Any], ...]

    def dims(self) -> dict[str, Any]:
        return dict(self.config)

    @property
    def num_mode(self) -> int | None:
        return self.dims().get("num_mode")

    @property
    def pose_mode(self) -> int | None:
        """The union mode for pose; None for a model without a mode embedding."""
        return None if self.num_mode is None else UNION_POSE_MODE

    def describe(self) -> str:
        d = self.dims()
        modes = f"{d['num_mode']} union modes" if d.get("num_mode") else "no mode embedding"
        return (
            f"{self.family} ControlNet ({self.layout}): {d['num_layers']} double + "
            f"{d['num_single_layers']} single blocks, {modes}"
        )


@dataclass(frozen=True)
class ControlNetSpec:
    """Where a ControlNet is (a folder or a single file) and what it holds; no data read."""

    source: str  # "folder" | "file" | "tiny"
    path: Path | None
    identity: str
    layout: ControlNetLayout
    label: str


def frozen_config(config: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Config items, sorted and hashable (JSON lists become tuples)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in config.items()))


def detect_controlnet(header: Header) -> ControlNetLayout | str:
    """The FluxControlNetModel config a diffusers-layout header describes, or why it is not one."""
    if header.prefix_of(_ANCHOR) != "":
        return _not_a_controlnet(header)
    lacking = [key for key in _REQUIRED if not header.has(key)]
    if lacking:
        return f"a ControlNet without {lacking[0]}"
    width, in_channels = header.shapes["x_embedder.weight"]
    family = ROPE_AXES.get(width)
    if family is None:
        return f"a ControlNet of width {width}, neither FLUX.1 (3072) nor the tiny test model"
    if header.has("input_hint_block.conv_in.weight"):
        return "a pixel-input ControlNet (XLabs style, input hint block); use InstantX/Shakker ones"
    control_channels = header.shapes[_ANCHOR][1]
    if control_channels != in_channels:
        return f"a ControlNet taking {control_channels} control channels (an inpainting one?)"
    config = _config_from_header(header, width, in_channels, family[1])
    mode = config["num_mode"]
    if mode is not None and mode <= UNION_POSE_MODE:
        return f"a union ControlNet with {mode} modes, whose pose mode is not known"
    return ControlNetLayout("diffusers file", family[0], frozen_config(config))


def _config_from_header(
    header: Header, width: int, in_channels: int, axes: tuple[int, ...]
) -> dict[str, Any]:
    head_dim = _head_dim(header, width)
    mode_key = "controlnet_mode_embedder.weight"
    return {
        "patch_size": 1,
        "in_channels": in_channels,
        "num_layers": header.count_blocks("transformer_blocks."),
        "num_single_layers": header.count_blocks("single_transformer_blocks."),
        "attention_head_dim": head_dim,
        "num_attention_heads": width // head_dim,
        "joint_attention_dim": header.shapes["context_embedder.weight"][1],
        "pooled_projection_dim": header.shapes[_TEXT_KEY][1],
        "guidance_embeds": header.has("time_text_embed.guidance_embedder.linear_1.weight"),
        "axes_dims_rope": axes,
        "num_mode": header.shapes[mode_key][0] if header.has(mode_key) else None,
    }


def _head_dim(header: Header, width: int) -> int:
    """The attention head size: the length of the per-head RMSNorm of q (FLUX.1's is 128)."""
    for stem in ("transformer_blocks", "single_transformer_blocks"):
        key = f"{stem}.0.attn.norm_q.weight"
        if header.has(key):
            return header.shapes[key][0]
    return 128 if width % 128 == 0 else width


def _not_a_controlnet(header: Header) -> str:
    keys = header.shapes
    if any(k.startswith("double_blocks.") for k in keys) and "controlnet_blocks.0.weight" in keys:
        return "an XLabs-format Flux ControlNet (BFL keys); use InstantX/Shakker diffusers ones"
    if any("input_blocks." in k or "controlnet_cond_embedding" in k for k in keys):
        return "an SD1.5/SDXL ControlNet, not a Flux ControlNet"
    if any(k.endswith(("proj_out.weight", "final_layer.linear.weight")) for k in keys):
        return "a Flux transformer, not a ControlNet (it belongs in diffusion_models/)"
    return "not a Flux ControlNet in diffusers layout"


def find_controlnets(models_dir: Path) -> tuple[list[ControlNetSpec], list[str]]:
    """Every usable ControlNet in `<models>/controlnet/` (preferred names first), and why the
    other files there were skipped."""
    root = Path(models_dir) / CONTROLNET_FOLDER
    found: list[ControlNetSpec] = []
    skipped: list[str] = []
    if not root.is_dir():
        return found, [f"{root} does not exist"]
    for path in _candidates(root):
        spec = controlnet_spec(Path(models_dir), path)
        if isinstance(spec, str):
            skipped.append(f"{path.relative_to(root)} {spec}")
        else:
            found.append(spec)
    return found, skipped


def find_controlnet(models_dir: Path, name: str = "") -> ControlNetSpec:
    """The named ControlNet (a file or folder inside controlnet/), or the first usable one."""
    root = Path(models_dir) / CONTROLNET_FOLDER
    if name:
        path = inside(root, name)
        if path is None or not path.exists():
            raise ModelNotFoundError(f"No ControlNet {name!r} in {root}. {HOW_TO_GET}")
        spec = controlnet_spec(Path(models_dir), path)
        if isinstance(spec, str):
            raise ModelNotFoundError(f"The ControlNet {name!r} ({path}) {spec}. {HOW_TO_GET}")
        return spec
    found, skipped = find_controlnets(models_dir)
    if not found:
        why = f" Skipped: {'; '.join(skipped)}." if skipped else ""
        raise ModelNotFoundError(f"No FLUX.1 ControlNet found in {root}.{why} {HOW_TO_GET}")
    return found[0]


def _candidates(root: Path) -> list[Path]:
    """Diffusers folders (holding config.json) and loose .safetensors files, ranked by name."""
    paths: set[Path] = set()
    for path in root.rglob("*.safetensors"):
        in_folder = path.name == WEIGHTS_NAME and (path.parent / "config.json").is_file()
        paths.add(path.parent if in_folder else path)

    def rank(path: Path) -> tuple[int, str]:
        lower = path.name.lower()
        hit = next((i for i, s in enumerate(PREFERRED_NAMES) if lower.startswith(s)), None)
        return (len(PREFERRED_NAMES) if hit is None else hit, str(path))

    return sorted(paths, key=rank)


def controlnet_spec(models_dir: Path, path: Path) -> ControlNetSpec | str:
    """The spec for a ControlNet folder or file, or why it is not a usable one ("is ...")."""
    try:
        header = read_header(weights_file(path))
    except CheckpointError as exc:
        return str(exc)
    layout = detect_controlnet(header)
    if isinstance(layout, ControlNetLayout) and path.is_dir():
        layout = _folder_layout(path, layout)
    if isinstance(layout, str):
        return f"is {layout}"
    problem = check_fits_header(layout, header)
    if problem is not None:
        return f"is {INCOMPLETE}: it {problem}"
    if path.is_dir():
        identity = folder_identity("controlnet", path, path.name)
        return ControlNetSpec("folder", path, identity, layout, path.name)
    identity = file_identity("controlnet", models_dir, path)
    return ControlNetSpec("file", path, identity, layout, path.name)


def weights_file(path: Path) -> Path:
    """The weights of a ControlNet folder, or the single file itself."""
    return path / WEIGHTS_NAME if path.is_dir() else path


def _folder_layout(folder: Path, from_header: ControlNetLayout) -> ControlNetLayout | str:
    """The config from_pretrained will use: the folder's config.json, defaults filled in."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"a folder with an unreadable config.json ({exc})"
    if not isinstance(config, dict) or config.get("_class_name") != "FluxControlNetModel":
        return "a folder whose config.json is not a FluxControlNetModel config"
    try:
        full = _meta_model(config).config
    except _LOAD_ERRORS as exc:
        return f"a folder whose config.json does not build a FluxControlNetModel ({exc})"
    dims = {key: full[key] for key in from_header.dims()}
    return ControlNetLayout("diffusers folder", from_header.family, frozen_config(dims))


def _meta_model(config: dict[str, Any]) -> FluxControlNetModel:
    """The model a config describes, without memory for its weights."""
    with torch.device("meta"):
        return FluxControlNetModel.from_config(config)


def check_fits_header(layout: ControlNetLayout, header: Header) -> str | None:
    """Why the header's keys or shapes do not fit the config (None when they all do)."""
    expected = {k: tuple(v.shape) for k, v in _meta_model(layout.dims()).state_dict().items()}
    found = header.shapes
    problems = {
        "lacks": sorted(set(expected) - set(found)),
        "has unexpected": sorted(set(found) - set(expected)),
        "has misshapen": sorted(k for k in set(expected) & set(found) if found[k] != expected[k]),
    }
    for what, keys in problems.items():
        if keys:
            return f"{what} tensors ({len(keys)}, e.g. {', '.join(keys[:SHOWN])})"
    return None


def load_controlnet(
    spec: ControlNetSpec, dtype: torch.dtype = torch.float32
) -> FluxControlNetModel:
    """The ControlNet in `dtype`, loaded strictly; a file that does not fit raises
    ModelNotFoundError naming it and what to do."""
    if spec.source == "tiny":
        return cast(build_tiny_controlnet(**spec.layout.dims()), dtype)
    assert spec.path is not None
    header = read_header(weights_file(spec.path))
    problem = check_fits_header(spec.layout, header)
    if problem is None:
        try:
            return _from_pretrained(spec, dtype)
        except _LOAD_ERRORS as exc:
            problem = f"cannot be loaded ({' '.join(str(exc).split())[:200]})"
    raise ModelNotFoundError(
        f"The ControlNet {spec.label} ({spec.path}) is {INCOMPLETE}: it {problem}. Download it "
        f"again or use another one. {HOW_TO_GET}"
    )


def _from_pretrained(spec: ControlNetSpec, dtype: torch.dtype) -> FluxControlNetModel:
    assert spec.path is not None
    # fp32 is what diffusers builds in already; passing it only adds a "kept in fp32" log line.
    kwargs = {} if dtype == torch.float32 else {"torch_dtype": dtype}
    if spec.source == "folder":
        return _strict(str(spec.path), kwargs)
    with tempfile.TemporaryDirectory(prefix="flux-controlnet-") as folder:
        body = {"_class_name": "FluxControlNetModel", **spec.layout.dims()}
        (Path(folder) / "config.json").write_text(json.dumps(body), encoding="utf-8")
        _link(spec.path, Path(folder) / WEIGHTS_NAME)
        return _strict(folder, kwargs)


def _strict(folder: str, kwargs: dict[str, Any]) -> FluxControlNetModel:
    model, info = FluxControlNetModel.from_pretrained(
        folder, local_files_only=True, output_loading_info=True, **kwargs
    )
    for what in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(what):
            raise ValueError(f"{what.replace('_', ' ')}: {info[what][:SHOWN]}")
    return model.eval()


def _link(target: Path, link: Path) -> None:
    """A symlink to the weights (a hard link where symlinks are not allowed)."""
    try:
        os.symlink(target.resolve(), link)
    except OSError:
        os.link(target.resolve(), link)


def tiny_controlnet_spec(num_mode: int | None = TINY_CONTROLNET["num_mode"]) -> ControlNetSpec:
    """The spec of the tiny random ControlNet (tests and the labelled demo)."""
    layout = ControlNetLayout(
        "tiny", "tiny", frozen_config({**TINY_CONTROLNET, "num_mode": num_mode})
    )
    return ControlNetSpec("tiny", None, f"tiny:controlnet:{num_mode}", layout, "tiny ControlNet")


def build_tiny_controlnet(**overrides: Any) -> FluxControlNetModel:
    """A tiny random FluxControlNetModel fitting the tiny Flux transformer, from a fixed seed.

    diffusers zero-initialises the output projections and the control input (a new ControlNet
    changes nothing); here they are random too, so the control changes the tiny model's output.
    """
    config = {**TINY_CONTROLNET, **overrides}
    with seeded(TINY_SEED):
        model = FluxControlNetModel(**config)
        zeroed = [model.controlnet_x_embedder, *model.controlnet_blocks]
        for layer in [*zeroed, *model.controlnet_single_blocks]:
            torch.nn.init.normal_(layer.weight, std=0.2)
            torch.nn.init.normal_(layer.bias, std=0.02)
    return model.eval()
