"""GroundingDINO for text-prompted boxes (the chin pass's "chin" / "jawline" prompt): a tiny
random model built in code, loaded from a transformers folder and from the original
IDEA-Research checkpoint layout, detecting as storyicon's groundingdino_predict does."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import InputError, ModelNotFoundError
from engine.faces.boxes import FaceBox
from engine.faces.grounding import (
    BERT_URL,
    GroundingDino,
    GroundingFiles,
    build_tiny_grounding_dino,
    find_bert_tokenizer,
    find_grounding_dino,
    normalise_caption,
    resized_size,
)
from engine.faces.grounding_keys import (
    grounding_config_from_shapes,
    to_original_state_dict,
    variant_name,
)

SWIN_T = "groundingdino_swint_ogc.pth"
SWIN_B = "groundingdino_swinb_cogcoor.pth"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("grounding")


@pytest.fixture(scope="module")
def empty_cache(root: Path) -> Path:
    """A Hugging Face cache with nothing in it, so no test sees this machine's own cache."""
    (root / "hf-empty").mkdir(exist_ok=True)
    return root / "hf-empty"


@pytest.fixture(scope="module")
def tiny_folder(root: Path) -> Path:
    return build_tiny_grounding_dino(root / "tiny" / "grounding-dino" / "tiny", seed=3)


@pytest.fixture(scope="module")
def detector(tiny_folder: Path, empty_cache: Path) -> GroundingDino:
    files = find_grounding_dino(tiny_folder.parent.parent, hub_cache=empty_cache)
    assert files is not None and files.format == "transformers"
    return GroundingDino.load(files)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """Square, so that the model sees 800 x 800 (the node's size for it) and runs fast."""
    return np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def chin_boxes(detector: GroundingDino, image: np.ndarray) -> list[FaceBox]:
    return detector.detect(image, "chin")


@pytest.fixture(scope="module")
def original_state(detector: GroundingDino) -> dict[str, torch.Tensor]:
    """The tiny model's tensors as an IDEA-Research checkpoint holds them."""
    return to_original_state_dict(detector.model.state_dict())


def add_tokenizer(models: Path, tiny_folder: Path) -> Path:
    bert = models / "grounding-dino" / "bert-base-uncased"
    bert.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(tiny_folder / name, bert / name)
    return bert


