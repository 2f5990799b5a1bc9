"""The detailers' detection -> segment pipeline against Impact-Pack's semantics (specs/
algorithms.md §8) on hand-made boxes, and the detailers' YOLO models (bbox with any classes,
YOLOv8-seg) loaded through the safe path, finding what ultralytics' own loader finds."""

from __future__ import annotations

import os
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.errors import ModelNotFoundError
from engine.faces.boxes import FaceBox
from engine.faces.find import find_detector_file, list_detector_files
from engine.faces.segments import (
    CropScale,
    Segment,
    SegmentParams,
    and_with_mask,
    bbox_mask,
    choose_crop_scale,
    crop_region,
    dilate_mask,
    feather_kernel_size,
    feather_mask,
    keeps_box,
    paste_segment,
    refine_with_sam,
    sam_mask,
    segments_from_detections,
    select_sam_masks,
)
from engine.faces.yolo import YoloDetector, YoloFaceDetector, configure_ultralytics_offline
from engine.faces.yolo_segm import Detection
from yolo_models import half_state, save_like_ultralytics

LOW_CONFIDENCE = 0.3

pytestmark = pytest.mark.usefixtures("no_network")  # tests/conftest.py


def found(x1: float, y1: float, x2: float, y2: float, score: float = 0.9) -> Detection:
    return Detection(FaceBox(x1, y1, x2, y2, score=score), "face", None)


# --- which boxes count -------------------------------------------------------------------


def test_threshold_is_strict_and_drop_size_drops_either_short_side() -> None:
    assert keeps_box(found(0, 0, 50, 50, score=0.51).box, 0.5, 10)
    assert not keeps_box(found(0, 0, 50, 50, score=0.5).box, 0.5, 10)  # score > threshold
    assert not keeps_box(found(0, 0, 10, 50).box, 0.5, 10)  # width 10 <= drop_size
    assert not keeps_box(found(0, 0, 50, 10).box, 0.5, 10)  # height 10 <= drop_size
    assert keeps_box(found(0, 0, 10.5, 10.5).box, 0.5, 10)
    assert not keeps_box(found(0, 0, 1, 5).box, 0.5, 0)  # drop_size is at least 1
    assert keeps_box(found(0, 0, 1.5, 5).box, 0.5, 0)

    detections = [found(10, 10, 40, 40, 0.9), found(50, 50, 58, 90, 0.9), found(60, 0, 99, 30, 0.4)]
    segments = segments_from_detections(detections, 100, 100, SegmentParams())
    assert [s.bbox for s in segments] == [(10, 10, 40, 40)]
    assert segments[0].confidence == 0.9 and segments[0].label == "face"


# --- crop regions (utils.make_crop_region) -------------------------------------------------


@pytest.mark.parametrize(
    ("bbox", "factor", "region"),
    [
        ((40, 40, 60, 60), 3.0, (20, 20, 80, 80)),  # middle: 60 wide about the centre
        ((0, 40, 10, 60), 3.0, (0, 20, 30, 80)),  # left edge: shifted right, not cut
        ((90, 40, 100, 60), 3.0, (70, 20, 100, 80)),  # right edge: shifted left
        ((40, 2, 60, 12), 3.0, (20, 0, 80, 30)),  # top edge
        ((40, 88, 60, 98), 3.0, (20, 70, 80, 100)),  # bottom edge
        ((10, 20, 90, 80), 3.0, (0, 0, 100, 100)),  # larger than the image: clipped
        ((94, 45, 96, 55), 5.4, (89, 23, 99, 77)),  # ends truncated: 89 + 10.8 -> 99
        ((10.5, 10.5, 20.7, 20.7), 1.0, (10, 10, 20, 20)),  # int() may cut the bbox itself
        ((4, 45, 6, 55), 5.4, (0, 23, 10, 77)),  # int(-0.4) is 0: kept, end 0 + 10.8 -> 10
    ],
)
def test_crop_region_matches_make_crop_region(
    bbox: tuple[float, float, float, float], factor: float, region: tuple[int, ...]
) -> None:
    assert crop_region(100, 100, bbox, factor) == region
    assert all(type(v) is int for v in crop_region(100, 100, bbox, factor))


