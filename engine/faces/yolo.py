"""YOLOv8 detectors (the suite's face_yolov8n.pt, and the detailers' bbox and segm models),
loaded without running pickled code.

A .pt file is a pickle, and a pickle can run anything; ultralytics' own loader unpickles a
whole model object. We read the file with torch's weights-only unpickler and let it build
only inert stand-ins for the classes a YOLOv8 detection or segmentation checkpoint names,
take the layer list (the model's yaml dict, checked) and the weights out of them, and build
a fresh DetectionModel or SegmentationModel in code (layouts in yolo_segm.py). Stand-ins
rather than the real classes because the unpickler may *call* an allow-listed class
(REDUCE): DetectionModel(cfg) with a hostile yaml evaluates its "activation" string, so
allow-listing the real class is itself a way to run code.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.errors import ModelNotFoundError
from engine.faces.boxes import FaceBox, check_rgb
from engine.faces.yolo_segm import (
    DETECTION_MODEL,
    GETATTR,
    LEGACY_SEGMENT_LAYER_NAMES,
    SEGMENT_LAYER_NAMES,
    SEGMENT_TASK,
    TASKS,
    Detection,
    NotYoloCheckpoint,
    PickleAsksForAttribute,
    clean_yaml,
    detections_from_result,
    held_getattr,
    is_int,
    make_predictor,
)

WHAT_TO_DO = (
    "Use face_yolov8n.pt from https://huggingface.co/Bingsu/adetailer, or remove the file "
    "to use the packaged MTCNN detector."
)
DETECTOR_WHAT_TO_DO = (
    "Use a YOLOv8 detection or segmentation .pt (for example from "
    "https://huggingface.co/Bingsu/adetailer), or remove the file."
)
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
# Every layer a detection or segmentation checkpoint may name (segmentation's: yolo_segm.py).
ALL_LAYER_NAMES = (
    LAYER_NAMES + LEGACY_LAYER_NAMES + SEGMENT_LAYER_NAMES + LEGACY_SEGMENT_LAYER_NAMES
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


@dataclass(frozen=True)
class Subject:
    """Who a loader's messages speak of: the face detector, or any detailer detector."""

    noun: str
    checkpoint: str
    advice: str


FACE_SUBJECT = Subject("Face detector", "YOLOv8 face checkpoint", WHAT_TO_DO)
DETECTOR_SUBJECT = Subject(
    "Detector", "YOLOv8 detection or segmentation checkpoint", DETECTOR_WHAT_TO_DO
)


