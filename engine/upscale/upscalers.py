"""Trained upscale models (ESRGAN, Real-ESRGAN Compact, SPAN, DAT, HAT, ...) from
`<models>/upscale_models/`, the folder ComfyUI's UpscaleModelLoader reads.

spandrel detects the architecture and its hyper-parameters from the weights. Its own file
reader is not used: for .pth/.ckpt it unpickles with its own allow-list unpickler, and for
.pt it first tries `torch.jit.load`, which runs the TorchScript code inside the file. Here
pickles go through torch's weights-only unpickler (only tensors and plain containers are
rebuilt, nothing is called), .safetensors through safetensors, and spandrel only sees the
resulting state dict.
"""

from __future__ import annotations

import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import torch

from engine.errors import InputError, ModelNotFoundError
from engine.load_errors import first_line, refused_by_unpickler

if TYPE_CHECKING:
    from spandrel import ImageModelDescriptor

UPSCALE_FOLDER = "upscale_models"
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt")
UPSCALER_SUFFIXES = (*PICKLE_SUFFIXES, ".safetensors")
WHAT_TO_DO = (
    "Use an upscale model that ComfyUI or chaiNNer loads, "
    "preferably its .safetensors file, in the models folder's upscale_models/ folder."
)


@dataclass(frozen=True)
class LoadedUpscaler:
    """An upscale model ready to run: spandrel's descriptor on its device and dtype."""

    descriptor: ImageModelDescriptor
    scale: int
    architecture: str
    identity: str
    label: str
    dtype: torch.dtype

    @property
    def device(self) -> torch.device:
        return self.descriptor.device


# Finding files --------------------------------------------------------------------------


def upscale_folder(models_dir: Path) -> Path:
    """`<models>/upscale_models/`."""
    return Path(models_dir) / UPSCALE_FOLDER


def list_upscaler_files(models_dir: Path | None) -> list[str]:
    """Upscale model files under `<models>/upscale_models/` (recursively), as sorted names
    relative to it with `/` separators: "4x-UltraSharp.pth", "faces/4xFaceUpsharpDAT.pth"."""
    if models_dir is None:
        return []
    root = upscale_folder(models_dir)
    if not root.is_dir():
        return []
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.suffix.lower() in UPSCALER_SUFFIXES and path.is_file()
    )


def resolve_upscaler_file(models_dir: Path | None, name: str) -> Path:
    """The file `name` (as list_upscaler_files writes it) stands for, strictly inside
    `<models>/upscale_models/`. InputError for a name that is absolute, climbs out with
    `..` or has another suffix; ModelNotFoundError when no such file is there."""
    _check_name(name)
    if models_dir is None:
        raise ModelNotFoundError(
            f"Upscale model {name!r} cannot be found: no models folder is set. Set one and "
            f"put the file in its {UPSCALE_FOLDER}/ folder."
        )
    root = upscale_folder(models_dir)
    path = root.joinpath(*PurePosixPath(name.replace("\\", "/")).parts)
    if not path.is_file():
        available = list_upscaler_files(models_dir)
        listed = ", ".join(available[:8]) + (" ..." if len(available) > 8 else "")
        raise ModelNotFoundError(
            f"Upscale model {name!r} is not in {root} (searched recursively; "
            f"{'found: ' + listed if available else 'no model files there'}). {WHAT_TO_DO}"
        )
    return path


def _check_name(name: str) -> None:
    """A relative name below the folder: no absolute path, drive, `..` part or NUL."""
    where = f"a file name inside the {UPSCALE_FOLDER}/ folder, such as '4x-UltraSharp.pth'"
    if not name or not name.strip() or "\0" in name:
        raise InputError(f"The upscale model name is empty; give {where}.")
    posix = name.replace("\\", "/")
    if os.path.isabs(name) or posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        raise InputError(f"Upscale model {name!r} is an absolute path; give {where}.")
    if ".." in PurePosixPath(posix).parts:
        raise InputError(f"Upscale model {name!r} points outside its folder; give {where}.")
    if PurePosixPath(posix).suffix.lower() not in UPSCALER_SUFFIXES:
        raise InputError(
            f"Upscale model {name!r} is not a model file; upscale models end in "
            f"{', '.join(UPSCALER_SUFFIXES)}."
        )


def upscaler_identity(path: Path) -> str:
    """'upscaler:<path>:<size>:<mtime_ns>': a cache key that changes when the file does."""
    stat = Path(path).stat()
    return f"upscaler:{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


# Reading weights ------------------------------------------------------------------------