def test_crop_region_in_a_wide_image_and_segment_masks_are_crop_sized() -> None:
    assert crop_region(300, 100, (10, 10, 60, 90), 3.0) == (0, 0, 150, 100)
    segment = segments_from_detections(
        [found(40, 40, 60, 60)], 100, 100, SegmentParams(dilation=0)
    )[0]
    assert segment.crop_region == (20, 20, 80, 80)
    assert segment.mask.shape == (60, 60) and segment.mask.dtype == np.float32
    # cv2.rectangle between int corners, both included: columns/rows 40..60 -> 21 pixels.
    assert segment.mask.sum() == 21 * 21 and segment.mask[20:41, 20:41].all()


# --- masks and dilation (utils.dilate_mask, subcore detectors) -------------------------------


def test_dilation_and_erosion_of_a_bbox_mask_count_exactly() -> None:
    mask = bbox_mask(100, 100, (20, 30, 50.9, 70.2))  # columns 20..50, rows 30..70
    assert mask.sum() == 31 * 41
    grown = dilate_mask(mask, 10)
    # A 10x10 kernel anchored at (5, 5) reaches 4 pixels left/up and 5 right/down... of dst:
    # dst is 1 where any src in [x-5, x+4] is, so columns 16..55 and rows 26..75.
    assert grown.sum() == 40 * 50
    assert grown[26:76, 16:56].all()
    shrunk = dilate_mask(mask, -10)
    assert shrunk.sum() == 22 * 32  # all of [x-5, x+4] inside: columns 25..46, rows 35..66
    assert shrunk[35:67, 25:47].all()
    assert dilate_mask(mask, 0) is mask


def test_detectors_dilate_before_cropping_and_ignore_negative_dilation() -> None:
    detection = [found(40, 40, 60, 60)]
    grown = segments_from_detections(detection, 100, 100, SegmentParams(dilation=10))[0]
    assert grown.mask.sum() == 30 * 30  # 21 + 9 per side
    # UltraBBoxDetector.detect dilates only when dilation > 0: -10 leaves the rectangle.
    kept = segments_from_detections(detection, 100, 100, SegmentParams(dilation=-10))[0]
    assert kept.mask.sum() == 21 * 21


def test_segm_masks_are_used_when_present() -> None:
    mask = np.zeros((100, 100), bool)
    mask[45:55, 42:58] = True
    segm = Detection(FaceBox(40, 40, 60, 60, score=0.8), "person", mask)
    params = SegmentParams(dilation=0)
    segment = segments_from_detections([segm], 100, 100, params)[0]
    assert segment.mask.sum() == 10 * 16 and segment.mask[25:35, 22:38].all()
    as_bbox = segments_from_detections([segm], 100, 100, params, use_masks=False)[0]
    assert as_bbox.mask.sum() == 21 * 21


# --- SAM (core.sam_predict, make_sam_mask, segs_bitwise_and_mask) ---------------------------