def save_original(path: Path, state: dict[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, path)
    return path


def load_error(path: Path, tokenizer: Path) -> str:
    files = GroundingFiles(path, tokenizer, "original", "id", "label", path.name)
    with pytest.raises(ModelNotFoundError) as error:
        GroundingDino.load(files)
    return str(error.value)


# --- detection -------------------------------------------------------------------------------


def test_the_tiny_folder_detects_boxes_inside_the_image_best_first(detector, chin_boxes):
    assert detector.label == "tiny (GroundingDINO custom Swin (16 wide, depths [1, 1, 2, 1]))"
    assert chin_boxes and all(isinstance(box, FaceBox) for box in chin_boxes)
    for box in chin_boxes:
        assert 0 <= box.x1 <= box.x2 <= 64 and 0 <= box.y1 <= box.y2 <= 64
        assert 0.3 < box.score <= 1
    scores = [box.score for box in chin_boxes]
    assert scores == sorted(scores, reverse=True)


def test_box_threshold_keeps_the_boxes_scoring_above_it(detector, image, chin_boxes):
    assert detector.detect(image, "chin", box_threshold=1.0) == []
    middle = chin_boxes[len(chin_boxes) // 2].score
    kept = detector.detect(image, "chin", box_threshold=middle)
    assert kept == [box for box in chin_boxes if box.score > middle]


def test_the_caption_is_lower_cased_stripped_and_ends_with_a_full_stop(detector, image, chin_boxes):
    assert normalise_caption("  Chin ") == "chin."
    assert normalise_caption("JAWLINE.") == "jawline."
    assert normalise_caption("chin. jaw") == "chin. jaw."
    assert detector.detect(image, "face") != chin_boxes  # the prompt is what is looked for
    for blank in ("", "   ", " . "):
        with pytest.raises(InputError, match="text prompt"):
            detector.detect(image, blank)
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(image.astype(np.float32), "chin")


def test_images_are_resized_as_the_node_resizes_them():
    assert resized_size(60, 80) == (800, 1066)
    assert resized_size(80, 60) == (1066, 800)
    assert resized_size(800, 1000) == (800, 1000)  # short side already 800
    assert resized_size(1200, 1600) == (800, 1066)
    # The long side is capped at 1333 by shrinking the short side; the original truncates
    # the long side from the rounded short side, so it can end a pixel or two off.
    assert resized_size(500, 3000) == (222, 1332)
    assert resized_size(3001, 499) == (1335, 222)


def test_phrase_ends_come_from_the_tokenizer(detector):
    ids = detector.tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", ".", "?"])
    assert detector.model.model.special_tokens.tolist() == ids


# --- the original checkpoint layout ----------------------------------------------------------


def test_the_original_layout_loads_the_same_model(
    root, tiny_folder, detector, image, chin_boxes, original_state, empty_cache
):
    assert not [key for key in original_state if key.startswith("model.")]
    assert original_state["backbone.0.layers.0.blocks.0.attn.qkv.weight"].shape == (48, 16)
    assert original_state["transformer.decoder.layers.1.ca_text.in_proj_bias"].shape == (96,)
    assert "backbone.0.norm1.weight" in original_state and "feat_map.weight" in original_state
    # What the released files also carry: buffers, BERT's unused pooler, training leftovers;
    # and a DataParallel prefix, which the original loader removes.
    state = {f"module.{k}" if i % 2 else k: v for i, (k, v) in enumerate(original_state.items())}
    state["backbone.0.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49)
    state["bert.embeddings.position_ids"] = torch.arange(512)[None]
    state["bert.pooler.dense.weight"] = torch.zeros(64, 64)
    state["label_enc.weight"] = torch.zeros(2001, 32)  # training's denoising labels
    models = root / "original"
    save_original(models / "grounding-dino" / SWIN_T, state)
    # The node's config is Python code next to the checkpoint: it must never run.
    marker = root / "config-ran"
    config = models / "grounding-dino" / "GroundingDINO_SwinT_OGC.cfg.py"
    config.write_text(f"open({str(marker)!r}, 'w').close()\n")
    add_tokenizer(models, tiny_folder)
    files = find_grounding_dino(models, hub_cache=empty_cache)
    assert files is not None and files.format == "original" and files.weights.name == SWIN_T
    loaded = GroundingDino.load(files)
    expected, got = detector.model.state_dict(), loaded.model.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[key], expected[key]) for key in expected)
    assert loaded.detect(image, "  CHIN  ") == chin_boxes  # and the caption normalised
    assert loaded.label.startswith(f"{SWIN_T} (GroundingDINO custom Swin")
    assert not marker.exists()


SWIN_T_SHAPE = {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24]}
SWIN_B_SHAPE = {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32]}


@pytest.mark.parametrize(
    ("name", "shape", "window", "image_size", "keys"),
    [("Swin-T", SWIN_T_SHAPE, 7, 224, 924), ("Swin-B", SWIN_B_SHAPE, 12, 384, 1080)],
)
def test_swin_t_and_swin_b_are_told_apart_by_their_shapes(name, shape, window, image_size, keys):
    """Full-size models on the meta device: their original layout has the released files'
    tensors (without the buffers and BERT pooler that those also carry)."""
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection, SwinConfig

    swin = SwinConfig(**shape, window_size=window, out_indices=[2, 3, 4])
    with torch.device("meta"):
        model = GroundingDinoForObjectDetection(GroundingDinoConfig(backbone_config=swin))
    original = to_original_state_dict(model.state_dict())
    width = shape["embed_dim"]
    assert len(original) == keys
    assert original["backbone.0.layers.2.blocks.5.attn.qkv.weight"].shape == (12 * width, 4 * width)
    assert original["backbone.0.norm3.weight"].shape == (8 * width,)
    assert original["transformer.decoder.bbox_embed.5.layers.2.bias"].shape == (4,)
    assert original["transformer.tgt_embed.weight"].shape == (900, 256)
    config = grounding_config_from_shapes(original)
    assert variant_name(config) == name
    found = config.backbone_config
    assert (found.embed_dim, found.depths, found.num_heads) == tuple(shape.values())
    assert (found.window_size, found.image_size) == (window, image_size)
    assert found.out_features == ["stage2", "stage3", "stage4"]
    bert = config.text_config  # bert-base-uncased: 12 layers of 12 heads
    assert (bert.num_hidden_layers, bert.num_attention_heads, bert.hidden_size) == (12, 12, 768)


