"""Identity embeddings: dlib's packaged descriptor on real photos (the same person after a
colour change is above its threshold, other people are below), ArcFace through
insightface's own model_zoo with random ONNX files in a pack folder (shape, unit length,
alignment by the pack's detector, missing files), the choice between them, and no
downloads."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.errors import InputError, ModelNotFoundError
from engine.faces.arcface import ARCFACE_SAME_PERSON, ArcFaceIdentityEncoder
from engine.faces.boxes import FaceBox
from engine.faces.identity import (
    DLIB_DISTANCE_THRESHOLD,
    DLIB_RECOGNITION,
    DLIB_SAME_PERSON,
    DLIB_SHAPE_5,
    DlibIdentityEncoder,
    IdentityEncoder,
    describe_identity,
    find_identity_pack,
    identity_encoder,
    identity_encoder_identity,
    similarity,
)
from engine.faces.landmarks import dlib_rectangle, packaged_dlib_weights
from engine.faces.mtcnn import MtcnnFaceDetector

# insightface's reference points for a 112 x 112 ArcFace crop (utils/face_align.py).
ARCFACE_POINTS = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655]]
    + [[70.7299, 92.2041]],
    dtype=np.float32,
)
DETECTOR_SIZE = 128  # the test detector's fixed input
STRIDES = (8, 16, 32)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No name lookup or connection, and nothing written to ~/.insightface (where
    insightface keeps what it downloads)."""
    attempts: list[tuple[Any, ...]] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("the network is off in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    yield
    assert not attempts, f"tried to reach the network: {attempts}"
    assert not (home / ".insightface").exists(), "insightface tried to fetch a model"


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def group_photo() -> np.ndarray:
    """insightface's t1.jpg: six people, none of them the astronaut."""
    import cv2

    path = resources.files("insightface") / "data" / "images" / "t1.jpg"
    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


@pytest.fixture(scope="module")
def detector() -> MtcnnFaceDetector:
    return MtcnnFaceDetector()


@pytest.fixture(scope="module")
def astronaut_box(detector: MtcnnFaceDetector, astronaut: np.ndarray) -> FaceBox:
    return detector.detect(astronaut)[0]


@pytest.fixture(scope="module")
def dlib_encoder() -> DlibIdentityEncoder:
    return DlibIdentityEncoder()


def warmer_and_brighter(rgb: np.ndarray) -> np.ndarray:
    """+10 % brightness and a slight warm shift (red up 4 %, blue down 4 %)."""
    shifted = rgb.astype(np.float32) * 1.10 * np.array([1.04, 1.0, 0.96], dtype=np.float32)
    return np.clip(np.round(shifted), 0, 255).astype(np.uint8)


def test_dlib_same_person_after_a_colour_change_is_above_its_threshold(
    dlib_encoder: DlibIdentityEncoder, astronaut: np.ndarray, astronaut_box: FaceBox
) -> None:
    original = dlib_encoder.embed(astronaut, astronaut_box)
    graded = dlib_encoder.embed(warmer_and_brighter(astronaut), astronaut_box)
    score = similarity(original, graded)
    print(f"dlib: astronaut vs astronaut +10% brighter, warmer: {score:.4f}")
    assert isinstance(dlib_encoder, IdentityEncoder)
    assert original.shape == (128,) and original.dtype == np.float32
    assert np.linalg.norm(original) == pytest.approx(1.0, abs=1e-5)
    assert score > dlib_encoder.same_person == DLIB_SAME_PERSON
    assert similarity(original, original) == pytest.approx(1.0, abs=1e-6)


def test_dlib_different_people_are_below_its_threshold(
    dlib_encoder: DlibIdentityEncoder,
    detector: MtcnnFaceDetector,
    astronaut: np.ndarray,
    astronaut_box: FaceBox,
    group_photo: np.ndarray,
) -> None:
    astronaut_vector = dlib_encoder.embed(astronaut, astronaut_box)
    faces = detector.detect(group_photo)
    assert len(faces) == 6
    scores = [similarity(astronaut_vector, dlib_encoder.embed(group_photo, f)) for f in faces]
    print("dlib: astronaut vs the six people of t1.jpg: " + ", ".join(f"{s:.4f}" for s in scores))
    assert max(scores) < DLIB_SAME_PERSON


def test_dlib_cosine_threshold_agrees_with_dlibs_distance_threshold(
    astronaut: np.ndarray, astronaut_box: FaceBox
) -> None:
    """On dlib's raw descriptors, 'distance < 0.6' and 'cosine >= DLIB_SAME_PERSON' agree:
    for the same face (mirrored, regraded) and for other faces."""
    import cv2
    import dlib

    shape = dlib.shape_predictor(str(packaged_dlib_weights(DLIB_SHAPE_5)))
    model = dlib.face_recognition_model_v1(str(packaged_dlib_weights(DLIB_RECOGNITION)))

    def raw(image: np.ndarray, box: FaceBox) -> np.ndarray:
        return np.asarray(model.compute_face_descriptor(image, shape(image, dlib_rectangle(box))))

    width = astronaut.shape[1]
    mirrored = FaceBox(
        width - astronaut_box.x2,
        astronaut_box.y1,
        width - astronaut_box.x1,
        astronaut_box.y2,
        astronaut_box.score,
    )
    reference = raw(astronaut, astronaut_box)
    same = [
        raw(np.ascontiguousarray(astronaut[:, ::-1]), mirrored),
        raw(warmer_and_brighter(astronaut), astronaut_box),
    ]
    hanks_path = resources.files("insightface") / "data" / "images" / "Tom_Hanks_54745.png"
    hanks = np.ascontiguousarray(cv2.imread(str(hanks_path))[:, :, ::-1])
    other = [raw(hanks, FaceBox(0, 0, 111, 111, 1.0))]
    for vector, is_same in [(v, True) for v in same] + [(v, False) for v in other]:
        distance = float(np.linalg.norm(reference - vector))
        score = similarity(reference, vector)
        print(f"dlib raw: distance {distance:.3f}, cosine {score:.4f}, same person: {is_same}")
        assert (distance < DLIB_DISTANCE_THRESHOLD) == is_same
        assert (score >= DLIB_SAME_PERSON) == is_same
    lengths = [float(np.linalg.norm(v)) for v in [reference, *same, *other]]
    assert all(1.3 < length < 1.65 for length in lengths), lengths


def test_similarity_is_the_cosine_on_every_scale() -> None:
    a = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    b = np.array([1.0, 1.0, 0.0], dtype=np.float64)
    assert similarity(a, b) == pytest.approx(np.sqrt(0.5))
    assert similarity(3 * a, b / 7) == pytest.approx(np.sqrt(0.5))
    assert similarity(a, -a) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="different sizes"):
        similarity(a, np.ones(4))
    with pytest.raises(ValueError, match="non-zero"):
        similarity(a, np.zeros(3))