def block(y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
    mask = np.zeros((100, 100), bool)
    mask[y1:y2, x1:x2] = True
    return mask


def test_sam_keeps_passing_masks_else_the_best_one() -> None:
    a, b, c = block(0, 10, 0, 10), block(20, 30, 0, 10), block(40, 50, 0, 10)
    passing = select_sam_masks([a, b, c], [0.95, 0.5, 0.93], 0.93)  # score >= threshold
    assert len(passing) == 2 and passing[0] is a and passing[1] is c
    assert select_sam_masks([a, b, c], [0.6, 0.9, 0.9], 0.93)[0] is b  # first of the best
    assert select_sam_masks([a, b], [0.0, 0.0], 0.93) == []  # the best must score > 0
    union = sam_mask([a, c], 100, 100, dilation=0)
    assert union.dtype == np.float32 and union.sum() == 200
    assert sam_mask([], 100, 100, dilation=5).sum() == 0
    # A 4x4 erosion takes 1 pixel off the far sides; the image edge counts as inside.
    assert sam_mask([a], 100, 100, dilation=-4).sum() == 9 * 9


def test_sam_result_is_anded_with_each_bbox_mask() -> None:
    params = SegmentParams(dilation=0)
    segments = segments_from_detections(
        [found(20, 20, 40, 40), found(60, 60, 80, 80)], 100, 100, params
    )
    # First segment: SAM finds its lower half plus background; second: nothing passes.
    first = ([block(30, 60, 0, 100)], [0.95])
    second = ([block(60, 70, 60, 70), block(60, 81, 60, 81)], [0.5, 0.7])
    refined = refine_with_sam(segments, [first, second], 0.93, 0, (100, 100))
    assert isinstance(refined[0], Segment) and refined[0].crop_region == segments[0].crop_region
    assert refined[0].mask.sum() == 11 * 21  # rows 30..40 of the 21x21 box
    assert refined[1].mask.sum() == 21 * 21  # the best mask (0.7) covers the whole box
    assert set(np.unique(refined[0].mask)) <= {0.0, 1.0}
    empty = and_with_mask(segments, np.zeros((100, 100), np.float32))
    assert all(s.is_empty for s in empty) and not segments[0].is_empty


# --- feather and paste (utils.tensor_gaussian_blur_mask, tensor_paste) ----------------------


def test_feather_kernel_size_and_small_crops() -> None:
    assert feather_kernel_size(5, 100, 100) == 11
    assert feather_kernel_size(20, 200, 300) == 41
    assert feather_kernel_size(5, 11, 40) == 5  # short side <= 11: int(11/2) = 5
    assert feather_kernel_size(5, 8, 40) == 5  # int(8/2) = 4, made odd
    assert feather_kernel_size(5, 5, 40) == 3
    assert feather_kernel_size(5, 3, 40) is None  # int(1.5) = 1 -> odd 1 < 3: no blur
    assert feather_kernel_size(0, 100, 100) is None


def test_feather_blurs_the_edge_only_and_matches_torchvision_as_impact_calls_it() -> None:
    import torch
    from torchvision.transforms import GaussianBlur

    mask = np.zeros((120, 100), np.float32)
    mask[20:100, 20:80] = 1.0
    blurred = feather_mask(mask, 5)
    impact = GaussianBlur(kernel_size=11, sigma=10.0)(torch.from_numpy(mask)[None, None])[0, 0]
    np.testing.assert_array_equal(blurred, impact.numpy())
    assert blurred[60, 50] == pytest.approx(1.0, abs=1e-6)  # far inside: unchanged
    assert blurred[5, 5] == 0.0 and blurred[110, 95] == 0.0  # far outside: 0
    assert 0.3 < blurred[60, 20] < 0.7  # the edge: in between
    np.testing.assert_array_equal(feather_mask(mask, 0), mask)


def test_paste_blends_the_refined_crop_by_the_mask() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((50, 60, 3), dtype=np.float32)
    refined = rng.random((20, 30, 3), dtype=np.float32)
    mask = rng.random((20, 30), dtype=np.float32)
    out = paste_segment(image, refined, (25, 10, 55, 30), mask)
    m = mask[..., None]
    np.testing.assert_allclose(out[10:30, 25:55], (1 - m) * image[10:30, 25:55] + m * refined)
    outside = np.ones(image.shape[:2], bool)
    outside[10:30, 25:55] = False
    np.testing.assert_array_equal(out[outside], image[outside])
    full = paste_segment(image, refined, (25, 10, 55, 30), np.ones((20, 30), np.float32))
    np.testing.assert_array_equal(full[10:30, 25:55], refined)


# --- the scale a segment is refined at (core.enhance_detail) --------------------------------


def test_upscale_for_bbox_or_crop_and_the_max_size_cap() -> None:
    assert choose_crop_scale((0, 0, 64, 80), 128, 96) == CropScale(8.0, 1024, 768)
    assert choose_crop_scale((0, 0, 64, 80), 128, 256, guide_size_for_bbox=False) == (
        CropScale(4.0, 512, 1024)
    )
    capped = choose_crop_scale((0, 0, 64, 64), 192, 128)  # 8x = 1536 wide > 1024
    assert capped == CropScale(8.0 * 1024 / 1536, 1024, 682)
    assert choose_crop_scale((0, 0, 64, 64), 192, 128, max_size=2048) == CropScale(8.0, 1536, 1024)


def test_skip_rules_and_force_inpaint() -> None:
    big = (0, 0, 600, 520)
    assert choose_crop_scale(big, 800, 700, force_inpaint=False) is None  # already >= guide
    assert choose_crop_scale(big, 800, 700) == CropScale(1.0, 800, 700)
    small_crop = dict(guide_size_for_bbox=False)
    assert choose_crop_scale((0, 0, 100, 100), 600, 700, force_inpaint=False, **small_crop) is None
    assert choose_crop_scale((0, 0, 100, 100), 600, 700, **small_crop) == CropScale(1.0, 600, 700)
    # The cap can bring upscale to <= 1: 5.12 -> 0.512 for a 2000x1500 crop.
    assert choose_crop_scale((0, 0, 100, 100), 2000, 1500, force_inpaint=False) is None
    assert choose_crop_scale((0, 0, 100, 100), 2000, 1500) == CropScale(1.0, 2000, 1500)
    # Not both sides >= guide: refined, at 512/500.
    assert choose_crop_scale((0, 0, 500, 600), 1000, 1000, force_inpaint=False) == CropScale(
        512 / 500, 1024, 1024
    )


# --- the detailers' YOLO models through the safe loader ------------------------------------


@pytest.fixture(scope="module")
def yolo_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics")))
    return configure_ultralytics_offline()


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[::2, 32:224])  # 256 high, 192 wide