def test_a_pickle_that_would_run_code_is_refused_unread(root, tiny_folder):
    class Payload:
        def __init__(self, marker: Path):
            self.marker = marker

        def __reduce__(self):
            return (open, (str(self.marker), "w"))

    proof = root / "payload-works"
    pickle.loads(pickle.dumps(Payload(proof)))  # the payload is live...
    assert proof.exists()
    marker = root / "payload-ran"
    path = root / "evil" / SWIN_T
    path.parent.mkdir()
    torch.save({"model": {"feat_map.weight": torch.zeros(2)}, "extra": Payload(marker)}, path)
    message = load_error(path, tiny_folder)
    assert not marker.exists()  # ...but loading never unpickles it
    assert str(path) in message and "could run code" in message and "open" in message


def test_a_truncated_file_is_named_as_unreadable(root, tiny_folder, original_state):
    path = save_original(root / "truncated" / SWIN_T, original_state)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = load_error(path, tiny_folder)
    assert str(path) in message and "truncated" in message


def test_missing_and_foreign_tensors_are_named_in_the_original_layout(
    root, tiny_folder, original_state
):
    state = dict(original_state)
    del state["transformer.decoder.layers.1.linear2.weight"]
    del state["transformer.encoder.text_layers.0.self_attn.in_proj_weight"]
    state["transformer.decoder.extra_head.weight"] = torch.zeros(3)
    message = load_error(save_original(root / "keys" / SWIN_T, state), tiny_folder)
    assert str(root / "keys" / SWIN_T) in message
    assert "transformer.decoder.extra_head.weight" in message
    del state["transformer.decoder.extra_head.weight"]
    message = load_error(save_original(root / "keys2" / SWIN_T, state), tiny_folder)
    assert "missing tensors" in message
    assert "transformer.decoder.layers.1.linear2.weight" in message
    assert "transformer.encoder.text_layers.0.self_attn.in_proj_weight" in message
    state["feat_map.weight"] = torch.zeros(32, 7)
    message = load_error(save_original(root / "keys3" / SWIN_T, state), tiny_folder)
    assert "wrong shape" in message and "feat_map.weight" in message


def test_without_a_tokenizer_the_message_says_where_to_put_it(root, original_state, empty_cache):
    models = root / "no-tokenizer"
    save_original(models / "grounding-dino" / SWIN_T, original_state)
    files = find_grounding_dino(models, hub_cache=empty_cache)
    assert files is not None and files.format == "original" and files.tokenizer is None
    with pytest.raises(ModelNotFoundError) as error:
        GroundingDino.load(files)
    message = str(error.value)
    assert str(models / "grounding-dino" / SWIN_T) in message
    assert f"in {models / 'grounding-dino' / 'bert-base-uncased'}/" in message
    assert BERT_URL in message and "vocab.txt" in message


def test_a_transformers_folder_that_does_not_fit_is_refused(root, tiny_folder, empty_cache):
    from safetensors.torch import load_file, save_file

    folder = root / "partial" / "grounding-dino" / "partial"
    shutil.copytree(tiny_folder, folder)
    weights = load_file(folder / "model.safetensors")
    del weights["model.text_projection.bias"]
    weights["model.level_embed"] = torch.zeros(3, 32)
    weights["model.extra.weight"] = torch.zeros(2)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    files = find_grounding_dino(folder.parent.parent, hub_cache=empty_cache)
    with pytest.raises(ModelNotFoundError) as error:
        GroundingDino.load(files)
    message = str(error.value)
    assert str(folder) in message and "missing tensors: model.text_projection.bias" in message
    assert "wrong shape: model.level_embed" in message and "have: model.extra.weight" in message


