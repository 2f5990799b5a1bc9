"""ModelManager on tiny models: building, finding, loading, warm reuse, fp8 storage, errors."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import re
import shutil
from pathlib import Path

import pytest
import torch

from engine.errors import ModelNotFoundError
from engine.models import tiny
from engine.models.loaders import download
from engine.models.manager import FluxBundle, ModelConfig, ModelManager
from engine.models.precision import resolve_weight_dtype, storage_report
from engine.models.specs import WeightSpec
from engine.models.tiny_export import quantise, save_tiny_comfy, save_tiny_diffusers
from engine.recipe import ModelParams

PROMPT = "close-up portrait photograph of a woman, natural window light, 85mm lens"
MODULATION = ("norm1.linear", "norm1_context.linear", "norm.linear", "norm_out.linear")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Tiny models saved once as a diffusers folder and as ComfyUI installs (plain, fp8)."""
    root = tmp_path_factory.mktemp("models")
    out = {"diffusers": save_tiny_diffusers(root / "flux-tiny"), "hub_cache": root / "hf"}
    out["hub_cache"].mkdir()
    for fmt in ("fp32", "fp8_e4m3fn", "fp8_e4m3fn_scaled"):
        save_tiny_comfy(root / f"ComfyUI-{fmt}" / "models", fmt)
        out[fmt] = root / f"ComfyUI-{fmt}" / "models"
    return out


def config(folders, **kwargs) -> ModelConfig:
    # An empty hub cache: nothing from this machine's real cache may leak into a test.
    return ModelConfig(device="cpu", hub_cache_dir=folders["hub_cache"], **kwargs)


def comfy_copy(folders, tmp_path, fmt="fp32") -> Path:
    """A private copy of a ComfyUI install (models/ and comfy/) that a test may damage."""
    install = tmp_path / "ComfyUI"
    shutil.copytree(folders[fmt].parent, install)
    return install / "models"


def tiny_inputs() -> dict[str, torch.Tensor]:
    """The documented transformer inputs: 2 images of 4x4 packed latents, 8 text tokens."""
    gen = torch.Generator().manual_seed(0)
    batch, image_tokens, text_tokens = 2, 16, 8
    return {
        "hidden_states": torch.randn(batch, image_tokens, 64, generator=gen),
        "encoder_hidden_states": torch.randn(batch, text_tokens, 32, generator=gen),
        "pooled_projections": torch.randn(batch, 32, generator=gen),
        "img_ids": torch.zeros(image_tokens, 3),
        "txt_ids": torch.zeros(text_tokens, 3),
        "timestep": torch.full((batch,), 0.5),
        "guidance": torch.full((batch,), 3.5),
    }