def read_upscaler_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors, without running any code it may carry; wrappers such as
    `params_ema` and `module.` prefixes are removed the way spandrel expects."""
    from spandrel import canonicalize_state_dict

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"Upscale model file {path} does not exist. {WHAT_TO_DO}")
    if path.suffix.lower() == ".safetensors":
        data: Any = _read_safetensors(path)
    elif path.suffix.lower() in PICKLE_SUFFIXES:
        data = _read_pickle(path)
    else:
        raise ModelNotFoundError(
            f"Upscale model file {path} has an unknown suffix; upscale models end in "
            f"{', '.join(UPSCALER_SUFFIXES)}."
        )
    if not isinstance(data, dict):
        raise _unusable(path, f"it holds a {type(data).__name__}, not a state dict")
    tensors = {
        key: value
        for key, value in canonicalize_state_dict(data).items()
        if isinstance(key, str) and isinstance(value, torch.Tensor)
    }
    if not tensors:
        raise _unusable(path, f"it holds no named tensors (entries: {_some(list(data))})")
    return tensors


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # SafetensorError, OSError: header or data cut short
        raise _unreadable(path, error) from None


def _read_pickle(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            # For a TorchScript archive torch warns it will hand over to torch.jit.load; with
            # weights_only it raises instead, which is the case handled below.
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = refused_by_unpickler(error)
        if refused is None:
            raise _unreadable(path, error) from None
        raise ModelNotFoundError(
            f"Upscale model file {path} was not loaded: its pickle holds more than tensors "
            f"({refused}), which an upscale model's weights never need, and loading it could "
            f"run code. Get the model again from its source, or its .safetensors release. "
            f"{WHAT_TO_DO}"
        ) from None
    except RuntimeError as error:
        if "TorchScript" in str(error):
            raise ModelNotFoundError(
                f"Upscale model file {path} is a TorchScript archive, which carries code the "
                f"studio does not run. Use the model's .pth or .safetensors release instead."
            ) from None
        raise _unreadable(path, error) from None
    except Exception as error:  # EOFError, zip errors, KeyError: damaged files
        raise _unreadable(path, error) from None


# Building the model ---------------------------------------------------------------------


def load_upscaler(path: Path, device: str | torch.device = "cpu") -> LoadedUpscaler:
    """The upscale model in `path`, its architecture detected from the weights by spandrel,
    on `device` in the dtype `inference_dtype` picks. ModelNotFoundError (naming the file,
    the problem and what to do) for anything that is not a usable RGB upscaler."""
    path = Path(path)
    state_dict = read_upscaler_state_dict(path)
    descriptor = _detect(path, state_dict)
    device = torch.device(device)
    dtype = inference_dtype(descriptor, device)
    descriptor.to(device=device, dtype=dtype).eval()
    descriptor.model.requires_grad_(False)
    architecture = descriptor.architecture.name
    return LoadedUpscaler(
        descriptor=descriptor,
        scale=descriptor.scale,
        architecture=architecture,
        identity=upscaler_identity(path),
        label=f"{path.stem} ({architecture}, {descriptor.scale}×)",
        dtype=dtype,
    )


def inference_dtype(descriptor: ImageModelDescriptor, device: torch.device) -> torch.dtype:
    """float16 on CUDA when the architecture runs in it, else bfloat16 when it runs in that
    (DAT, HAT, SwinIR, ...: spandrel marks them bf16-only), else float32; float32 on CPU."""
    if device.type != "cuda":
        return torch.float32
    if descriptor.supports_half:
        return torch.float16
    if descriptor.supports_bfloat16 and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _detect(path: Path, state_dict: dict[str, torch.Tensor]) -> ImageModelDescriptor:
    """spandrel's detection and construction, on CPU in float32, with its failures said in
    the studio's words."""
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    try:
        descriptor = ModelLoader(device="cpu").load_from_state_dict(state_dict)
    except UnsupportedModelError:
        raise _unusable(
            path,
            f"spandrel recognises no upscaler architecture in its {len(state_dict)} tensors "
            f"(first: {_some(list(state_dict))}); it may be another kind of model (a "
            f"checkpoint, LoRA or VAE) or an architecture spandrel does not support",
        ) from None
    except Exception as error:  # detected, but the tensors do not fit the architecture
        raise _unusable(path, f"its tensors do not build the model ({first_line(error)})") from None
    if not isinstance(descriptor, ImageModelDescriptor):
        raise _unusable(path, f"it is a {descriptor.architecture.name} {descriptor.purpose} model")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise _unusable(
            path,
            f"it is a {descriptor.architecture.name} model for {descriptor.input_channels}-"
            f"channel images, and the studio upscales RGB images",
        )
    return descriptor


# Messages -------------------------------------------------------------------------------


def _unreadable(path: Path, error: BaseException) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"Upscale model file {path} could not be read ({first_line(error)}): it is empty, "
        f"truncated or not a model file. Download it again. {WHAT_TO_DO}"
    )


def _unusable(path: Path, reason: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"Upscale model file {path} is not an upscale model the studio can use: {reason}. "
        f"{WHAT_TO_DO}"
    )


def _some(names: list[Any], count: int = 4) -> str:
    shown = ", ".join(str(name) for name in names[:count])
    return shown + (" ..." if len(names) > count else "")
