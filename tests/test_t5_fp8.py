"""ComfyUI's fp8 T5-XXL files (seed 001's speed fix): t5xxl_fp8_e4m3fn and
t5xxl_fp8_e4m3fn_scaled, at the tiny width, found, loaded and encoding like the real ones."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import T5Config, T5EncoderModel

from engine import cli
from engine.models import tiny
from engine.models.checkpoint import read_header
from engine.models.detect import detect_t5
from engine.models.manager import ModelConfig, ModelManager
from engine.models.precision import apply_t5_fp8_storage, keeps_t5_fp8
from engine.models.tiny_export import T5_FORMATS, is_t5_linear, quantise_t5, save_tiny_comfy
from engine.models.tiny_text import build_tiny_t5_tokenizer
from engine.recipe import ModelParams

PROMPT = "close-up portrait photograph of a woman, natural window light, 85mm lens"
FP8_FORMATS = [fmt for fmt in T5_FORMATS if fmt != "fp32"]
FORMAT_KEYS = ("scale_weight", "scale_input", "scaled_fp8")


@pytest.fixture(scope="module")
def installs(tmp_path_factory) -> dict[str, Path]:
    """One tiny ComfyUI install per T5 format: its models folder, keyed by format."""
    root = tmp_path_factory.mktemp("t5fp8")
    (root / "hf").mkdir()  # an empty hub cache: nothing from this machine's may leak in
    return {fmt: save_tiny_comfy(root / fmt / "models", t5_format=fmt).t5 for fmt in T5_FORMATS}


def manager(t5_file: Path) -> ModelManager:
    models = t5_file.parents[1]
    cache = models.parents[1] / "hf"
    return ModelManager(ModelConfig(models_dir=models, device="cpu", hub_cache_dir=cache))


def dequantised(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A stored T5 file's tensors in fp32, each fp8 weight times its scale_weight if any."""
    out = {}
    for key, tensor in stored.items():
        if key.endswith(FORMAT_KEYS):
            continue
        value = tensor.float()
        scale = stored.get(key[: -len("weight")] + "scale_weight")
        out[key] = value if scale is None else value * scale.float()
    out["encoder.embed_tokens.weight"] = out["shared.weight"]  # tied, as in T5EncoderModel
    return out


def model_from(state: dict[str, torch.Tensor]) -> T5EncoderModel:
    model = T5EncoderModel(T5Config(**tiny.tiny_t5_config())).eval()
    model.load_state_dict(state, strict=True)
    return model


@torch.inference_mode()
def encode(model: T5EncoderModel) -> torch.Tensor:
    ids = build_tiny_t5_tokenizer()(PROMPT, return_tensors="pt").input_ids
    return model(ids)[0]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize("fmt", FP8_FORMATS)
def test_fp8_t5_files_are_laid_out_as_comfyui_stores_them(installs, fmt):
    header = read_header(installs[fmt])
    linears = [k for k in header.shapes if is_t5_linear(k)]
    assert len(linears) == 2 * (4 + 3)  # 2 blocks: q, k, v, o + wi_0, wi_1, wo
    assert all(header.dtypes[k] == "F8_E4M3" for k in linears)
    others = [k for k in header.shapes if k not in linears and not k.endswith(FORMAT_KEYS)]
    assert "shared.weight" in others and all(header.dtypes[k] == "F16" for k in others)
    scaled = fmt.endswith("_scaled")
    assert header.has("scaled_fp8") is scaled
    for key in linears:
        stem = key[: -len("weight")]
        assert header.has(stem + "scale_weight") is scaled
        assert header.has(stem + "scale_input") is scaled


@pytest.mark.parametrize("fmt", T5_FORMATS)
def test_detection_reports_t5_with_its_fp8_dtype(installs, fmt):
    found = detect_t5(read_header(installs[fmt]))
    assert not isinstance(found, str), found
    assert (found.component, found.family, found.dims()["d_model"]) == ("t5", "tiny", 32)
    assert found.file_fp8 == ("" if fmt == "fp32" else "fp8_e4m3fn")
    assert found.fp8_scaled is fmt.endswith("_scaled")