def random_model(kind: str, nc: int, names: dict[int, str], seed: int) -> Any:
    """A random YOLOv8n (or -seg) whose class scores sit near 0.5, so boxes come out."""
    import torch
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    torch.manual_seed(seed)
    if kind == "segment":
        model = SegmentationModel("yolov8n-seg.yaml", nc=nc, verbose=False)
    else:
        model = DetectionModel("yolov8n.yaml", nc=nc, verbose=False)
    model.names = names
    for branch in model.model[-1].cv3:
        torch.nn.init.zeros_(branch[-1].bias)
    return model


@pytest.fixture(scope="module")
def segm_checkpoint(yolo_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("segm") / "person_yolov8n-seg.pt"
    # A small training size keeps the random model's box count (and so its masks) small.
    save_like_ultralytics(
        random_model("segment", 1, {0: "person"}, 3), path, 96, finish=True, task="segment"
    )
    return path


def test_segm_model_is_rebuilt_and_finds_what_ultralytics_finds(
    segm_checkpoint: Path, portrait: np.ndarray
) -> None:
    import torch
    from PIL import Image
    from ultralytics import YOLO
    from ultralytics.nn.tasks import SegmentationModel

    detector = YoloDetector.from_file(segm_checkpoint, confidence=LOW_CONFIDENCE)
    assert type(detector.model) is SegmentationModel and detector.has_masks
    assert not any(hasattr(type(m), "pickled_as") for m in detector.model.modules())
    rebuilt, original = detector.model.state_dict(), half_state(random_model("segment", 1, {}, 3))
    assert rebuilt.keys() == original.keys()
    assert all(torch.equal(rebuilt[key], original[key]) for key in original)

    detections = detector.detect(portrait)
    # Impact-Subpack hands YOLO(path) a PIL image; ultralytics' own loader, same file.
    expected = YOLO(str(segm_checkpoint)).predict(
        Image.fromarray(portrait), conf=LOW_CONFIDENCE, device="cpu", verbose=False
    )[0]
    assert len(detections) > 0
    corners = np.array([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in detections])
    np.testing.assert_array_equal(corners.astype(np.float32), expected.boxes.xyxy.numpy())
    assert [d.box.score for d in detections] == expected.boxes.conf.numpy().tolist()
    assert {d.label for d in detections} == {"person"}
    assert all(d.mask is not None and d.mask.dtype == bool for d in detections)
    # ultralytics' own image-size (retina) masks agree but at the edges of the box crops.
    retina = YOLO(str(segm_checkpoint)).predict(
        Image.fromarray(portrait), conf=LOW_CONFIDENCE, retina_masks=True, verbose=False
    )[0]
    theirs = retina.masks.data.numpy().astype(bool)
    ours = np.stack([d.mask for d in detections if d.mask is not None])
    assert ours.shape == theirs.shape == (len(detections), *portrait.shape[:2]) and ours.any()
    assert all((mine == mask).mean() > 0.97 for mine, mask in zip(ours, theirs, strict=True))

    segments = segments_from_detections(detections, 256, 192, SegmentParams(bbox_threshold=0.3))
    for segment in segments:
        x1, y1, x2, y2 = segment.crop_region
        assert segment.mask.shape == (y2 - y1, x2 - x1)


def test_ultralytics_8_0_segm_checkpoint_with_detect_forward_loads(
    yolo_config: Path, tmp_path: Path
) -> None:
    """8.0 releases kept Segment.detect = Detect.forward, pickled as getattr(Detect, 'forward')."""
    import torch
    from ultralytics.nn.modules.head import Detect

    model = random_model("segment", 1, {0: "person"}, seed=4)
    model.model[-1].detect = Detect.forward
    path = tmp_path / "person_yolov8n-seg.pt"
    torch.save({"model": deepcopy(model).half(), "train_args": {"imgsz": 96}}, path)
    assert "builtins.getattr" in torch.serialization.get_unsafe_globals_in_checkpoint(path)

    detector = YoloDetector.from_file(path)
    assert detector.task == "segment"
    rebuilt = detector.model.state_dict()
    assert all(torch.equal(rebuilt[key], value) for key, value in half_state(model).items())


def test_getattr_for_anything_but_detect_forward_is_refused_unrun(
    yolo_config: Path, tmp_path: Path
) -> None:
    import torch
    from ultralytics.nn.modules.conv import Conv

    class GetsAttribute:
        def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
            return getattr, (Conv, "__init__")

    path = tmp_path / "hand_yolov8n.pt"
    torch.save({"model": GetsAttribute()}, path)
    with pytest.raises(ModelNotFoundError, match=r"calls builtins\.getattr\(.*Conv, '__init__'\)"):
        YoloDetector.from_file(path)


def test_two_class_bbox_model_keeps_its_class_names(
    yolo_config: Path, tmp_path: Path, portrait: np.ndarray
) -> None:
    from ultralytics import YOLO

    names = {0: "eyes", 1: "eye"}
    path = tmp_path / "Eyeful_v2-Paired.pt"
    save_like_ultralytics(random_model("detect", 2, names, seed=5), path, 96, finish=True)
    detector = YoloDetector.from_file(path, confidence=LOW_CONFIDENCE)
    assert detector.names == names and detector.task == "detect" and not detector.has_masks
    detections = detector.detect(portrait)
    expected = YOLO(str(path)).predict(
        np.ascontiguousarray(portrait[..., ::-1]), conf=LOW_CONFIDENCE, verbose=False
    )[0]
    assert len(detections) == len(expected.boxes) > 0
    assert [d.label for d in detections] == [names[int(c)] for c in expected.boxes.cls]
    assert all(d.mask is None for d in detections)
    face = YoloFaceDetector.from_file(path, confidence=LOW_CONFIDENCE)
    assert face.model.names == names  # the Expression editor's wrapper loads it the same way


def test_segm_yaml_naming_a_foreign_layer_is_refused_unrun(
    segm_checkpoint: Path, tmp_path: Path
) -> None:
    import torch

    marker = tmp_path / "marker"
    checkpoint = torch.load(segm_checkpoint, weights_only=False)  # our own file
    checkpoint["model"].yaml["head"][-1][2] = f"__import__('os').system('touch {marker}')"
    path = tmp_path / "person_yolov8n-seg.pt"
    torch.save(checkpoint, path)
    with pytest.raises(ModelNotFoundError, match="not a YOLOv8 detector layer") as refused:
        YoloDetector.from_file(path)
    assert str(path) in str(refused.value) and "Detector" in str(refused.value)
    assert not marker.exists()

    checkpoint["model"].yaml["head"][-1][2] = "Detect"  # a detector's head in a segm model
    torch.save(checkpoint, path)
    with pytest.raises(ModelNotFoundError, match="'Detect' layer"):
        YoloDetector.from_file(path)


def test_detector_files_are_listed_from_bbox_segm_and_ultralytics(tmp_path: Path) -> None:
    models = tmp_path / "models"
    assert list_detector_files(models) == [] and list_detector_files(None) == []
    for name in ("bbox/hand_yolov8s.pt", "bbox/face_yolov8m.pt", "bbox/eyes/Eyeful_v2-Paired.pt"):
        (models / "ultralytics" / name).parent.mkdir(parents=True, exist_ok=True)
        (models / "ultralytics" / name).write_bytes(b"")
    (models / "ultralytics" / "segm").mkdir()
    (models / "ultralytics" / "segm" / "person_yolov8m-seg.pt").write_bytes(b"")
    (models / "ultralytics" / "face_yolov8n.pt").write_bytes(b"")
    (models / "ultralytics" / "notes.txt").write_bytes(b"")
    assert list_detector_files(models) == [
        "bbox/eyes/Eyeful_v2-Paired.pt",
        "bbox/face_yolov8m.pt",
        "bbox/hand_yolov8s.pt",
        "segm/person_yolov8m-seg.pt",
        "face_yolov8n.pt",
    ]
    found_file = find_detector_file(models, "segm/person_yolov8m-seg.pt")
    assert found_file == models / "ultralytics" / "segm" / "person_yolov8m-seg.pt"
    assert find_detector_file(models, "../../etc/passwd") is None
    assert find_detector_file(models, "notes.txt") is None
