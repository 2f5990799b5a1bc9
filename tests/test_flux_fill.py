"""FLUX.1 Fill in the Refine passes: the file recognised by its 384 input channels, loaded
strictly, its inputs built as ComfyUI's InpaintModelConditioning and Flux concat_cond build
them, and a region or the chin rendered with it when asked (a note when it is missing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from engine.flux.fill import fill_conditioning, packed_mask
from engine.models.checkpoint import Header
from engine.models.detect import Detected, detect_fill, detect_transformer
from engine.models.fill import find_fill, load_fill
from engine.models.tiny import build_tiny_fill
from engine.recipe import ModelParams
from engine.stages.base import encode_pixels
from photos import astronaut
from photos import png_bytes as png
from tests.conftest import fresh_tiny_engine
from tests.test_refine_engine import refine


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return fresh_tiny_engine(tmp_path_factory.mktemp("fill"))


def bfl_header(in_channels: int) -> Header:
    """The keys detection reads of a BFL-layout FLUX.1 [dev]-like file (no data)."""
    shapes = {
        "double_blocks.0.img_attn.qkv.weight": (9216, 3072),
        "single_blocks.0.linear1.weight": (21504, 3072),
        "img_in.weight": (3072, in_channels),
        "txt_in.weight": (3072, 4096),
        "vector_in.in_layer.weight": (3072, 768),
        "guidance_in.in_layer.weight": (3072, 256),
        "final_layer.linear.weight": (64, 3072),
    }
    return Header(Path("x.safetensors"), shapes, dict.fromkeys(shapes, "BF16"))


def test_a_fill_file_is_its_own_component_and_never_taken_for_the_base_model():
    fill = detect_fill(bfl_header(384))
    assert isinstance(fill, Detected) and fill.variant == "dev"
    assert fill.dims()["in_channels"] == 384 and fill.dims()["out_channels"] == 64
    refused = detect_transformer(bfl_header(384))
    assert refused == (
        "a FLUX.1 Fill (inpainting) transformer, used by the Refine passes, "
        "not a FLUX.1 base (dev/schnell) transformer"
    )
    assert "not a FLUX.1 Fill (inpainting) transformer" in detect_fill(bfl_header(64))
    assert "Depth/Canny" in detect_transformer(bfl_header(128))
    base = detect_transformer(bfl_header(64))
    assert isinstance(base, Detected) and base.dims()["out_channels"] == 64


def test_a_fill_file_in_the_models_folder_is_found_and_loads_strictly(tmp_path: Path):
    models = tmp_path / "models"
    (models / "diffusion_models").mkdir(parents=True)
    model = build_tiny_fill()
    save_file(model.state_dict(), models / "diffusion_models" / "flux1-fill-dev.safetensors")
    base = dict(build_tiny_fill().state_dict())
    base["x_embedder.weight"] = base["x_embedder.weight"][:, :64].contiguous()
    save_file(base, models / "diffusion_models" / "flux1-dev.safetensors")
    spec = find_fill(models)
    assert spec is not None and spec.path.name == "flux1-fill-dev.safetensors"
    loaded = load_fill(spec, torch.float32)
    assert loaded.config.in_channels == 384 and loaded.config.out_channels == 64
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert find_fill(tmp_path / "empty") is None and find_fill(None) is None


def test_the_mask_folds_each_8x8_block_into_64_channels_of_its_latent_pixel():
    mask = torch.zeros(1, 1, 32, 48)
    y, x = 21, 38  # latent pixel (2, 4): token row 1, col 2, patch position (0, 0)
    mask[0, 0, y, x] = 1.0
    packed = packed_mask(mask)
    assert packed.shape == (1, (32 // 16) * (48 // 16), 256)
    token, channel = (y // 16) * 3 + x // 16, (y % 8) * 8 + x % 8
    index = channel * 4 + ((y // 8) % 2) * 2 + (x // 8) % 2
    assert torch.nonzero(packed[0]).tolist() == [[token, index]]


def test_fill_inputs_are_the_greyed_image_latents_then_the_mask(engine: Any):
    bundle = engine.models.flux(ModelParams())
    image = torch.rand(1, 3, 64, 96)
    mask = torch.zeros(64, 96)
    mask[16:40, 32:80] = 0.7  # rounds to 1: those pixels are greyed
    mask[0:8, 0:8] = 0.3  # rounds to 0: kept
    concat = fill_conditioning(bundle, image, mask)
    greyed = image.clone()
    greyed[:, :, 16:40, 32:80] = 0.5
    assert concat.shape == (1, (64 // 16) * (96 // 16), 320)
    assert torch.equal(concat[..., :64], encode_pixels(bundle, greyed))
    assert torch.equal(concat[..., 64:], packed_mask(mask[None, None]))
    small = fill_conditioning(bundle, image, mask[::2, ::2])  # resized to the image first
    assert small.shape == concat.shape


def test_a_region_renders_with_fill_and_the_transformer_sees_its_inputs(engine: Any) -> None:
    photo = engine.store_image(png(astronaut()))
    plain = engine.run(refine(photo, face={}), save=False)
    seen: list[torch.Tensor] = []
    fill = engine.models.fill(ModelParams())
    hook = fill.x_embedder.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    try:
        filled = engine.run(refine(photo, face={"fill_model": True}), save=False)
    finally:
        hook.remove()
    assert filled.report.ran_names == ["refine_face"]  # the same detections, a new render
    assert seen and all(x.shape[-1] == 384 for x in seen)
    assert len({float(x[..., 64:].sum()) for x in seen}) == 1  # the same Fill inputs each call
    assert engine.models.load_counts()["fill"] == 1
    assert filled.images[0].tobytes() != plain.images[0].tobytes()
    assert not any("FLUX.1 Fill" in note for note in filled.report.notes)
    assert "FLUX.1 Fill: tiny random demo model." in engine.refine_status()


def test_without_a_fill_file_the_base_model_renders_with_a_note(engine: Any, monkeypatch) -> None:
    photo = engine.store_image(png(astronaut()))
    plain = engine.run(refine(photo, chin={"steps": 2}), save=False)
    monkeypatch.setattr(engine.models, "fill_spec", lambda: None)
    assert "No FLUX.1 Fill. Put flux1-fill-dev.safetensors" in engine.refine_status()
    asked = engine.run(refine(photo, chin={"steps": 2, "fill_model": True}), save=False)
    assert asked.report.ran_names == ["refine_chin"]  # the flag is part of the chin's key
    assert any("no FLUX.1 Fill file" in note for note in asked.report.notes)
    assert asked.images[0].tobytes() == plain.images[0].tobytes()
