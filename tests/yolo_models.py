"""YOLOv8 detector files for tests, built from ultralytics' own configs with random weights
and saved the way ultralytics' trainer saves checkpoints: a face model (as face_yolov8n.pt)
and a stand-in hand detector (as hand_yolov8s.pt) that finds one box on any image."""

from __future__ import annotations

import math
from copy import deepcopy
from datetime import datetime
from pathlib import Path
from typing import Any

# The hand stand-in predicts at 32 px: the stride-32 level of the head is then one cell,
# so there is exactly one anchor there, centred in the (letterboxed) image.
HAND_IMAGE_SIZE = 32
HAND_FILE = "ultralytics/bbox/hand_yolov8s.pt"  # where the Refine tab's hands region looks
CLASS_LOGIT = 10.0  # sigmoid(10) ≈ 0.99995: far above any threshold; sigmoid(-10) far below
HAND_REACH = 0.25  # each side of the box, in strides: 8 px of the 32 px frame (half the side)


def random_detection_model(config: str, names: dict[int, str], seed: int) -> Any:
    """A DetectionModel from ultralytics' `config` (e.g. "yolov8n.yaml") with random weights,
    one class per entry of `names`."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(config, nc=len(names), verbose=False)
    model.names = dict(names)
    return model


def face_model(seed: int) -> Any:
    """A random one-class YOLOv8n, as face_yolov8n.pt is (nc=1, names {0: 'face'})."""
    import torch

    model = random_detection_model("yolov8n.yaml", {0: "face"}, seed)
    # ultralytics' bias prior puts random scores near 0.001; zero puts them near 0.5 so that
    # there are boxes at a sensible threshold.
    for branch in model.model[-1].cv3:
        torch.nn.init.zeros_(branch[-1].bias)
    return model


def hand_model(seed: int = 0) -> Any:
    """A one-class YOLOv8s (names {0: 'hand'}) standing in for a trained hand_yolov8s.pt.

    No pip package ships a hand detector, and a random one finds nothing (or hundreds of
    boxes), so the head is set by hand: the class logit is the bias alone (weights zeroed),
    high on the stride-32 level and low on the finer two, and that level's box branch
    predicts a fixed reach of HAND_REACH strides on each side. At HAND_IMAGE_SIZE the
    stride-32 level is one cell, so the model reports one box, the middle half of the image,
    on any image, scoring ≈1. What the tests check is the plumbing (file found, loaded
    safely, boxes cropped, re-rendered and shown), not hand detection."""
    import torch

    model = random_detection_model("yolov8s.yaml", {0: "hand"}, seed)
    head = model.model[-1]
    with torch.no_grad():
        for level, branch in enumerate(head.cv3):
            torch.nn.init.zeros_(branch[-1].weight)
            coarsest = level == len(head.cv3) - 1
            branch[-1].bias.fill_(CLASS_LOGIT if coarsest else -CLASS_LOGIT)
        box = head.cv2[-1][-1]  # 4 sides x reg_max bins (DFL: the expected bin, in strides)
        torch.nn.init.zeros_(box.weight)
        box.bias.copy_(reach_logits(head.reg_max, HAND_REACH).repeat(4))
    return model


def reach_logits(bins: int, reach: float) -> Any:
    """DFL logits over `bins` whose expected bin is `reach` (0 < reach < 1): bins 0 and 1
    share the mass as (1 - reach, reach); the rest are far below."""
    import torch

    logits = torch.full((bins,), -CLASS_LOGIT * 3)
    logits[0], logits[1] = 0.0, math.log(reach / (1 - reach))
    return logits


def save_like_ultralytics(
    model: Any, path: Path, image_size: int, *, finish: bool, task: str = "detect", **extra: Any
) -> None:
    """A checkpoint as ultralytics' trainer writes one (fp16 EMA, train_args, metadata),
    finished by its own strip_optimizer as at the end of training when `finish`."""
    import torch
    from ultralytics import __version__
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.utils import IterableSimpleNamespace
    from ultralytics.utils.torch_utils import strip_optimizer

    train_args = {**DEFAULT_CFG_DICT, "imgsz": image_size, "task": task}
    ema = deepcopy(model).half()
    ema.args = IterableSimpleNamespace(**train_args)  # the trainer attaches its settings
    checkpoint = {
        "epoch": 0,
        "best_fitness": None,
        "model": None,
        "ema": ema,
        "updates": 1,
        "optimizer": None,
        "train_args": train_args,
        "date": datetime.now().isoformat(),
        "version": __version__,
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    if finish:
        strip_optimizer(path)


def write_hand_detector(models_dir: Path) -> Path:
    """The stand-in hand detector saved as <models_dir>/ultralytics/bbox/hand_yolov8s.pt.
    Import ultralytics only after its offline settings (configure_ultralytics_offline)."""
    path = Path(models_dir) / HAND_FILE
    save_like_ultralytics(hand_model(), path, image_size=HAND_IMAGE_SIZE, finish=True)
    return path


def half_state(model: Any) -> dict[str, Any]:
    """The model's weights as the fp16 checkpoint keeps them, back in fp32."""
    return {
        key: value.half().float() if value.is_floating_point() else value
        for key, value in model.state_dict().items()
    }