def test_without_a_pack_the_packaged_dlib_descriptor_is_used(tmp_path: Path) -> None:
    (tmp_path / "insightface" / "models" / "empty_pack").mkdir(parents=True)
    for models_dir in (None, tmp_path):
        assert find_identity_pack(models_dir) is None
        assert identity_encoder_identity(models_dir).startswith("dlib-face-descriptor:")
        assert "put insightface's buffalo_l folder" in describe_identity(models_dir)
    assert str(tmp_path / "insightface" / "models") in describe_identity(tmp_path)
    assert isinstance(identity_encoder(tmp_path, "cpu"), DlibIdentityEncoder)


# --- ArcFace through insightface, with random ONNX files in a pack folder ---------------


def save_arcface_like(path: Path, seed: int = 0) -> Path:
    """A random ArcFace-shaped model: (N, 3, 112, 112) -> (N, 512), as w600k_r50 is."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((3 * 14 * 14, 512)).astype(np.float32)
    nodes = [
        helper.make_node(
            "AveragePool", ["input.1"], ["pooled"], name="pool", kernel_shape=[8, 8], strides=[8, 8]
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["683"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "arcface_like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", 512])],
        [
            numpy_helper.from_array(weights, "fc_w"),
            numpy_helper.from_array(np.zeros(512, np.float32), "fc_b"),
        ],
    )
    return _save(graph, path)


def save_scrfd_like(path: Path, finds_a_face: bool = True) -> Path:
    """A minimal SCRFD-shaped detector (fixed 128 x 128 input; 9 outputs: scores, boxes and
    5 keypoints at strides 8, 16, 32) that always finds one face: the central half of its
    input, with ArcFace's reference keypoints scaled into it."""
    from onnx import TensorProto, helper, numpy_helper

    size, face, stride = DETECTOR_SIZE, DETECTOR_SIZE / 2, 32
    cells = size // stride
    centre_anchor = ((size // 2 // stride) * cells + size // 2 // stride) * 2  # 2 anchors
    keypoints = (size / 2 - face / 2 + ARCFACE_POINTS * face / 112 - size / 2) / stride
    firing = {
        "score": [0.9 if finds_a_face else 0.0],
        "bbox": [face / 2 / stride] * 4,
        "kps": keypoints.ravel(),
    }
    # The outputs ignore the image, but the graph must read its input.
    nodes = [
        helper.make_node("ReduceMean", ["input.1"], ["mean"], name="mean", keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"], name="nothing"),
    ]
    constants = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outputs = []
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for step in STRIDES:
            rows = (size // step) ** 2 * 2
            values = np.zeros((rows, width), np.float32)
            if step == stride:
                values[centre_anchor] = firing[kind]
            name = f"{kind}_{step}"
            constants.append(numpy_helper.from_array(values, f"{name}_value"))
            nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name], name=name))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [rows, width]))
    graph = helper.make_graph(
        nodes,
        "scrfd_like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])],
        outputs,
        constants,
    )
    return _save(graph, path)