@torch.inference_mode()
def outputs(bundle: FluxBundle) -> list[torch.Tensor]:
    """Every component's output on fixed inputs (text encoders fed through the tokenizers)."""
    clip_ids = bundle.clip_tokenizer(
        PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    t5_ids = bundle.t5_tokenizer(
        PROMPT,
        padding="max_length",
        max_length=bundle.t5_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    latents = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    return [
        clip_ids,
        t5_ids,
        bundle.clip(clip_ids).pooler_output,
        bundle.t5(t5_ids)[0],
        bundle.transformer(**tiny_inputs(), return_dict=False)[0],
        bundle.vae.decode(latents, return_dict=False)[0],
    ]


@pytest.fixture(scope="module")
def reference() -> list[torch.Tensor]:
    return outputs(ModelManager(ModelConfig(tiny=True, device="cpu")).flux(ModelParams()))


def assert_same(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


def test_tiny_builds_are_bit_identical_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first, second = tiny.build_tiny_components(), tiny.build_tiny_components()
    assert torch.equal(torch.random.get_rng_state(), before)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        a, b = first[name].state_dict(), second[name].state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_tiny_transformer_runs_on_the_documented_shapes():
    out = tiny.build_tiny_transformer()(**tiny_inputs(), return_dict=False)[0]
    assert out.shape == (2, 16, 64)
    assert torch.isfinite(out).all()


def test_tiny_tokenizers_give_varied_ids_that_fit_their_encoders():
    parts = tiny.build_tiny_components()
    clip_ids = parts["tokenizer"](PROMPT).input_ids
    t5_ids = parts["tokenizer_2"](PROMPT).input_ids
    assert len(set(clip_ids)) > 10 and len(set(t5_ids)) > 10
    assert clip_ids[-1] == parts["tokenizer"].eos_token_id
    assert parts["text_encoder"].config.eos_token_id == parts["tokenizer"].eos_token_id
    assert max(clip_ids) < parts["text_encoder"].config.vocab_size
    assert max(t5_ids) < parts["text_encoder_2"].config.vocab_size
    assert t5_ids[-1] == parts["tokenizer_2"].eos_token_id == 1


def test_diffusers_folder_loads_the_same_models(folders, reference):
    assert (folders["diffusers"] / "model_index.json").is_file()
    manager = ModelManager(config(folders, diffusers_dir=folders["diffusers"]))
    bundle = manager.flux(ModelParams())
    assert bundle.files.transformer.startswith("diffusers:transformer:")
    assert bundle.compute_dtype == torch.float32 and bundle.files.weight_dtype == "fp32"
    assert bundle.t5_max_length == tiny.TINY_T5_MAX_LENGTH
    assert_same(outputs(bundle), reference)


def test_comfy_folder_resolves_and_loads_the_same_models(folders, reference):
    manager = ModelManager(config(folders, models_dir=folders["fp32"]))
    files = manager.resolve(ModelParams())
    assert re.fullmatch(
        r"comfy:diffusion_models/flux1-tiny\.safetensors:\d+:\d+", files.transformer
    )
    assert files.vae.startswith("comfy:vae/ae-tiny.safetensors:")
    assert "clip_l-tiny.safetensors" in files.text and "sd1_tokenizer" in files.text
    assert "flux1-tiny.safetensors" in files.label
    assert_same(outputs(manager.flux(ModelParams())), reference)


@pytest.mark.parametrize("fmt", ["fp8_e4m3fn", "fp8_e4m3fn_scaled"])
def test_fp8_and_scaled_fp8_files_load_dequantised(folders, fmt):
    bundle = ModelManager(config(folders, models_dir=folders[fmt])).flux(ModelParams())
    stored = quantise(tiny.build_tiny_transformer().state_dict(), fmt)
    for key, value in bundle.transformer.state_dict().items():
        want = stored[key].float()
        scale = stored.get(key[: -len("weight")] + "scale_weight")
        if scale is not None:
            want = want * scale
        assert torch.equal(value, want), key


def test_models_stay_warm_and_only_changed_parts_reload(folders):
    manager = ModelManager(config(folders, models_dir=folders["fp32"]))
    first = manager.flux(ModelParams())
    second = manager.flux(ModelParams())
    assert second.transformer is first.transformer and second.t5 is first.t5
    assert manager.load_counts() == {
        **dict.fromkeys(("transformer", "vae", "clip", "t5", "clip_tokenizer", "t5_tokenizer"), 1),
        "fill": 0,  # loaded only when a Refine pass asks for FLUX.1 Fill
    }
    manager.flux(ModelParams(weight_dtype="fp8_e4m3fn"))
    counts = manager.load_counts()
    assert counts["transformer"] == 2 and counts["vae"] == counts["t5"] == 1


def test_fp8_storage_includes_the_modulation_layers_and_runs():
    manager = ModelManager(ModelConfig(tiny=True, device="cpu"))
    bundle = manager.flux(ModelParams(weight_dtype="fp8_e4m3fn"))
    model = bundle.transformer
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert any(n.endswith(MODULATION) for n in linears)
    for name, module in linears.items():
        assert module.weight.dtype == torch.float8_e4m3fn, name
    norms = sum(p.numel() for n, p in model.named_parameters() if ".norm_" in n)
    report = storage_report(model)
    assert report.other == norms > 0
    assert report.fp8 == sum(p.numel() for m in linears.values() for p in m.parameters())
    with torch.inference_mode():
        out = model(**tiny_inputs(), return_dict=False)[0]
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_weight_dtype_rules():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_weight_dtype("default", cpu, "fp8_e4m3fn") == "fp32"
    assert resolve_weight_dtype("default", cuda) == "bf16"
    assert resolve_weight_dtype("default", cuda, "fp8_e4m3fn") == "fp8_e4m3fn"
    assert resolve_weight_dtype("fp8_e5m2", cpu) == "fp8_e5m2"


def test_missing_models_folder_says_where_it_looked(folders, tmp_path):
    missing = tmp_path / "no-such-models"
    manager = ModelManager(config(folders, models_dir=missing))
    with pytest.raises(ModelNotFoundError) as error:
        manager.resolve(ModelParams())
    assert str(missing) in str(error.value) and "--tiny" in str(error.value)
    assert str(missing) in manager.describe() and "--tiny" in manager.describe()


def test_missing_named_transformer_names_the_file_and_every_folder(folders):
    manager = ModelManager(config(folders, models_dir=folders["fp32"]))
    with pytest.raises(ModelNotFoundError) as error:
        manager.resolve(ModelParams(transformer="flux1-dev-fp8.safetensors"))
    message = str(error.value)
    assert "flux1-dev-fp8.safetensors" in message
    for sub in ("diffusion_models", "unet", "checkpoints"):
        assert str(folders["fp32"] / sub) in message


def test_truncated_file_is_reported_by_name(folders, tmp_path):
    models = comfy_copy(folders, tmp_path)
    path = models / "diffusion_models" / "flux1-tiny.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    manager = ModelManager(config(folders, models_dir=models))
    for params in (ModelParams(), ModelParams(transformer="flux1-tiny.safetensors")):
        with pytest.raises(ModelNotFoundError) as error:
            manager.flux(params)
        message = str(error.value)
        assert "flux1-tiny.safetensors" in message and "truncated" in message
        assert str(models / "diffusion_models") in message


def test_missing_tokenizers_list_every_place_searched(folders, tmp_path):
    models = comfy_copy(folders, tmp_path)
    shutil.rmtree(models.parent / "comfy")
    with pytest.raises(ModelNotFoundError) as error:
        ModelManager(config(folders, models_dir=models)).resolve(ModelParams())
    message = str(error.value)
    assert "CLIP-L tokenizer" in message
    assert str(models.parent / "comfy" / "sd1_tokenizer") in message
    assert "openai/clip-vit-large-patch14" in message


def fake_hub_cache(folders, cache: Path, repo_id: str) -> Path:
    """The tiny diffusers folder laid out as huggingface_hub caches a downloaded repo."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(folders["diffusers"], snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    return snapshot


def test_a_cached_repo_loads_offline_and_an_uncached_one_says_so(folders, reference, tmp_path):
    fake_hub_cache(folders, tmp_path / "hf", "someone/flux-tiny")
    cached = ModelConfig(device="cpu", repo_id="someone/flux-tiny", hub_cache_dir=tmp_path / "hf")
    manager = ModelManager(cached)
    # The same identity as before a download, so a first download does not reload later.
    assert manager.resolve(ModelParams()).transformer == "hub:someone/flux-tiny:transformer"
    assert_same(outputs(manager.flux(ModelParams())), reference)
    absent = ModelConfig(device="cpu", repo_id="someone/other", hub_cache_dir=tmp_path / "hf")
    with pytest.raises(ModelNotFoundError, match="someone/other.*offline"):
        ModelManager(absent).resolve(ModelParams())


def test_download_turns_a_hub_spec_into_a_local_one(folders, tmp_path):
    snapshot = fake_hub_cache(folders, tmp_path / "hf", "someone/flux-tiny")
    spec = WeightSpec(
        "t5",
        "hub",
        "hub:someone/flux-tiny:text_encoder_2",
        repo_id="someone/flux-tiny",
        subfolder="text_encoder_2",
    )
    local = download(spec, tmp_path / "hf")  # offline: huggingface_hub answers from its cache
    assert (local.source, local.path, local.identity) == ("diffusers", snapshot, spec.identity)


def test_names_outside_the_models_folder_and_unusable_files_are_refused(folders, tmp_path):
    models = comfy_copy(folders, tmp_path)
    manager = ModelManager(config(folders, models_dir=models))
    with pytest.raises(ModelNotFoundError, match="inside the models folder"):
        manager.resolve(ModelParams(vae="../../secret.safetensors"))
    transformer = models / "diffusion_models" / "flux1-tiny.safetensors"
    shutil.copy(models / "vae" / "ae-tiny.safetensors", transformer)
    (models / "unet").mkdir()
    (models / "unet" / "flux1-dev-Q8_0.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelNotFoundError) as error:
        manager.resolve(ModelParams())
    assert "flux1-tiny.safetensors is not a Flux transformer" in str(error.value)
    assert "flux1-dev-Q8_0.gguf is a GGUF file" in str(error.value)


def test_describe_names_the_files_found(folders):
    text = ModelManager(config(folders, models_dir=folders["fp32"])).describe()
    assert "flux1-tiny.safetensors" in text and "ae-tiny.safetensors" in text
    assert str(folders["fp32"] / "diffusion_models") in text
    assert "tiny" in ModelManager(ModelConfig(tiny=True, device="cpu")).describe()
