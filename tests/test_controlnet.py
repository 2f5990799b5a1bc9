"""The pose ControlNet: finding and strictly loading files, the skeleton picture, the control
tokens, and one step's residuals on the tiny Flux transformer."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.errors import InputError, ModelNotFoundError
from engine.flux.latents import image_ids
from engine.identity.control_image import (
    COLORS,
    KEYPOINT_NAMES,
    LIMB_DIMMING,
    control_pixels,
    draw_pose,
    open_pose_image,
    parse_pose_json,
    pose_control_tokens,
)
from engine.identity.control_step import (
    ControlParams,
    check_fits_transformer,
    control_residuals,
    in_window,
    step_for_sigma,
)
from engine.identity.controlnet import (
    build_tiny_controlnet,
    find_controlnet,
    find_controlnets,
    load_controlnet,
)
from engine.models.tiny import build_tiny_transformer, build_tiny_vae

PRO2_NAME = "FLUX.1-dev-ControlNet-Union-Pro-2.0.safetensors"
WIDTH, HEIGHT = 128, 96


@pytest.fixture(scope="module")
def union():
    return build_tiny_controlnet()


@pytest.fixture(scope="module")
def pro2():
    """Shaped like Union-Pro-2.0: double blocks only, no mode embedding."""
    return build_tiny_controlnet(num_layers=2, num_single_layers=0, num_mode=None)


@pytest.fixture(scope="module")
def transformer():
    return build_tiny_transformer()


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in model.state_dict().items()}


@pytest.fixture
def models_dir(tmp_path: Path, union, pro2) -> Path:
    """A union model as a diffusers folder and a Pro-2.0-like one as a renamed single file."""
    folder = tmp_path / "controlnet"
    union.save_pretrained(folder / "tiny-union")
    save_file(_state(pro2), str(folder / PRO2_NAME))
    return tmp_path


def test_folder_and_single_file_are_found_and_detected(models_dir: Path) -> None:
    found, skipped = find_controlnets(models_dir)
    assert skipped == []
    assert [spec.label for spec in found] == [PRO2_NAME, "tiny-union"]  # preferred name first
    single, folder = (spec.layout for spec in found)
    assert (single.layout, single.family) == ("diffusers file", "tiny")
    assert single.dims()["num_layers"] == 2 and single.dims()["num_single_layers"] == 0
    assert single.num_mode is None and single.pose_mode is None
    assert single.dims()["in_channels"] == 64 and single.dims()["guidance_embeds"] is True
    assert single.dims()["attention_head_dim"] == 16
    assert (folder.layout, folder.num_mode, folder.pose_mode) == ("diffusers folder", 10, 4)
    assert folder.dims()["num_single_layers"] == 1


def test_both_layouts_load_strictly_with_every_weight(models_dir: Path, union, pro2) -> None:
    for name, original in ((PRO2_NAME, pro2), ("tiny-union", union)):
        loaded = load_controlnet(find_controlnet(models_dir, name))
        reference = original.state_dict()
        assert loaded.state_dict().keys() == reference.keys()
        assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())


def test_a_file_missing_a_key_is_refused_with_the_reason(models_dir: Path, pro2) -> None:
    path = models_dir / "controlnet" / PRO2_NAME
    spec = find_controlnet(models_dir, PRO2_NAME)
    save_file({k: v for k, v in _state(pro2).items() if k != "controlnet_blocks.1.weight"}, path)
    with pytest.raises(ModelNotFoundError) as refused:
        load_controlnet(spec)
    message = str(refused.value)
    assert PRO2_NAME in message and "controlnet_blocks.1.weight" in message
    assert "models/controlnet/" in message  # what to do
    with pytest.raises(ModelNotFoundError, match="lacks tensors"):
        find_controlnet(models_dir, PRO2_NAME)
    assert [spec.label for spec in find_controlnets(models_dir)[0]] == ["tiny-union"]


def test_other_files_are_skipped_with_a_reason(tmp_path: Path, transformer) -> None:
    folder = tmp_path / "controlnet"
    folder.mkdir()
    save_file(_state(transformer), str(folder / "flux-tiny.safetensors"))
    found, skipped = find_controlnets(tmp_path)
    assert found == [] and "Flux transformer" in skipped[0]
    with pytest.raises(ModelNotFoundError, match="No FLUX.1 ControlNet found"):
        find_controlnet(tmp_path)
    with pytest.raises(ModelNotFoundError, match="No ControlNet"):
        find_controlnet(tmp_path, "../outside.safetensors")


def _pose_json(points: dict[str, tuple[float, float]], width: int, height: int) -> str:
    values: list[float] = []
    for name in KEYPOINT_NAMES:
        x, y = points.get(name, (0.0, 0.0))
        values += [x, y, 1.0 if name in points else 0.0]
    person = {"pose_keypoints_2d": values}
    return json.dumps({"people": [person], "canvas_width": width, "canvas_height": height})


def _dimmed(index: int) -> tuple[int, ...]:
    return tuple(int(c * LIMB_DIMMING) for c in COLORS[index])


def test_skeleton_has_the_openpose_colours_at_the_right_pixels() -> None:
    points = {"neck": (100, 20), "right_shoulder": (60, 20), "right_elbow": (60, 80)}
    people = parse_pose_json(_pose_json(points, 400, 200))  # drawn at half that size
    pixels = draw_pose(people, 200, 100).load()
    assert pixels[50, 10] == COLORS[1]  # the neck keypoint, full colour
    assert pixels[30, 10] == COLORS[2]  # the right shoulder
    assert pixels[40, 10] == _dimmed(0)  # limb 0: neck -> right shoulder, at 60 %
    assert pixels[40, 13] == _dimmed(0)  # 3 px off its axis: inside the 4 px stick
    assert pixels[40, 16] == (0, 0, 0)  # 6 px off: outside
    assert pixels[30, 25] == _dimmed(2)  # limb 2: right shoulder -> right elbow
    assert pixels[150, 80] == (0, 0, 0)  # unseen keypoints draw nothing


def test_pose_json_errors_say_what_is_wrong() -> None:
    with pytest.raises(InputError, match="canvas_width"):
        parse_pose_json(json.dumps({"people": [{"pose_keypoints_2d": [5.0] * 54}]}))
    with pytest.raises(InputError, match="54 numbers"):
        parse_pose_json(json.dumps({"people": [{"pose_keypoints_2d": [0.5] * 50}]}))
    with pytest.raises(InputError, match="people"):
        parse_pose_json("{}")


def test_control_tokens_for_a_128x96_render() -> None:
    points = {"neck": (0.5, 0.2), "right_hip": (0.45, 0.6), "left_hip": (0.55, 0.6)}
    picture = draw_pose(parse_pose_json(_pose_json(points, 1, 1)), 300, 200)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    upload = open_pose_image(buffer.getvalue())
    pixels = control_pixels(upload, WIDTH, HEIGHT)
    assert pixels.shape == (1, 3, HEIGHT, WIDTH) and pixels.min() >= -1 and pixels.max() <= 1
    tokens = pose_control_tokens(build_tiny_vae(), upload, WIDTH, HEIGHT)
    assert tokens.shape == (1, (HEIGHT // 16) * (WIDTH // 16), 64)
    with pytest.raises(ValueError, match="multiple of 16"):
        control_pixels(upload, 100, 96)


def _step_inputs() -> dict[str, torch.Tensor]:
    """The transformer inputs of one step, as FluxDenoiser builds them."""
    generator = torch.Generator().manual_seed(7)
    tokens = (HEIGHT // 16) * (WIDTH // 16)
    return {
        "hidden_states": torch.randn(1, tokens, 64, generator=generator),
        "timestep": torch.tensor([0.7]),
        "guidance": torch.tensor([3.5]),
        "pooled_projections": torch.randn(1, 32, generator=generator),
        "encoder_hidden_states": torch.randn(1, 8, 32, generator=generator),
        "txt_ids": torch.zeros(8, 3),
        "img_ids": image_ids(HEIGHT, WIDTH, torch.device("cpu")),
    }


@torch.inference_mode()
def _transformer_out(transformer, inputs, residuals=None) -> torch.Tensor:
    extra = residuals.transformer_kwargs() if residuals is not None else {}
    return transformer(**inputs, **extra, return_dict=False)[0]


def test_no_strength_or_outside_the_window_is_bit_identical(transformer, union) -> None:
    inputs = _step_inputs()
    control = torch.randn(1, inputs["hidden_states"].shape[1], 64)
    plain = _transformer_out(transformer, inputs)
    cases = ((ControlParams(strength=0.0), 0), (ControlParams(strength=1.0, end=0.5), 3))
    for params, step in cases:
        residuals = control_residuals(union, control, inputs, params, step, 4)
        assert not residuals.active
        assert torch.equal(_transformer_out(transformer, inputs, residuals), plain)


@pytest.mark.parametrize("model", ["union", "pro2"])
def test_full_strength_changes_the_output(request, transformer, model: str) -> None:
    controlnet = request.getfixturevalue(model)
    check_fits_transformer(controlnet, transformer)
    inputs = _step_inputs()
    control = torch.randn(1, inputs["hidden_states"].shape[1], 64)
    residuals = control_residuals(controlnet, control, inputs, ControlParams(strength=1.0), 0, 4)
    assert residuals.active and len(residuals.block_samples) == controlnet.config.num_layers
    assert (residuals.single_block_samples is None) == (model == "pro2")
    plain = _transformer_out(transformer, inputs)
    changed = _transformer_out(transformer, inputs, residuals)
    assert (changed - plain).abs().max() > 1e-3


def test_window_follows_diffusers_rule() -> None:
    assert sum(in_window(ControlParams(end=0.8), i, 25) for i in range(25)) == 20
    assert [in_window(ControlParams(start=0.5, end=1.0), i, 4) for i in range(4)] == [
        False,
        False,
        True,
        True,
    ]
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
    assert [step_for_sigma(sigmas, s) for s in (1.0, 0.75, 0.6, 0.25)] == [0, 1, 1, 3]


def test_a_controlnet_for_another_width_is_refused(transformer) -> None:
    wide = build_tiny_controlnet(num_attention_heads=4)
    with pytest.raises(ModelNotFoundError, match="64 wide"):
        check_fits_transformer(wide, transformer)
    with pytest.raises(ValueError, match="union mode"):
        control_residuals(
            build_tiny_controlnet(), torch.zeros(1, 48, 64), _step_inputs(),
            ControlParams(strength=1.0, mode=10), 0, 4,
        )  # fmt: skip


def test_the_engine_lists_the_controlnets_of_its_models_folder(
    models_dir: Path, tmp_path: Path
) -> None:
    from engine.engine import Engine, EngineConfig
    from engine.models.manager import ModelConfig

    def engine(tiny: bool) -> Engine:
        config = ModelConfig(models_dir=models_dir, tiny=tiny, device="cpu")
        return Engine(EngineConfig(models=config, outputs_dir=tmp_path / "o", data_dir=tmp_path))

    assert engine(tiny=False).list_controlnets() == [PRO2_NAME, "tiny-union"]
    assert engine(tiny=True).list_controlnets() == []  # demo mode: the tiny one serves
