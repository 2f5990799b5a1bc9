"""The suite's YOLO face detector (face_yolov8n.pt), loaded without running pickled code.

A .pt file is a pickle, and a pickle can run anything; ultralytics' own loader unpickles a
whole model object. We read the file with torch's weights-only unpickler and let it build
only inert stand-ins for the classes a YOLOv8 detection checkpoint names, take the layer
list (the model's yaml dict, checked) and the weights out of them, and build a fresh
DetectionModel in code. Stand-ins rather than the real classes because the unpickler may
*call* an allow-listed class (REDUCE): DetectionModel(cfg) with a hostile yaml evaluates its
"activation" string, so allow-listing the real class is itself a way to run code.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.errors import ModelNotFoundError
from engine.faces.boxes import FaceBox, check_rgb

WHAT_TO_DO = (
    "Use face_yolov8n.pt from https://huggingface.co/Bingsu/adetailer, or remove the file "
    "to use the packaged MTCNN detector."
)
DETECTION_MODEL = "ultralytics.nn.tasks.DetectionModel"
# The layers of a YOLOv8 detection checkpoint, in the current layout (conv/block/head.py).
LAYER_NAMES = (
    DETECTION_MODEL,
    "ultralytics.nn.modules.conv.Conv",
    "ultralytics.nn.modules.conv.Concat",
    "ultralytics.nn.modules.block.C2f",
    "ultralytics.nn.modules.block.Bottleneck",
    "ultralytics.nn.modules.block.SPPF",
    "ultralytics.nn.modules.block.DFL",
    "ultralytics.nn.modules.head.Detect",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.activation.SiLU",
    "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.upsampling.Upsample",
)
# The same layers as early 8.0 releases pickled them, from one nn/modules.py file.
LEGACY_LAYER_NAMES = tuple(
    f"ultralytics.nn.modules.{name}"
    for name in ("Conv", "Concat", "C2f", "Bottleneck", "SPPF", "DFL", "Detect")
)
# Training settings and metrics that ride along in real checkpoints (ultralytics' own
# restricted loader lists the same ones); we never read them, so they become placeholders.
SETTINGS_NAMES = (
    "ultralytics.utils.IterableSimpleNamespace",
    "ultralytics.yolo.utils.IterableSimpleNamespace",  # 8.0 releases before ultralytics/yolo/ went
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
)
# What parse_model may build from a checked yaml: the layers of a YOLOv8 detector.
YAML_LAYERS = frozenset({"Conv", "C2f", "SPPF", "nn.Upsample", "Concat", "Detect"})
YAML_WORDS = frozenset({"nc", "None", "nearest"})  # the strings a YOLOv8 yaml's args hold
# torch's safe_globals() edits one process-wide set: our loads take turns.
_LOAD_LOCK = threading.Lock()


def configure_ultralytics_offline() -> Path:
    """Offline, quiet, never pip-installing settings for ultralytics; returns its config
    folder. Effective only before ultralytics is first imported (it reads them at import).

    Importing ultralytics also replaces PIL.Image.open for the whole process with a wrapper
    that, on any file Pillow cannot identify, tries to install and import a HEIF plugin: a
    corrupt upload would then end in ModuleNotFoundError instead of the studio's message.
    We put Pillow's own function back right after the import (the detector never needs it).
    """
    default = Path(tempfile.gettempdir()) / "portrait-studio-ultralytics"
    config_dir = Path(os.environ.setdefault("YOLO_CONFIG_DIR", str(default)))
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ["YOLO_VERBOSE"] = "False"
    pillow_open = Image.open
    import ultralytics.utils.patches  # noqa: F401  (the import that patches Pillow)

    Image.open = pillow_open
    return config_dir


class YoloFaceDetector:
    """face_yolov8n.pt rebuilt as a clean DetectionModel, run by ultralytics' own predictor
    (letterbox, NMS), as the ComfyUI node runs it."""

    def __init__(self, *, identity: str, label: str, model: Any, predictor: Any) -> None:
        self.identity = identity
        self.label = label
        self.model = model
        self._predictor = predictor

    @classmethod
    def from_file(
        cls, path: Path, device: str = "cpu", confidence: float = 0.7
    ) -> YoloFaceDetector:
        """Load a YOLOv8 face checkpoint; ModelNotFoundError says what is wrong with it."""
        path = Path(path)
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {confidence}")
        configure_ultralytics_offline()
        checkpoint = read_checkpoint(path)
        model = rebuild_model(path, checkpoint)
        predictor = _predictor(model, _image_size(checkpoint), device, confidence)
        return cls(
            identity=yolo_identity(path),
            label=yolo_label(path),
            model=model,
            predictor=predictor,
        )

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        """Face boxes (xyxy, image pixels), best first."""
        # The ComfyUI node passes its RGB frame as-is although ultralytics reads numpy input
        # as BGR; we do the same so the boxes match the node's. The predictor holds a lock.
        results = self._predictor(source=check_rgb(rgb), stream=False)
        boxes = results[0].boxes
        corners = boxes.xyxy.cpu().numpy().tolist()
        scores = boxes.conf.cpu().numpy().tolist()
        return [FaceBox(*xyxy, score=score) for xyxy, score in zip(corners, scores, strict=True)]


def yolo_identity(path: Path) -> str:
    """'yolo:<name>:<size>:<mtime_ns>': changes when the file does."""
    stat = path.stat()
    return f"yolo:{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def yolo_label(path: Path) -> str:
    return f"{path.name} (YOLO)"


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict, unpickled with only inert stand-ins for the allowed classes."""
    import torch

    if not path.is_file():
        raise ModelNotFoundError(f"Face detector {path} does not exist. {WHAT_TO_DO}")
    stand_ins = _stand_ins()
    try:  # names every global the pickle asks for, without unpickling anything
        asked = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as error:
        raise _unreadable(path, error) from error
    refused = sorted(set(asked) - set(stand_ins))
    if refused:
        raise _runs_code(path, f"asks for {', '.join(refused)}")
    allow = [(stand_in, name) for name, stand_in in stand_ins.items()]
    with _LOAD_LOCK, torch.serialization.safe_globals(allow):
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except PickleCallsLayer as error:
            raise _runs_code(path, f"calls {error}(...) with arguments of its own") from None
        except Exception as error:
            raise _unreadable(path, error) from error
    if not isinstance(checkpoint, dict):
        raise _not_yolo(path, f"it holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


def rebuild_model(path: Path, checkpoint: dict[str, Any]) -> Any:
    """A fresh DetectionModel built from the checked yaml, with the checkpoint's weights."""
    from ultralytics.nn.tasks import DetectionModel

    held = checkpoint.get("ema")  # ultralytics prefers the EMA weights when a file has both
    held = held if held is not None else checkpoint.get("model")
    if getattr(held, "pickled_as", None) != DETECTION_MODEL:
        raise _not_yolo(path, f"its 'model' is not a {DETECTION_MODEL}")
    cfg = clean_yaml(path, held.__dict__.get("yaml"))
    try:
        weights = {
            key: value.float() if value.is_floating_point() else value
            for key, value in held.state_dict().items()
        }
        model = DetectionModel(cfg=cfg, ch=3, nc=cfg["nc"], verbose=False)
        model.load_state_dict(weights, strict=True)
    except Exception as error:  # a tree that is not plain layers, or weights of another shape
        raise _not_yolo(path, f"its weights do not fit its layer list ({error})") from error
    model.names = _class_names(held.__dict__.get("names"), cfg["nc"])
    model.task = "detect"
    model.requires_grad_(False)
    return model.float().eval()


def clean_yaml(path: Path, raw: Any) -> dict[str, Any]:
    """A new layer-list dict holding only checked plain values of a YOLOv8 detector's yaml:
    ultralytics' parse_model evaluates an 'activation' string and looks layer names up in
    its module globals, so nothing else from the pickle reaches it."""
    if not isinstance(raw, dict):
        raise _not_yolo(path, "its model carries no layer list (yaml)")
    if raw.get("activation") is not None:
        raise _not_yolo(path, f"it sets a custom activation {raw['activation']!r}")
    nc = raw.get("nc")
    if not _is_int(nc) or not 1 <= nc <= 1000:
        raise _not_yolo(path, f"its class count nc={nc!r} is not a small positive int")
    cfg: dict[str, Any] = {
        "nc": nc,
        "backbone": _clean_layers(path, raw.get("backbone")),
        "head": _clean_layers(path, raw.get("head")),
        "channels": 3,
    }
    scales = raw.get("scales")
    if scales is not None:
        cfg["scales"] = _clean_scales(path, scales)
        scale = raw.get("scale") or _scale_from_name(raw.get("yaml_file"))
        if scale not in cfg["scales"]:
            raise _not_yolo(path, f"its model scale {scale!r} is not one of its scales")
        cfg["scale"] = scale
    for key in ("depth_multiple", "width_multiple"):
        if key in raw:
            if not _is_number(raw[key]):
                raise _not_yolo(path, f"its {key} is {raw[key]!r}")
            cfg[key] = float(raw[key])
    return cfg


def _clean_layers(path: Path, layers: Any) -> list[list[Any]]:
    if not isinstance(layers, list) or not layers:
        raise _not_yolo(path, "its layer list is missing or empty")
    clean = []
    for layer in layers:
        if not (isinstance(layer, list | tuple) and len(layer) == 4):
            raise _not_yolo(path, f"layer {layer!r} is not [from, repeats, module, args]")
        source, repeats, module, args = layer
        sources = source if isinstance(source, list) else [source]
        if not sources or not all(_is_int(s) for s in sources):
            raise _not_yolo(path, f"layer {layer!r} takes input from {source!r}")
        if not _is_int(repeats) or not 1 <= repeats <= 64:
            raise _not_yolo(path, f"layer {layer!r} repeats {repeats!r} times")
        if module not in YAML_LAYERS:
            raise _not_yolo(path, f"it has a {module!r} layer, not a YOLOv8 detector layer")
        if not isinstance(args, list) or not all(_is_plain_arg(a) for a in args):
            raise _not_yolo(path, f"layer {layer!r} has arguments other than plain values")
        clean.append([deepcopy(source), repeats, module, list(args)])
    return clean


def _clean_scales(path: Path, scales: Any) -> dict[str, list[float]]:
    if not isinstance(scales, dict) or not scales:
        raise _not_yolo(path, "its model scales are not a table")
    clean = {}
    for name, values in scales.items():
        if not (isinstance(name, str) and isinstance(values, list) and len(values) == 3):
            raise _not_yolo(path, f"its model scale {name!r} is {values!r}")
        if not all(_is_number(v) for v in values):
            raise _not_yolo(path, f"its model scale {name!r} is {values!r}")
        clean[name] = [float(values[0]), float(values[1]), int(values[2])]
    return clean


def _scale_from_name(yaml_file: Any) -> str | None:
    """'yolov8n.yaml' -> 'n', as ultralytics guesses a scale older checkpoints do not store."""
    match = re.search(r"yolov?\d+([nslmx])", str(yaml_file or ""))
    return match.group(1) if match else None


def _class_names(names: Any, nc: int) -> dict[int, str]:
    if isinstance(names, list | tuple):
        names = dict(enumerate(names))
    plain = isinstance(names, dict) and len(names) == nc
    if plain and all(_is_int(k) and isinstance(v, str) for k, v in names.items()):
        return dict(sorted(names.items()))
    return {i: "face" if nc == 1 else str(i) for i in range(nc)}


def _image_size(checkpoint: dict[str, Any]) -> int | list[int]:
    """The training image size, as ultralytics' YOLO(path) predicts at; 640 by default."""
    train_args = checkpoint.get("train_args")
    size = train_args.get("imgsz") if isinstance(train_args, dict) else None
    if _is_int(size) and 32 <= size <= 4096:
        return size
    if isinstance(size, list) and len(size) == 2 and all(_is_int(s) and s >= 32 for s in size):
        return list(size)
    return 640


def _predictor(model: Any, image_size: int | list[int], device: str, confidence: float) -> Any:
    """ultralytics' detection predictor around our model, set as YOLO(path).predict sets it."""
    from ultralytics.models.yolo.detect import DetectionPredictor

    overrides = {
        "task": "detect",
        "mode": "predict",
        "imgsz": image_size,
        "conf": confidence,
        "device": device,
        "batch": 1,
        "rect": True,
        "save": False,
        "verbose": False,
        "embed": None,
    }
    predictor = DetectionPredictor(overrides=overrides)
    predictor.setup_model(model=model, verbose=False)
    return predictor


def _stand_ins() -> dict[str, type]:
    """Pickled name -> inert class. Layers become bare modules that hold their parameters,
    buffers and attributes (so state_dict() works) and have no forward; settings become
    placeholders that keep nothing. Neither runs anything of the class it stands for."""
    import torch

    class HeldLayer(torch.nn.Module):
        pickled_as = ""

        def __init__(self, *args: object, **kwargs: object) -> None:
            # A checkpoint rebuilds layers without calling their class (NEWOBJ, then state);
            # a pickle that calls one wants its constructor to run on arguments it chose.
            raise PickleCallsLayer(self.pickled_as)

    class Placeholder:
        def __init__(self, *args: object) -> None:
            pass

        def __setstate__(self, state: object) -> None:
            pass

    layers = {
        name: type(name.rsplit(".", 1)[1], (HeldLayer,), {"pickled_as": name})
        for name in LAYER_NAMES + LEGACY_LAYER_NAMES
    }
    return {**layers, **dict.fromkeys(SETTINGS_NAMES, Placeholder)}


class PickleCallsLayer(Exception):
    """A pickle called a layer class; the message is the class's pickled name."""


def _runs_code(path: Path, what: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"Face detector {path} was not loaded: its pickle {what}, which a plain YOLOv8 face "
        "checkpoint never does, and loading it could run code. Only plain YOLOv8 face "
        f"checkpoints are loaded. {WHAT_TO_DO}"
    )


def _unreadable(path: Path, error: BaseException) -> ModelNotFoundError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelNotFoundError(
        f"Face detector {path} could not be read as a PyTorch checkpoint ({reason[:200]}): "
        f"it is empty, truncated or not a .pt file. {WHAT_TO_DO}"
    )


def _not_yolo(path: Path, what: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"Face detector {path} is not a YOLOv8 face detection checkpoint: {what}. {WHAT_TO_DO}"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_plain_arg(value: Any) -> bool:
    if isinstance(value, str):
        return value in YAML_WORDS
    return value is None or isinstance(value, bool | int | float)