@pytest.mark.parametrize("fmt", FP8_FORMATS)
def test_fp8_t5_loads_dequantised_and_encodes_like_its_dequantised_weights(installs, fmt):
    t5_file = installs[fmt]
    spec = manager(t5_file).resolve(ModelParams()).spec("t5")
    assert spec.path == t5_file
    loaded = manager(t5_file).flux(ModelParams()).t5
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}  # CPU: no fp8 matmul
    want = model_from(dequantised(load_file(str(t5_file))))
    got = encode(loaded)
    assert torch.equal(got, encode(want))  # the same numbers: dequantised exactly as here
    # fp8 rounding only: close to the fp32 model the file was made from.
    original = encode(tiny.build_tiny_t5())
    assert 0 < relative_error(got, original) < 0.1


def test_scaled_fp8_t5_multiplies_each_weight_by_its_scale(installs):
    t5_file = installs["fp8_e4m3fn_scaled"]
    stored = load_file(str(t5_file))
    loaded = manager(t5_file).flux(ModelParams()).t5.state_dict()
    for key in (k for k in stored if is_t5_linear(k)):
        scale = stored[key[: -len("weight")] + "scale_weight"]
        assert scale.dtype == torch.float32 and scale.numel() == 1 and float(scale) != 1.0
        assert torch.equal(loaded[key], stored[key].float() * scale), key
        assert not torch.allclose(loaded[key], stored[key].float()), key
    # Reading the fp8 values without their scales would encode something else entirely.
    unscaled = {k: v for k, v in stored.items() if not k.endswith("scale_weight")}
    assert (
        relative_error(
            encode(model_from(dequantised(unscaled))), encode(model_from(dequantised(stored)))
        )
        > 0.1
    )


@pytest.mark.parametrize("fmt", FP8_FORMATS)
def test_an_all_fp8_t5_file_loads_too(installs, tmp_path, fmt):
    """Some fp8 T5 files also store the embedding, norms and attention bias in fp8."""
    state = tiny.build_tiny_t5().state_dict()
    state.pop("encoder.embed_tokens.weight")
    stored = quantise_t5(state, fmt, others=torch.float8_e4m3fn)
    folder = save_tiny_comfy(tmp_path / "ComfyUI" / "models").t5.parent
    (folder / "t5xxl-tiny.safetensors").unlink()
    t5_file = folder / "t5xxl_fp8_e4m3fn_all.safetensors"
    save_file(stored, str(t5_file))
    (tmp_path / "hf").mkdir()
    config = ModelConfig(models_dir=folder.parent, device="cpu", hub_cache_dir=tmp_path / "hf")
    loaded = ModelManager(config).flux(ModelParams()).t5
    want = encode(model_from(dequantised(load_file(str(t5_file)))))
    assert torch.equal(encode(loaded), want)


def test_plain_fp8_t5_stays_fp8_on_a_gpu_and_gives_the_same_encoding(installs):
    """The GPU path (fp8 storage, cast per layer) on the CPU: a plain e4m3fn file's weights
    survive the trip back to fp8 exactly. Scaled weights are off the fp8 grid, so a scaled
    file stays in the compute dtype."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert keeps_t5_fp8("fp8_e4m3fn", False, cuda)
    assert not keeps_t5_fp8("fp8_e4m3fn", True, cuda)
    assert not keeps_t5_fp8("fp8_e5m2", False, cuda)
    assert not keeps_t5_fp8("fp8_e4m3fn", False, cpu) and not keeps_t5_fp8("", False, cuda)
    model = manager(installs["fp8_e4m3fn"]).flux(ModelParams()).t5
    before = encode(model)
    apply_t5_fp8_storage(model, torch.float32)
    assert model.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float8_e4m3fn
    assert torch.equal(encode(model), before)


@pytest.mark.parametrize("fmt", FP8_FORMATS)
def test_engine_models_says_the_t5_file_is_fp8(installs, tmp_path, capsys, fmt):
    models = installs[fmt].parents[1]
    flags = ["--device", "cpu", "--outputs", str(tmp_path / "o"), "--data", str(tmp_path / "d")]
    assert cli.main(["models", "--models", str(models), *flags]) == 0
    out = capsys.readouterr().out
    scaled = " (scaled)" if fmt.endswith("_scaled") else ""
    assert f"t5xxl-tiny_{fmt}.safetensors" in out
    assert f"T5-XXL file in fp8_e4m3fn{scaled}, dequantised to float32." in out
    plain = manager(installs["fp32"]).describe()
    assert "T5-XXL file in" not in plain
