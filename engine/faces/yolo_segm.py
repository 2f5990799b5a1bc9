"""YOLOv8 layouts for the safe loader in yolo.py, segmentation models included: the checked
layer list (yaml) of a detection or segmentation model, what a segmentation checkpoint's
pickle adds (a Segment head with its Proto), and ultralytics' own predictor for either
task, whose boxes and masks become Detections.

Segmentation checkpoints written by ultralytics 8.0.x hold `Segment.detect = Detect.forward`,
which pickle protocol 2 stores as a call to builtins.getattr(Detect, "forward"). The
unpickler gets a stand-in getattr that answers exactly that one question with an inert
marker and refuses every other (Impact-Subpack restricts getattr to "forward" for the same
files; we also pin the owner to the held Detect class).
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.faces.boxes import FaceBox

DETECT_TASK = "detect"
SEGMENT_TASK = "segment"
DETECTION_MODEL = "ultralytics.nn.tasks.DetectionModel"
SEGMENTATION_MODEL = "ultralytics.nn.tasks.SegmentationModel"
# The layers a YOLOv8 segmentation checkpoint adds to a detector's, current layout.
SEGMENT_LAYER_NAMES = (
    SEGMENTATION_MODEL,
    "ultralytics.nn.modules.head.Segment",
    "ultralytics.nn.modules.block.Proto",
    "torch.nn.modules.conv.ConvTranspose2d",
)
# The same, as early 8.0 releases pickled them from one nn/modules.py file.
LEGACY_SEGMENT_LAYER_NAMES = ("ultralytics.nn.modules.Segment", "ultralytics.nn.modules.Proto")
# What parse_model may build from a checked yaml: exactly the layers of a YOLOv8 detector,
# and of a YOLOv8 segmentation model (its Segment head in place of Detect).
YAML_LAYERS = frozenset({"Conv", "C2f", "SPPF", "nn.Upsample", "Concat", "Detect"})
SEGMENT_YAML_LAYERS = frozenset({"Conv", "C2f", "SPPF", "nn.Upsample", "Concat", "Segment"})
YAML_WORDS = frozenset({"nc", "None", "nearest"})  # the strings a YOLOv8 yaml's args hold
# The model class a checkpoint pickles -> (task, the layers its yaml may name).
TASKS = {
    DETECTION_MODEL: (DETECT_TASK, YAML_LAYERS),
    SEGMENTATION_MODEL: (SEGMENT_TASK, SEGMENT_YAML_LAYERS),
}
GETATTR = "builtins.getattr"
DETECT_NAMES = frozenset({"ultralytics.nn.modules.head.Detect", "ultralytics.nn.modules.Detect"})
HELD_DETECT_FORWARD = "ultralytics.nn.modules.head.Detect.forward (not loaded)"


@dataclass(frozen=True, eq=False)
class Detection:
    """One detected object: its box, its class name, and for segmentation models its bool
    (H, W) mask at the image's size (None for bbox models)."""

    box: FaceBox
    label: str
    mask: np.ndarray | None


class NotYoloCheckpoint(Exception):
    """What makes a checkpoint's layer list not a plain YOLOv8 one."""


class PickleAsksForAttribute(Exception):
    """A pickle called getattr for something other than Detect.forward; the message says what."""


def held_getattr() -> Callable[..., str]:
    """The unpickler's getattr: Detect.forward becomes an inert marker, nothing else is read."""

    def getattr_stand_in(owner: object, name: object, *default: object) -> str:
        held_as = getattr(owner, "pickled_as", None) if isinstance(owner, type) else None
        if held_as in DETECT_NAMES and name == "forward" and not default:
            return HELD_DETECT_FORWARD
        raise PickleAsksForAttribute(f"{GETATTR}({held_as or type(owner).__name__}, {name!r})")

    return getattr_stand_in


def clean_yaml(raw: Any, layers: frozenset[str] = YAML_LAYERS) -> dict[str, Any]:
    """A new layer-list dict holding only checked plain values of a YOLOv8 yaml whose layers
    are among `layers`: ultralytics' parse_model evaluates an 'activation' string and looks
    layer names up in its module globals, so nothing else from the pickle reaches it."""
    if not isinstance(raw, dict):
        raise NotYoloCheckpoint("its model carries no layer list (yaml)")
    if raw.get("activation") is not None:
        raise NotYoloCheckpoint(f"it sets a custom activation {raw['activation']!r}")
    nc = raw.get("nc")
    if not is_int(nc) or not 1 <= nc <= 1000:
        raise NotYoloCheckpoint(f"its class count nc={nc!r} is not a small positive int")
    cfg: dict[str, Any] = {
        "nc": nc,
        "backbone": _clean_layers(raw.get("backbone"), layers),
        "head": _clean_layers(raw.get("head"), layers),
        "channels": 3,
    }
    scales = raw.get("scales")
    if scales is not None:
        cfg["scales"] = _clean_scales(scales)
        scale = raw.get("scale") or _scale_from_name(raw.get("yaml_file"))
        if scale not in cfg["scales"]:
            raise NotYoloCheckpoint(f"its model scale {scale!r} is not one of its scales")
        cfg["scale"] = scale
    for key in ("depth_multiple", "width_multiple"):
        if key in raw:
            if not _is_number(raw[key]):
                raise NotYoloCheckpoint(f"its {key} is {raw[key]!r}")
            cfg[key] = float(raw[key])
    return cfg


