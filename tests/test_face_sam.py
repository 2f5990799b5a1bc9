"""SAM for the detailers: original segment-anything checkpoints (sam_vit_*.pth) read with the
weights-only loader, renamed onto transformers' SamModel, and prompted as Impact-Pack's
FaceDetailer prompts SamPredictor (box + centre point, multimask)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import ModelNotFoundError
from engine.faces.sam import (
    SAM_FILES,
    TIED_KEY,
    SamSegmenter,
    describe_sam,
    find_sam_file,
    impact_prompt,
    sam_config_from_shapes,
    save_tiny_sam,
    to_original_key,
    to_original_state_dict,
    to_transformers_key,
    to_transformers_state_dict,
    variant_name,
)

VIT_L = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16}
VIT_H = {"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16}


def meta_sam_state_dict(vision: dict | None = None) -> dict[str, torch.Tensor]:
    """The keys and shapes of a full-size transformers SamModel, without allocating it."""
    from transformers import SamConfig, SamModel

    with torch.device("meta"):
        return SamModel(SamConfig(vision_config=vision)).state_dict()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sam(tmp_path_factory.mktemp("sams") / "sam_tiny.pth", seed=3)


@pytest.fixture(scope="module")
def segmenter(tiny_file: Path) -> SamSegmenter:
    return SamSegmenter.from_file(tiny_file)


# --- key mapping and architecture ------------------------------------------------------------


def test_key_mapping_is_a_bijection_over_vit_b() -> None:
    hf_keys = list(meta_sam_state_dict())
    assert len(hf_keys) == 315 and TIED_KEY in hf_keys
    original = [to_original_key(key) for key in hf_keys if key != TIED_KEY]
    assert None not in original and len(set(original)) == len(original) == 314
    assert [to_transformers_key(key) for key in original] == [k for k in hf_keys if k != TIED_KEY]
    # segment-anything's names throughout, none of transformers'
    assert {key.split(".")[0] for key in original} == {
        "image_encoder",
        "prompt_encoder",
        "mask_decoder",
    }
    for name in ("vision_encoder", "layer_norm", "proj_in", "proj_out", ".mask_embed.", "upscale"):
        assert not [key for key in original if name in key], name
    blocks = [key for key in original if key.startswith("image_encoder.blocks.")]
    # 12 blocks of norm1/2, attn.qkv/proj (weight, bias), attn.rel_pos_h/w, mlp.lin1/2
    assert len(blocks) == 12 * 14
    for key in (
        "image_encoder.blocks.0.attn.qkv.weight",
        "image_encoder.blocks.11.attn.rel_pos_w",
        "image_encoder.blocks.5.norm2.bias",
        "image_encoder.patch_embed.proj.weight",
        "image_encoder.neck.3.bias",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "prompt_encoder.point_embeddings.3.weight",
        "prompt_encoder.mask_downscaling.6.weight",
        "mask_decoder.transformer.layers.1.norm4.weight",
        "mask_decoder.transformer.norm_final_attn.bias",
        "mask_decoder.output_upscaling.3.weight",
        "mask_decoder.output_hypernetworks_mlps.3.layers.2.weight",
        "mask_decoder.iou_prediction_head.layers.1.bias",
    ):
        assert key in original, key
    assert to_transformers_key("image_encoder.blocks.0.unknown.weight") is None
    assert to_transformers_key("model.image_encoder.pos_embed") is None


def test_the_architecture_comes_from_the_shapes() -> None:
    for name, vision, global_blocks in (
        ("vit_b", None, [2, 5, 8, 11]),
        ("vit_l", VIT_L | {"global_attn_indexes": [5, 11, 17, 23]}, [5, 11, 17, 23]),
        ("vit_h", VIT_H | {"global_attn_indexes": [7, 15, 23, 31]}, [7, 15, 23, 31]),
    ):
        weights = to_original_state_dict(meta_sam_state_dict(vision))
        config = sam_config_from_shapes(weights)
        assert variant_name(config) == name
        assert list(config.vision_config.global_attn_indexes) == global_blocks
        assert config.vision_config.window_size == 14 and config.vision_config.image_size == 1024
        assert config.vision_config.num_attention_heads == (vision or {}).get(
            "num_attention_heads", 12
        )
        assert config.mask_decoder_config.attention_downsample_rate == 2
        renamed = to_transformers_state_dict(weights)
        rebuilt = meta_sam_state_dict(config.vision_config.to_dict())
        assert {k: v.shape for k, v in renamed.items()} == {k: v.shape for k, v in rebuilt.items()}


# --- loading ---------------------------------------------------------------------------------


def test_a_tiny_original_layout_file_loads_strictly(tiny_file: Path) -> None:
    saved = torch.load(tiny_file, map_location="cpu", weights_only=True)
    assert "image_encoder.blocks.0.attn.qkv.weight" in saved
    assert not [key for key in saved if key.startswith(("vision_encoder", "shared_image"))]
    segmenter = SamSegmenter.from_file(tiny_file)
    assert segmenter.variant.startswith("custom") and "sam_tiny.pth" in segmenter.label
    loaded = to_original_state_dict(segmenter.model.state_dict())
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)
    state = segmenter.model.state_dict()
    assert torch.equal(
        state[TIED_KEY], saved["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    )


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple:
            return (open, (str(marker), "w"))

    hostile = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1), "extra": Payload()}, hostile)
    with pytest.raises(ModelNotFoundError, match="could run code") as error:
        SamSegmenter.from_file(hostile)
    assert str(hostile) in str(error.value) and "open" in str(error.value)
    assert not marker.exists()


def test_damaged_and_wrong_files_say_what_is_wrong(tmp_path: Path, tiny_file: Path) -> None:
    data = tiny_file.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    for path in (truncated, tmp_path / "empty.pth"):
        with pytest.raises(ModelNotFoundError, match="truncated") as error:
            SamSegmenter.from_file(path)
        assert str(path) in str(error.value)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        SamSegmenter.from_file(tmp_path / "missing.pth")

    weights = torch.load(tiny_file, map_location="cpu", weights_only=True)
    q_proj = "mask_decoder.transformer.layers.0.self_attn.q_proj.weight"
    wrong_shape = dict(weights) | {q_proj: torch.zeros(32, 33)}
    missing = {k: v for k, v in weights.items() if k != "image_encoder.neck.0.weight"}
    extra = dict(weights) | {"image_encoder.blocks.0.attn.lora.weight": torch.zeros(2)}
    for name, changed, message in (
        ("wrong_shape", wrong_shape, f"tensors of the wrong shape: {q_proj}"),
        ("missing", missing, "no tensor 'image_encoder.neck.0.weight'"),
        ("extra", extra, "tensors SAM does not have: image_encoder.blocks.0.attn.lora.weight"),
    ):
        path = tmp_path / f"{name}.pth"
        torch.save(changed, path)
        with pytest.raises(ModelNotFoundError, match="not a segment-anything") as error:
            SamSegmenter.from_file(path)
        assert str(path) in str(error.value) and message in str(error.value), str(error.value)
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ModelNotFoundError, match="holds a list"):
        SamSegmenter.from_file(tmp_path / "list.pth")


# --- segmentation ----------------------------------------------------------------------------


def test_segment_gives_three_masks_per_box_and_encodes_the_image_once(
    segmenter: SamSegmenter,
) -> None:
    runs: list[int] = []
    hook = segmenter.model.vision_encoder.register_forward_hook(lambda *_: runs.append(1))
    try:
        image = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
        boxes = [(10.0, 12.0, 60.0, 70.0), (70.0, 20.0, 126.0, 110.0)]
        found = segmenter.segment(image, boxes)
        assert len(found) == 2 and len(runs) == 1
        for masks, scores in found:
            assert masks.shape == (3, 128, 128) and masks.dtype == bool
            assert scores.shape == (3,) and scores.dtype == np.float32
        # one box at a time gives the same answer, still without encoding the image again
        alone = segmenter.segment(image, boxes[1:])[0]
        assert np.array_equal(alone[0], found[1][0])
        np.testing.assert_allclose(alone[1], found[1][1], atol=1e-5)
        assert len(runs) == 1
        wide = segmenter.segment(image[:96], boxes[:1])  # a new image, not square
        assert wide[0][0].shape == (3, 96, 128) and len(runs) == 2
        assert segmenter.segment(image, []) == []
    finally:
        hook.remove()


def test_prompts_are_impact_packs_center_1() -> None:
    """core.make_sam_mask: the box grown by sam_bbox_expansion and clipped to the image, plus
    the centre of the detected box as one foreground point."""
    assert impact_prompt((10, 20, 50, 40), 64, 48) == ((10, 20, 50, 40), (30, 30))
    grown, centre = impact_prompt((4, 30, 60, 46), 64, 48, expansion=8)
    assert grown == (0, 22, 64, 48) and centre == (32, 38)


# --- finding the file ------------------------------------------------------------------------


def test_find_sam_file_prefers_the_named_file_then_vit_b(tmp_path: Path) -> None:
    assert find_sam_file(tmp_path) is None and find_sam_file(None) is None
    advice = describe_sam(tmp_path)
    assert SAM_FILES[0] in advice and str(tmp_path / "sams") in advice
    sams = tmp_path / "sams"
    sams.mkdir()
    for name in ("sam_vit_h_4b8939.pth", "mobile_sam.pt", "sam_vit_b_01ec64.pth", "notes.txt"):
        (sams / name).write_bytes(b"")
    assert find_sam_file(tmp_path) == sams / "sam_vit_b_01ec64.pth"
    assert find_sam_file(tmp_path, "sam_vit_h_4b8939.pth") == sams / "sam_vit_h_4b8939.pth"
    assert find_sam_file(tmp_path, "mobile_sam.pt") == sams / "mobile_sam.pt"
    for outside in (
        "../sams/sam_vit_h_4b8939.pth",
        str(sams / "sam_vit_h_4b8939.pth"),
        "notes.txt",
    ):
        assert find_sam_file(tmp_path, outside) == sams / "sam_vit_b_01ec64.pth"
    assert "sam_vit_b_01ec64.pth" in describe_sam(tmp_path)
