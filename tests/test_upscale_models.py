"""Trained upscale models: files found in <models>/upscale_models/, architectures detected by
spandrel from tiny random-weight models saved in the real files' layouts, no pickled code
run, and tiled inference that matches one whole-image call."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from engine.errors import InputError, ModelNotFoundError
from engine.upscale import tiled
from engine.upscale.tiled import ramp, tile_spans, upscale_image
from engine.upscale.upscalers import (
    LoadedUpscaler,
    inference_dtype,
    list_upscaler_files,
    load_upscaler,
    resolve_upscaler_file,
    upscaler_identity,
)

ESRGAN_FILE = "4x-TinySharp.pth"  # old ESRGAN layout: model.0.weight, model.1.sub.0.RDB1...
COMPACT_FILE = "2x-TinyCompact.pth"  # Real-ESRGAN's {"params": ...} wrapper
SPAN_FILE = "span/4x-TinySPAN.safetensors"
DAT_FILE = "faces/2x-TinyFaceDAT.pth"  # traiNNer's {"params_ema": ...} wrapper


def _networks() -> dict[str, torch.nn.Module]:
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.DAT import DAT
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SPAN import SPAN

    torch.manual_seed(0)
    return {
        ESRGAN_FILE: ESRGAN(num_filters=8, num_blocks=1, scale=4),
        COMPACT_FILE: Compact(num_feat=8, num_conv=2, upscale=2),
        SPAN_FILE: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4),
        DAT_FILE: DAT(embed_dim=32, depth=[1], num_heads=[2], expansion_factor=2, upscale=2),
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.nn.Module]]:
    """A models folder whose upscale_models/ holds the four tiny models and a README."""
    models_dir = tmp_path_factory.mktemp("models")
    folder = models_dir / "upscale_models"
    networks = _networks()
    for name, network in networks.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        weights = network.eval().state_dict()
        if name == COMPACT_FILE:
            torch.save({"params": weights}, path)
        elif name == DAT_FILE:
            torch.save({"params_ema": weights}, path)
        elif path.suffix == ".safetensors":
            save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
        else:
            torch.save(weights, path)
    (folder / "README.txt").write_text("not a model")
    return models_dir, networks


def test_files_are_listed_recursively_and_sorted(models: tuple[Path, dict]) -> None:
    models_dir, _ = models
    assert list_upscaler_files(models_dir) == sorted(
        [COMPACT_FILE, ESRGAN_FILE, DAT_FILE, SPAN_FILE]
    )
    assert list_upscaler_files(None) == []
    assert list_upscaler_files(models_dir / "nowhere") == []


@pytest.mark.parametrize(
    ("name", "architecture", "scale"),
    [
        (ESRGAN_FILE, "ESRGAN", 4),
        (COMPACT_FILE, "RealESRGAN Compact", 2),
        (SPAN_FILE, "SPAN", 4),
        (DAT_FILE, "DAT", 2),
    ],
)
def test_architecture_and_scale_come_from_the_weights(
    models: tuple[Path, dict], name: str, architecture: str, scale: int
) -> None:
    models_dir, networks = models
    upscaler = load_upscaler(resolve_upscaler_file(models_dir, name))
    assert (upscaler.architecture, upscaler.scale, upscaler.dtype) == (
        architecture,
        scale,
        torch.float32,
    )
    assert upscaler.label == f"{Path(name).stem} ({architecture}, {scale}×)"
    assert upscaler.identity == upscaler_identity(models_dir / "upscale_models" / name)
    loaded, saved = upscaler.descriptor.model.state_dict(), networks[name].state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)
    image = torch.rand(1, 3, 16, 20)
    with torch.inference_mode():
        expected = networks[name](image).clamp(0, 1)
    assert torch.allclose(upscale_image(upscaler, image), expected, atol=1e-5)


def test_identity_changes_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.pth"
    path.write_bytes(b"1")
    first = upscaler_identity(path)
    path.write_bytes(b"12")
    assert upscaler_identity(path) != first and str(path.resolve()) in first


@pytest.mark.parametrize(
    "name", ["../x.pth", "faces/../../x.pth", "/etc/x.pth", "C:\\models\\x.pth", "", "a.txt"]
)
def test_names_outside_the_folder_are_refused(models: tuple[Path, dict], name: str) -> None:
    with pytest.raises(InputError):
        resolve_upscaler_file(models[0], name)


def test_a_missing_name_lists_what_is_there(models: tuple[Path, dict]) -> None:
    with pytest.raises(ModelNotFoundError, match="not in .*upscale_models.*4x-TinySharp"):
        resolve_upscaler_file(models[0], "4x-UltraSharp.pth")
    with pytest.raises(ModelNotFoundError, match="no models folder"):
        resolve_upscaler_file(None, ESRGAN_FILE)


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple:
            return (open, (str(marker), "w"))

    hostile = tmp_path / "4x-Hostile.pth"
    torch.save({"model.0.weight": torch.zeros(1), "extra": Payload()}, hostile)
    with pytest.raises(ModelNotFoundError, match="could run code") as error:
        load_upscaler(hostile)
    assert str(hostile) in str(error.value) and "open" in str(error.value)
    assert not marker.exists()


def test_torchscript_archives_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Conv2d(3, 3, 1)).save(str(path))
    with pytest.raises(ModelNotFoundError, match="TorchScript") as error:
        load_upscaler(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("name", [ESRGAN_FILE, SPAN_FILE])
def test_a_truncated_file_is_named(models: tuple[Path, dict], tmp_path: Path, name: str) -> None:
    data = (models[0] / "upscale_models" / name).read_bytes()
    truncated = tmp_path / Path(name).name
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelNotFoundError, match="truncated") as error:
        load_upscaler(truncated)
    assert str(truncated) in str(error.value)


def test_weights_that_are_not_an_upscaler_are_named(tmp_path: Path) -> None:
    lora = tmp_path / "skin_detail.safetensors"
    save_file({"lora_unet_a.lora_down.weight": torch.zeros(4, 8)}, str(lora))
    with pytest.raises(ModelNotFoundError, match="no upscaler architecture") as error:
        load_upscaler(lora)
    assert str(lora) in str(error.value) and "lora_unet_a" in str(error.value)

    nested = tmp_path / "gan.pth"
    torch.save({"generator": {"a": torch.zeros(1)}, "discriminator": {"b": torch.zeros(1)}}, nested)
    with pytest.raises(ModelNotFoundError, match="no named tensors.*generator"):
        load_upscaler(nested)

    broken = tmp_path / "4x-Broken.pth"
    weights = _networks()[ESRGAN_FILE].state_dict()
    torch.save(weights | {"model.1.sub.0.RDB1.conv1.0.weight": torch.zeros(5, 5, 3, 3)}, broken)
    with pytest.raises(ModelNotFoundError, match="do not build") as error:
        load_upscaler(broken)
    assert str(broken) in str(error.value)


def test_half_precision_where_the_architecture_runs_in_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    half = SimpleNamespace(supports_half=True, supports_bfloat16=True)
    bf16_only = SimpleNamespace(supports_half=False, supports_bfloat16=True)
    neither = SimpleNamespace(supports_half=False, supports_bfloat16=False)
    assert inference_dtype(half, cuda) == torch.float16
    assert inference_dtype(bf16_only, cuda) == torch.bfloat16
    assert inference_dtype(neither, cuda) == torch.float32
    assert inference_dtype(half, cpu) == torch.float32


def test_tiles_cover_the_image_and_ramps_sum_to_one() -> None:
    spans = tile_spans(56, 24, 8)
    assert [(s.start, s.end, s.lead, s.trail) for s in spans] == [
        (0, 24, 0, 8),
        (16, 40, 8, 8),
        (32, 56, 8, 0),
    ]
    assert [(s.start, s.end) for s in tile_spans(20, 24, 8)] == [(0, 20)]
    first, second = ramp(24, 0, 8), ramp(24, 8, 8)
    assert torch.allclose(first[16:] + second[:8], torch.ones(8))
    assert bool((ramp(24, 8, 8) > 0).all())


def test_tiled_output_matches_one_call_and_counts_progress(models: tuple[Path, dict]) -> None:
    upscaler = load_upscaler(resolve_upscaler_file(models[0], COMPACT_FILE))
    torch.manual_seed(1)
    image = torch.rand(1, 3, 40, 56)
    whole = upscale_image(upscaler, image, tile=512)
    calls: list[tuple[int, int]] = []
    tiles = upscale_image(upscaler, image, tile=24, overlap=8, progress=lambda *c: calls.append(c))
    assert tiles.shape == whole.shape == (1, 3, 80, 112)
    assert float((tiles - whole).abs().max()) < 0.02
    assert float((tiles - whole).abs().mean()) < 0.002
    assert float(tiles.min()) >= 0.0 and float(tiles.max()) <= 1.0
    assert calls == [(done, 6) for done in range(1, 7)]


def test_out_of_memory_halves_the_tile(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[tuple[int, int]] = []

    def run_model(upscaler: LoadedUpscaler, pixels: torch.Tensor) -> torch.Tensor:
        sizes.append(tuple(pixels.shape[2:]))
        if max(pixels.shape[2:]) > 128:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return pixels.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)

    monkeypatch.setattr(tiled, "_run_model", run_model)
    descriptor = SimpleNamespace(device=torch.device("cuda"), tiling=SimpleNamespace(name="NO"))
    upscaler = LoadedUpscaler(descriptor, 2, "Fake", "fake", "fake", torch.float16)  # type: ignore[arg-type]
    calls: list[tuple[int, int]] = []
    image = torch.rand(1, 3, 300, 300)
    result = upscale_image(upscaler, image, progress=lambda *c: calls.append(c))
    assert sizes[:2] == [(300, 300), (256, 256)] and set(sizes[2:]) == {(128, 128)}
    assert calls[-1] == (9, 9) and len(calls) == 9
    assert torch.allclose(result, image.repeat_interleave(2, 2).repeat_interleave(2, 3))

    on_cpu = replace(upscaler, descriptor=SimpleNamespace(device=torch.device("cpu")))
    with pytest.raises(torch.OutOfMemoryError):
        upscale_image(on_cpu, image)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_half_precision_on_cuda(models: tuple[Path, dict]) -> None:
    models_dir, _ = models
    expected = {ESRGAN_FILE: torch.float16, DAT_FILE: torch.bfloat16}
    image = torch.rand(1, 3, 32, 32)
    for name, dtype in expected.items():
        upscaler = load_upscaler(resolve_upscaler_file(models_dir, name), device="cuda")
        assert upscaler.dtype == dtype and upscaler.device.type == "cuda"
        reference = load_upscaler(resolve_upscaler_file(models_dir, name))
        result = upscale_image(upscaler, image, tile=16, overlap=4)
        assert result.device.type == "cpu" and result.dtype == torch.float32
        assert float((result - upscale_image(reference, image)).abs().mean()) < 0.02