class YoloDetector:
    """A YOLOv8 detection or segmentation checkpoint rebuilt as a clean model and run by
    ultralytics' own predictor (letterbox, NMS, masks), as Impact-Subpack's detectors run it.
    Boxes scoring above `confidence` (ultralytics keeps score > conf) are returned."""

    def __init__(self, *, identity: str, label: str, model: Any, predictor: Any) -> None:
        self.identity = identity
        self.label = label
        self.model = model
        self.task: str = model.task  # "detect" or "segment"
        self._predictor = predictor

    @classmethod
    def from_file(
        cls,
        path: Path,
        device: str = "cpu",
        confidence: float = 0.5,
        *,
        subject: Subject = DETECTOR_SUBJECT,
    ) -> YoloDetector:
        """Load a YOLOv8 bbox or segm checkpoint; ModelNotFoundError says what is wrong."""
        path = Path(path)
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {confidence}")
        configure_ultralytics_offline()
        checkpoint = read_checkpoint(path, subject=subject)
        model = rebuild_model(path, checkpoint, subject=subject)
        size = _image_size(checkpoint)
        predictor = make_predictor(model, size, device, confidence)
        return cls(
            identity=yolo_identity(path),
            label=yolo_label(path),
            model=model,
            predictor=predictor,
        )

    @property
    def names(self) -> dict[int, str]:
        """Class index -> class name, as the checkpoint names them."""
        return dict(self.model.names)

    @property
    def has_masks(self) -> bool:
        return self.task == SEGMENT_TASK

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Detections in an RGB uint8 image (xyxy image pixels), best first."""
        # Impact-Subpack hands ultralytics a PIL image, which it turns to BGR; so do we.
        return self.detect_bgr(np.ascontiguousarray(check_rgb(rgb)[..., ::-1]))

    def detect_bgr(self, bgr: np.ndarray) -> list[Detection]:
        """Detections in the (H, W, 3) uint8 array as ultralytics reads numpy input (BGR).
        The predictor holds a lock, so one detector may serve several threads."""
        result = self._predictor(source=bgr, stream=False)[0]
        return detections_from_result(result, self.model.names)


class YoloFaceDetector:
    """face_yolov8n.pt rebuilt as a clean DetectionModel, run by ultralytics' own predictor
    (letterbox, NMS), as the ComfyUI node runs it. A FaceDetector over YoloDetector."""

    def __init__(self, detector: YoloDetector) -> None:
        self.identity = detector.identity
        self.label = detector.label
        self.model = detector.model
        self._detector = detector

    @classmethod
    def from_file(
        cls, path: Path, device: str = "cpu", confidence: float = 0.7
    ) -> YoloFaceDetector:
        """Load a YOLOv8 face checkpoint; ModelNotFoundError says what is wrong with it."""
        return cls(YoloDetector.from_file(path, device, confidence, subject=FACE_SUBJECT))

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        """Face boxes (xyxy, image pixels), best first."""
        # The ComfyUI node passes its RGB frame as-is although ultralytics reads numpy input
        # as BGR; we do the same so the boxes match the node's.
        return [found.box for found in self._detector.detect_bgr(check_rgb(rgb))]


def yolo_identity(path: Path) -> str:
    """'yolo:<name>:<size>:<mtime_ns>': changes when the file does."""
    stat = path.stat()
    return f"yolo:{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def yolo_label(path: Path) -> str:
    return f"{path.name} (YOLO)"


def read_checkpoint(path: Path, *, subject: Subject = FACE_SUBJECT) -> dict[str, Any]:
    """The checkpoint dict, unpickled with only inert stand-ins for the allowed classes."""
    import torch

    if not path.is_file():
        raise ModelNotFoundError(f"{subject.noun} {path} does not exist. {subject.advice}")
    stand_ins = _stand_ins()
    try:  # names every global the pickle asks for, without unpickling anything
        asked = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as error:
        raise _unreadable(path, error, subject) from error
    refused = sorted(set(asked) - set(stand_ins))
    if refused:
        raise _runs_code(path, f"asks for {', '.join(refused)}", subject)
    allow = [(stand_in, name) for name, stand_in in stand_ins.items()]
    with _LOAD_LOCK, torch.serialization.safe_globals(allow):
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except PickleCallsLayer as error:
            what = f"calls {error}(...) with arguments of its own"
            raise _runs_code(path, what, subject) from None
        except PickleAsksForAttribute as error:
            raise _runs_code(path, f"calls {error}", subject) from None
        except Exception as error:
            raise _unreadable(path, error, subject) from error
    if not isinstance(checkpoint, dict):
        what = f"it holds a {type(checkpoint).__name__}, not a checkpoint dict"
        raise _not_yolo(path, what, subject)
    return checkpoint


def rebuild_model(
    path: Path, checkpoint: dict[str, Any], *, subject: Subject = FACE_SUBJECT
) -> Any:
    """A fresh DetectionModel or SegmentationModel built from the checked yaml, with the
    checkpoint's weights; `model.task` says which ("detect" or "segment")."""
    held = checkpoint.get("ema")  # ultralytics prefers the EMA weights when a file has both
    held = held if held is not None else checkpoint.get("model")
    pickled_as = getattr(held, "pickled_as", None)
    if pickled_as not in TASKS:
        raise _not_yolo(path, f"its 'model' is not a {' or a '.join(TASKS)}", subject)
    task, layers = TASKS[pickled_as]
    try:
        cfg = clean_yaml(held.__dict__.get("yaml"), layers)
    except NotYoloCheckpoint as error:
        raise _not_yolo(path, str(error), subject) from None
    try:
        weights = {
            key: value.float() if value.is_floating_point() else value
            for key, value in held.state_dict().items()
        }
        model = _model_class(task)(cfg=cfg, ch=3, nc=cfg["nc"], verbose=False)
        model.load_state_dict(weights, strict=True)
    except Exception as error:  # a tree that is not plain layers, or weights of another shape
        what = f"its weights do not fit its layer list ({error})"
        raise _not_yolo(path, what, subject) from error
    model.names = _class_names(held.__dict__.get("names"), cfg["nc"])
    model.task = task
    model.requires_grad_(False)
    return model.float().eval()


def _model_class(task: str) -> type:
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    return SegmentationModel if task == SEGMENT_TASK else DetectionModel


def _class_names(names: Any, nc: int) -> dict[int, str]:
    if isinstance(names, list | tuple):
        names = dict(enumerate(names))
    plain = isinstance(names, dict) and len(names) == nc
    if plain and all(is_int(k) and isinstance(v, str) for k, v in names.items()):
        return dict(sorted(names.items()))
    return {i: "face" if nc == 1 else str(i) for i in range(nc)}


def _image_size(checkpoint: dict[str, Any]) -> int | list[int]:
    """The training image size, as ultralytics' YOLO(path) predicts at; 640 by default."""
    train_args = checkpoint.get("train_args")
    size = train_args.get("imgsz") if isinstance(train_args, dict) else None
    if is_int(size) and 32 <= size <= 4096:
        return size
    if isinstance(size, list) and len(size) == 2 and all(is_int(s) and s >= 32 for s in size):
        return list(size)
    return 640


def _stand_ins() -> dict[str, Any]:
    """Pickled name -> inert stand-in. Layers become bare modules that hold their parameters,
    buffers and attributes (so state_dict() works) and have no forward; settings become
    placeholders that keep nothing; getattr answers only Detect.forward (yolo_segm.py).
    None of them runs anything of what it stands for."""
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
        for name in ALL_LAYER_NAMES
    }
    settings = dict.fromkeys(SETTINGS_NAMES, Placeholder)
    return {**layers, **settings, GETATTR: held_getattr()}


class PickleCallsLayer(Exception):
    """A pickle called a layer class; the message is the class's pickled name."""


def _runs_code(path: Path, what: str, subject: Subject) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"{subject.noun} {path} was not loaded: its pickle {what}, which a plain "
        f"{subject.checkpoint} never does, and loading it could run code. Only plain "
        f"{subject.checkpoint}s are loaded. {subject.advice}"
    )


def _unreadable(path: Path, error: BaseException, subject: Subject) -> ModelNotFoundError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelNotFoundError(
        f"{subject.noun} {path} could not be read as a PyTorch checkpoint ({reason[:200]}): "
        f"it is empty, truncated or not a .pt file. {subject.advice}"
    )


def _not_yolo(path: Path, what: str, subject: Subject) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"{subject.noun} {path} is not a {subject.checkpoint}: {what}. {subject.advice}"
    )
