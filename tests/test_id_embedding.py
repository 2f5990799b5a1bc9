"""PuLID's ID embedding path: FFHQ alignment, the parsing mask rule, EVA02-CLIP read from
EVA-CLIP's key layout with its hidden-state taps, the tiny path end to end and the messages
for a photo without a face and for missing models. Every model is random and built here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engine.errors import InputError, ModelNotFoundError
from engine.faces.boxes import FaceBox
from engine.identity.eva_clip import (
    EVA_FILE,
    EVA_REPO,
    HIDDEN_STATE_BLOCKS,
    TINY_EVA,
    EvaVisionEncoder,
    build_eva_vision,
    find_eva_file,
    load_eva_vision,
)
from engine.identity.face_parsing import (
    ALIGNED_SIZE,
    BORDER_RGB,
    FFHQ_TEMPLATE_512,
    PARSING_FILE,
    WHITE_CLASSES,
    BiSeNet,
    align_face,
    face_features_image,
    load_face_parser,
)
from engine.identity.id_embedding import (
    DetectedFace,
    IdEmbedder,
    IdEmbedderConfig,
    MtcnnStandInFaces,
    find_id_model_files,
    pick_face,
)

# timm's names -> EVA-CLIP's (the inverse of what timm's checkpoint filter renames).
EVA_CLIP_NAMES = (
    ("mlp.fc1_g", "mlp.w1"),
    ("mlp.fc1_x", "mlp.w2"),
    ("mlp.fc2", "mlp.w3"),
    ("mlp.norm", "mlp.ffn_ln"),
    ("attn.norm", "attn.inner_attn_ln"),
    ("attn.q_proj.bias", "attn.q_bias"),
    ("attn.v_proj.bias", "attn.v_bias"),
)

pytestmark = pytest.mark.usefixtures("no_network")  # tests/conftest.py


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def astronaut_face(astronaut: np.ndarray) -> DetectedFace:
    return pick_face(MtcnnStandInFaces().faces(astronaut))


@pytest.fixture(scope="module")
def tiny_embedder() -> IdEmbedder:
    return IdEmbedder(IdEmbedderConfig(tiny=True, device="cpu"))


@pytest.fixture(scope="module")
def tiny_tower() -> Any:
    torch.manual_seed(7)
    return build_eva_vision(TINY_EVA)


def moved(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def eva_clip_layout(model: Any) -> dict[str, torch.Tensor]:
    """A whole-CLIP checkpoint in EVA-CLIP's layout holding this timm tower: renamed keys under
    visual., the rope tables EVA-CLIP saves, and text-tower keys that must be ignored."""
    state = {}
    for key, value in model.state_dict().items():
        for timm_name, eva_name in EVA_CLIP_NAMES:
            key = key.replace(timm_name, eva_name)
        state[f"visual.{key}"] = value.clone()
    rope = torch.randn(TINY_EVA.tokens - 1, TINY_EVA.width // TINY_EVA.heads)
    for prefix in ["visual."] + [f"visual.blocks.{i}.attn." for i in range(TINY_EVA.depth)]:
        state[f"{prefix}rope.freqs_cos"], state[f"{prefix}rope.freqs_sin"] = rope, rope
    state["text.positional_embedding"] = torch.zeros(77, 8)
    state["logit_scale"] = torch.tensor(4.6)
    return state


class RunsCode:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("echo pickled code ran",))


# --- alignment -----------------------------------------------------------------------------


def test_alignment_puts_the_astronauts_keypoints_onto_the_template(
    astronaut: np.ndarray, astronaut_face: DetectedFace
) -> None:
    import cv2

    aligned = align_face(astronaut, astronaut_face.keypoints)
    assert aligned.image.shape == (ALIGNED_SIZE, ALIGNED_SIZE, 3)
    (a, b, _), (c, d, _) = aligned.matrix
    assert a == pytest.approx(d) and b == pytest.approx(-c)  # a similarity: no shear
    # Five real keypoints are never an exact similarity of the template: here they land
    # within 16 px (3 % of the face crop).
    assert np.abs(moved(aligned.matrix, astronaut_face.keypoints) - FFHQ_TEMPLATE_512).max() < 16
    # The astronaut's keypoints snapped onto a similarity image of the template are put
    # onto the template within a pixel.
    inverse = cv2.invertAffineTransform(aligned.matrix)
    exact = moved(inverse, FFHQ_TEMPLATE_512)
    realigned = align_face(astronaut, exact)
    assert np.abs(moved(realigned.matrix, exact) - FFHQ_TEMPLATE_512).max() < 1.0
    # The pixels at each keypoint end up where the matrix sends them, within a pixel.
    for point in np.round(exact).astype(int):
        marked = np.zeros_like(astronaut)
        marked[point[1] - 2 : point[1] + 3, point[0] - 2 : point[0] + 3] = 255
        spot = align_face(marked, exact).image[:, :, 0].astype(np.float64)
        rows, cols = np.indices(spot.shape)
        centre = np.array([(cols * spot).sum(), (rows * spot).sum()]) / spot.sum()
        assert np.abs(centre - moved(realigned.matrix, point[None])[0]).max() < 1.0


def test_outside_the_photo_is_facexlibs_grey() -> None:
    photo = np.full((100, 100, 3), 50, np.uint8)
    keypoints = FFHQ_TEMPLATE_512 * 60 / 512 - 20  # the face's crop starts 20 px off the photo
    image = align_face(photo, keypoints).image
    assert tuple(image[0, 0]) == BORDER_RGB == (132, 133, 135)
    assert tuple(image[-1, -1]) == (50, 50, 50)


# --- parsing -------------------------------------------------------------------------------


def test_parsing_classes_become_white_or_the_grey_face() -> None:
    classes = torch.arange(19).reshape(1, 1, 1, 19)
    face = torch.zeros(1, 3, 1, 19)
    face[:, 0], face[:, 1], face[:, 2] = 0.2, 0.6, 1.0
    image = face_features_image(face, classes)
    grey = 0.299 * 0.2 + 0.587 * 0.6 + 0.114 * 1.0
    for index in range(19):
        expected = 1.0 if index in WHITE_CLASSES else grey
        assert image[0, :, 0, index].tolist() == pytest.approx([expected] * 3)
    assert 17 not in WHITE_CLASSES  # hair stays, as PuLID keeps it


def test_bisenet_has_facexlibs_layout_and_loads_from_the_models_folder(tmp_path: Path) -> None:
    network = BiSeNet()
    # facexlib's BiSeNet(num_class=19): ResNet-18 trunk, two refinement modules, three heads.
    assert sum(p.numel() for p in network.parameters()) == 13_300_416
    keys = network.state_dict()
    for key in ("cp.resnet.layer4.1.bn2.running_var", "cp.arm32.conv_atten.weight"):
        assert key in keys
    assert keys["ffm.convblk.conv.weight"].shape == (256, 256, 1, 1)
    assert keys["conv_out16.conv_out.weight"].shape == (19, 64, 1, 1)
    path = tmp_path / "facexlib" / PARSING_FILE
    path.parent.mkdir()
    torch.save(keys, path)
    found = find_id_model_files_error(tmp_path)
    assert PARSING_FILE not in found
    parser = load_face_parser(path)
    assert parser.face_features(np.zeros((64, 64, 3), np.uint8)).shape == (1, 3, 64, 64)


# --- EVA02-CLIP ----------------------------------------------------------------------------


def test_eva_loads_an_eva_clip_checkpoint_strictly(tiny_tower: Any, tmp_path: Path) -> None:
    path = tmp_path / "clip" / EVA_FILE
    path.parent.mkdir()
    torch.save(eva_clip_layout(tiny_tower), path)
    assert find_eva_file(tmp_path, tmp_path / "hub") == path
    loaded = load_eva_vision(path, TINY_EVA)
    loaded_state = loaded.model.state_dict()
    for key, value in tiny_tower.state_dict().items():
        assert torch.equal(loaded_state[key], value), key
    faces = torch.rand(1, 3, 64, 64)
    ours = EvaVisionEncoder(tiny_tower, TINY_EVA, "source", "source").encode(faces)
    theirs = loaded.encode(faces)
    assert torch.allclose(ours[0], theirs[0]) and torch.equal(ours[1][2], theirs[1][2])


def test_eva_hidden_states_are_the_inputs_of_blocks_4_8_12_16_20(tiny_tower: Any) -> None:
    entering: dict[int, torch.Tensor] = {}
    hooks = [
        tiny_tower.blocks[index].register_forward_pre_hook(
            lambda _module, args, index=index: entering.__setitem__(index, args[0])
        )
        for index in range(TINY_EVA.depth)
    ]
    try:
        embedding, hidden = EvaVisionEncoder(tiny_tower, TINY_EVA, "t", "t").encode(
            torch.rand(1, 3, 80, 80)
        )
    finally:
        for hook in hooks:
            hook.remove()
    assert HIDDEN_STATE_BLOCKS == (4, 8, 12, 16, 20)
    assert len(hidden) == 5
    for block, state in zip(HIDDEN_STATE_BLOCKS, hidden, strict=True):
        assert state.shape == (1, TINY_EVA.tokens, TINY_EVA.width)
        assert torch.equal(state, entering[block])
    assert embedding.shape == (1, 768)
    assert embedding.norm().item() == pytest.approx(1.0)


def test_eva_in_the_hub_cache_is_found(tmp_path: Path) -> None:
    repo = tmp_path / "hub" / f"models--{EVA_REPO.replace('/', '--')}"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "snapshots" / "abc" / EVA_FILE).write_bytes(b"weights")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    assert find_eva_file(None, tmp_path / "hub") == repo / "snapshots" / "abc" / EVA_FILE


def test_pickles_that_run_code_are_refused(tmp_path: Path, capfd: Any) -> None:
    path = tmp_path / EVA_FILE
    torch.save({"visual.cls_token": RunsCode()}, path)
    for load in (lambda: load_eva_vision(path, TINY_EVA), lambda: load_face_parser(path)):
        with pytest.raises(ModelNotFoundError, match="could run code"):
            load()
    assert "pickled code ran" not in capfd.readouterr().out


# --- the whole path ------------------------------------------------------------------------


def test_tiny_path_runs_end_to_end_on_the_astronaut(
    tiny_embedder: IdEmbedder, astronaut: np.ndarray
) -> None:
    embedding = tiny_embedder.embed(astronaut)
    assert embedding.id_cond.shape == (1, 1280)
    assert len(embedding.vit_hidden) == 5
    for state in embedding.vit_hidden:
        assert state.shape == (1, TINY_EVA.tokens, TINY_EVA.width)
    assert embedding.id_cond[0, 512:].norm().item() == pytest.approx(1.0, abs=1e-5)
    box = embedding.face_box
    assert 150 < box.x1 < box.x2 < 300 and 40 < box.y1 < box.y2 < 200  # the astronaut's face
    assert "stand-in" in embedding.source
    assert tiny_embedder.embed(astronaut.copy()) is embedding  # cached by the pixels' digest
    other = tiny_embedder.embed(np.ascontiguousarray(astronaut[:, ::-1]))
    assert not torch.equal(other.id_cond, embedding.id_cond)


def test_a_photo_without_a_face_says_so(tiny_embedder: IdEmbedder) -> None:
    ramp = np.linspace(0, 255, 256 * 256 * 3).reshape(256, 256, 3).astype(np.uint8)
    with pytest.raises(InputError, match="No face was found in the reference photo"):
        tiny_embedder.embed(ramp)


def test_two_faces_of_similar_size_are_refused_and_small_ones_ignored() -> None:
    def face(side: float) -> DetectedFace:
        return DetectedFace(FaceBox(0, 0, side, side, 0.9), np.zeros((5, 2), np.float32))

    assert pick_face([face(40), face(100)]).box.x2 == 100  # a background face: the largest
    with pytest.raises(InputError, match="2 faces of similar size"):
        pick_face([face(80), face(100)])


def find_id_model_files_error(models_dir: Path) -> str:
    config = IdEmbedderConfig(models_dir=models_dir, hub_cache_dir=models_dir / "hub")
    with pytest.raises(ModelNotFoundError) as caught:
        find_id_model_files(config)
    return str(caught.value)


def test_missing_models_are_named_with_where_to_put_them(tmp_path: Path) -> None:
    message = find_id_model_files_error(tmp_path)
    assert "antelopev2" in message and "glintr100.onnx" in message
    assert PARSING_FILE in message and str(tmp_path / "facexlib") in message
    assert EVA_FILE in message and str(tmp_path / "clip") in message
    pack = tmp_path / "insightface" / "models" / "antelopev2"
    pack.mkdir(parents=True)
    for name in ("scrfd_10g_bnkps.onnx", "glintr100.onnx"):
        (pack / name).write_bytes(b"onnx")
    (tmp_path / "facexlib").mkdir()
    (tmp_path / "facexlib" / PARSING_FILE).write_bytes(b"weights")
    message = find_id_model_files_error(tmp_path)
    assert EVA_FILE in message and str(tmp_path / "clip") in message
    assert "antelopev2" not in message and PARSING_FILE not in message
    embedder = IdEmbedder(IdEmbedderConfig(models_dir=tmp_path, hub_cache_dir=tmp_path / "hub"))
    with pytest.raises(ModelNotFoundError, match=EVA_FILE):
        embedder.embed(np.zeros((64, 64, 3), np.uint8))