# --- finding the files -----------------------------------------------------------------------


def fake_hub_cache(tiny_folder: Path, cache: Path, repo_id: str) -> Path:
    """The tiny folder laid out as huggingface_hub caches a downloaded repo."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(tiny_folder, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    return repo / "snapshots" / ("0" * 40)


def test_find_prefers_what_will_load(root, tiny_folder, original_state, empty_cache):
    models = root / "find"
    assert find_grounding_dino(None, hub_cache=empty_cache) is None
    assert find_grounding_dino(models, hub_cache=empty_cache) is None
    shutil.copytree(tiny_folder, models / "groundingdino" / "mine")  # the other folder name
    found = find_grounding_dino(models, hub_cache=empty_cache)
    assert found.format == "transformers" and found.name == "mine"
    assert found.tokenizer == models / "groundingdino" / "mine"
    # An original checkpoint without its tokenizer would not load: the folder is kept.
    save_original(models / "grounding-dino" / SWIN_B, original_state)
    assert find_grounding_dino(models, hub_cache=empty_cache).name == "mine"
    # With the tokenizer the node's own checkpoint wins, and Swin-T before Swin-B.
    add_tokenizer(models, tiny_folder)
    assert find_grounding_dino(models, hub_cache=empty_cache).weights.name == SWIN_B
    save_original(models / "groundingdino" / SWIN_T, original_state)
    found = find_grounding_dino(models, hub_cache=empty_cache)
    assert found.weights == models / "groundingdino" / SWIN_T
    assert found.tokenizer == models / "grounding-dino" / "bert-base-uncased"
    assert found.label == f"{SWIN_T} (GroundingDINO, original checkpoint)"


def test_the_bert_tokenizer_is_found_where_the_node_and_the_hub_keep_it(root, tiny_folder):
    models, cache = root / "bert-models", root / "bert-cache"
    assert find_bert_tokenizer(models, hub_cache=cache) is None
    snapshot = fake_hub_cache(tiny_folder, cache, "google-bert/bert-base-uncased")
    assert find_bert_tokenizer(models, hub_cache=cache) == snapshot
    (models / "bert-base-uncased").mkdir(parents=True)  # where the node looks
    shutil.copy(tiny_folder / "vocab.txt", models / "bert-base-uncased" / "vocab.txt")
    assert find_bert_tokenizer(models, hub_cache=cache) == models / "bert-base-uncased"
    assert add_tokenizer(models, tiny_folder) == find_bert_tokenizer(models, hub_cache=cache)


def test_find_uses_the_hub_cache_last(root, tiny_folder, detector):
    cache = root / "hf"
    snapshot = fake_hub_cache(tiny_folder, cache, "IDEA-Research/grounding-dino-base")
    found = find_grounding_dino(None, hub_cache=cache)
    assert found.format == "transformers" and found.weights == snapshot
    assert found.name == "IDEA-Research/grounding-dino-base"
    tiny = fake_hub_cache(tiny_folder, cache, "IDEA-Research/grounding-dino-tiny")
    assert find_grounding_dino(None, hub_cache=cache).weights == tiny
    assert find_grounding_dino(root / "nothing-here", hub_cache=cache).weights == tiny
    loaded = GroundingDino.load(find_grounding_dino(None, hub_cache=cache))
    assert loaded.label.startswith("IDEA-Research/grounding-dino-tiny (GroundingDINO custom")
    expected = detector.model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.model.state_dict().items())


def test_the_identity_changes_when_the_file_does(root, original_state, empty_cache):
    models = root / "identity"
    path = save_original(models / "grounding-dino" / SWIN_T, original_state)
    before = find_grounding_dino(models, hub_cache=empty_cache).identity
    assert find_grounding_dino(models, hub_cache=empty_cache).identity == before
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert find_grounding_dino(models, hub_cache=empty_cache).identity != before