def _clean_layers(layers: Any, allowed: frozenset[str]) -> list[list[Any]]:
    if not isinstance(layers, list) or not layers:
        raise NotYoloCheckpoint("its layer list is missing or empty")
    clean = []
    for layer in layers:
        if not (isinstance(layer, list | tuple) and len(layer) == 4):
            raise NotYoloCheckpoint(f"layer {layer!r} is not [from, repeats, module, args]")
        source, repeats, module, args = layer
        sources = source if isinstance(source, list) else [source]
        if not sources or not all(is_int(s) for s in sources):
            raise NotYoloCheckpoint(f"layer {layer!r} takes input from {source!r}")
        if not is_int(repeats) or not 1 <= repeats <= 64:
            raise NotYoloCheckpoint(f"layer {layer!r} repeats {repeats!r} times")
        if module not in allowed:
            raise NotYoloCheckpoint(f"it has a {module!r} layer, not a YOLOv8 detector layer")
        if not isinstance(args, list) or not all(_is_plain_arg(a) for a in args):
            raise NotYoloCheckpoint(f"layer {layer!r} has arguments other than plain values")
        clean.append([deepcopy(source), repeats, module, list(args)])
    return clean


def _clean_scales(scales: Any) -> dict[str, list[float]]:
    if not isinstance(scales, dict) or not scales:
        raise NotYoloCheckpoint("its model scales are not a table")
    clean = {}
    for name, values in scales.items():
        if not (isinstance(name, str) and isinstance(values, list) and len(values) == 3):
            raise NotYoloCheckpoint(f"its model scale {name!r} is {values!r}")
        if not all(_is_number(v) for v in values):
            raise NotYoloCheckpoint(f"its model scale {name!r} is {values!r}")
        clean[name] = [float(values[0]), float(values[1]), int(values[2])]
    return clean


def _scale_from_name(yaml_file: Any) -> str | None:
    """'yolov8n.yaml' -> 'n', as ultralytics guesses a scale older checkpoints do not store."""
    import re

    match = re.search(r"yolov?\d+([nslmx])", str(yaml_file or ""))
    return match.group(1) if match else None


def make_predictor(model: Any, image_size: int | list[int], device: str, confidence: float) -> Any:
    """ultralytics' detection or segmentation predictor (by `model.task`) around our rebuilt
    model, set as YOLO(path).predict sets it: letterbox at the training size, NMS, masks."""
    from ultralytics.models.yolo.detect import DetectionPredictor
    from ultralytics.models.yolo.segment import SegmentationPredictor

    overrides = {
        "task": model.task,
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
    kind = SegmentationPredictor if model.task == SEGMENT_TASK else DetectionPredictor
    predictor = kind(overrides=overrides)
    predictor.setup_model(model=model, verbose=False)
    return predictor


def detections_from_result(result: Any, names: dict[int, str]) -> list[Detection]:
    """An ultralytics Results object as Detections, in its order (best first)."""
    corners = result.boxes.xyxy.cpu().numpy().tolist()
    scores = result.boxes.conf.cpu().numpy().tolist()
    classes = result.boxes.cls.cpu().numpy().astype(int).tolist()
    masks: list[np.ndarray | None] = [None] * len(corners)
    if result.masks is not None:
        masks = list(masks_at_image_size(result))
    return [
        Detection(FaceBox(*xyxy, score=score), names[cls], mask)
        for xyxy, score, cls, mask in zip(corners, scores, classes, masks, strict=True)
    ]


def masks_at_image_size(result: Any) -> list[np.ndarray]:
    """One bool (H, W) mask per box of an ultralytics segmentation result, at the image's size.

    `result.masks.data` is at the letterboxed input size; ultralytics' own scale_masks removes
    the letterbox padding and resizes bilinearly (as its retina masks do), and the 0/1 masks
    are thresholded at 0.5. Impact-Subpack's inference_segm estimates the padding itself and
    keeps the soft bilinear edge as a float mask; the two agree to within the edge pixels.
    """
    from ultralytics.utils import ops

    scaled = ops.scale_masks(result.masks.data[None].float(), tuple(result.orig_shape))[0]
    return list((scaled > 0.5).cpu().numpy())


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_plain_arg(value: Any) -> bool:
    if isinstance(value, str):
        return value in YAML_WORDS
    return value is None or isinstance(value, bool | int | float)