def _save(graph: Any, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_pack(models_dir: Path, name: str, detector: str, recognizer: str) -> Path:
    """<models>/insightface/models/<name>/ with a test detector and recognition model."""
    folder = models_dir / "insightface" / "models" / name
    save_scrfd_like(folder / detector)
    save_arcface_like(folder / recognizer)
    return folder


@pytest.fixture(scope="module")
def arcface_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models_dir = tmp_path_factory.mktemp("models")
    make_pack(models_dir, "buffalo_l", "det_10g.onnx", "w600k_r50.onnx")
    return models_dir


@pytest.fixture(scope="module")
def arcface(arcface_models: Path) -> ArcFaceIdentityEncoder:
    encoder = identity_encoder(arcface_models, "cpu")
    assert isinstance(encoder, ArcFaceIdentityEncoder)
    return encoder


def test_arcface_embeds_through_insightface_and_aligns_with_the_packs_keypoints(
    arcface: ArcFaceIdentityEncoder, astronaut: np.ndarray, astronaut_box: FaceBox
) -> None:
    import cv2

    assert isinstance(arcface, IdentityEncoder)
    assert arcface.same_person == ARCFACE_SAME_PERSON == 0.4
    assert arcface.label == "ArcFace (insightface buffalo_l: w600k_r50.onnx)"
    vector = arcface.embed(astronaut, astronaut_box)
    assert vector.shape == (512,) and vector.dtype == np.float32
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert similarity(vector, arcface.embed(astronaut.copy(), astronaut_box)) == pytest.approx(
        1.0, abs=1e-6
    )
    # The same face elsewhere on a larger canvas: the same aligned crop, the same vector.
    canvas = np.zeros((700, 700, 3), np.uint8)
    canvas[100:612, 50:562] = astronaut
    moved = FaceBox(
        astronaut_box.x1 + 50,
        astronaut_box.y1 + 100,
        astronaut_box.x2 + 50,
        astronaut_box.y2 + 100,
        astronaut_box.score,
    )
    assert similarity(vector, arcface.embed(canvas, moved)) == pytest.approx(1.0, abs=1e-5)
    # The detector put the face in the central half of the square crop around the box, so
    # the aligned crop is that square resized to 112 (up to warpAffine's resampling).
    side = round(max(astronaut_box.width, astronaut_box.height))
    left = round((astronaut_box.x1 + astronaut_box.x2 - side) / 2)
    top = round((astronaut_box.y1 + astronaut_box.y2 - side) / 2)
    square = astronaut[top : top + side, left : left + side, ::-1]
    direct = arcface._recognizer.get_feat(cv2.resize(np.ascontiguousarray(square), (112, 112)))
    assert similarity(vector, direct) > 0.99
    elsewhere = FaceBox(300, 300, 400, 420, 1.0)
    assert similarity(vector, arcface.embed(astronaut, elsewhere)) < 0.99


def test_arcface_pack_missing_a_file_says_which_and_where(tmp_path: Path) -> None:
    folder = tmp_path / "insightface" / "models" / "buffalo_l"
    save_scrfd_like(folder / "det_10g.onnx")
    with pytest.raises(ModelNotFoundError) as caught:
        identity_encoder(tmp_path, "cpu")
    message = str(caught.value)
    assert str(folder) in message and "missing w600k_r50.onnx" in message
    assert "det_10g.onnx and w600k_r50.onnx" in message


def test_packs_are_chosen_buffalo_l_first_then_antelopev2_then_any(tmp_path: Path) -> None:
    other = make_pack(tmp_path, "aaa_pack", "detector.onnx", "recognition.onnx")
    assert find_identity_pack(tmp_path) == other
    encoder = identity_encoder(tmp_path, "cpu")  # routed by insightface from its shapes
    assert isinstance(encoder, ArcFaceIdentityEncoder)
    assert encoder.pack.detector.name == "detector.onnx"
    assert encoder.pack.recognizer.name == "recognition.onnx"
    # antelopev2.zip unpacks as antelopev2/antelopev2/.
    antelope = make_pack(
        tmp_path, "antelopev2/antelopev2", "scrfd_10g_bnkps.onnx", "glintr100.onnx"
    ).parent
    assert find_identity_pack(tmp_path) == antelope
    assert identity_encoder(tmp_path, "cpu").label.endswith("antelopev2: glintr100.onnx)")
    buffalo = make_pack(tmp_path, "buffalo_l", "det_10g.onnx", "w600k_r50.onnx")
    assert find_identity_pack(tmp_path) == buffalo
    assert describe_identity(tmp_path) == "Identity guard: ArcFace (insightface buffalo_l)."


def test_unknown_pack_without_a_detector_is_refused(tmp_path: Path) -> None:
    save_arcface_like(tmp_path / "insightface" / "models" / "mine" / "rec.onnx")
    with pytest.raises(ModelNotFoundError, match="it has no detector"):
        identity_encoder(tmp_path, "cpu")


def test_arcface_identity_follows_the_files_without_loading(arcface_models: Path) -> None:
    identity = identity_encoder_identity(arcface_models)
    assert identity.startswith("arcface:buffalo_l:det_10g.onnx:")
    assert identity == identity_encoder(arcface_models, "cpu").identity
    recognizer = arcface_models / "insightface" / "models" / "buffalo_l" / "w600k_r50.onnx"
    stat = recognizer.stat()
    os.utime(recognizer, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert identity_encoder_identity(arcface_models) != identity


def test_a_face_the_packs_detector_cannot_find_is_an_input_error(
    tmp_path: Path, astronaut: np.ndarray, astronaut_box: FaceBox
) -> None:
    folder = make_pack(tmp_path, "buffalo_l", "det_10g.onnx", "w600k_r50.onnx")
    save_scrfd_like(folder / "det_10g.onnx", finds_a_face=False)
    encoder = identity_encoder(tmp_path, "cpu")
    with pytest.raises(InputError, match=r"det_10g.onnx\) finds no face in the box"):
        encoder.embed(astronaut, astronaut_box)


def test_an_unreadable_pack_file_is_a_model_error(tmp_path: Path) -> None:
    folder = make_pack(tmp_path, "buffalo_l", "det_10g.onnx", "w600k_r50.onnx")
    (folder / "w600k_r50.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(ModelNotFoundError, match=r"w600k_r50.onnx could not be read as an ONNX"):
        identity_encoder(tmp_path, "cpu")
