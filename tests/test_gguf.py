"""GGUF files (seed 001: gguf/SRPO-Q8_0.gguf) are recognised and refused in plain words."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import shutil
import struct
from pathlib import Path

import pytest

from engine import cli
from engine.errors import InputError, ModelNotFoundError
from engine.models.checkpoint import CheckpointError, read_header
from engine.models.manager import ModelConfig, ModelManager
from engine.models.tiny_export import save_tiny_comfy
from engine.recipe import ModelParams

SEED_001 = "gguf/SRPO-Q8_0.gguf"


def write_gguf(path: Path) -> Path:
    """A tiny valid-looking GGUF file: magic, version 3, no tensors, no key/values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<4sIQQ", b"GGUF", 3, 0, 0))
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return save_tiny_comfy(tmp_path_factory.mktemp("gguf") / "ComfyUI" / "models").t5.parents[1]


@pytest.fixture
def models(saved, tmp_path) -> Path:
    """A private copy of the tiny ComfyUI install (models/ and comfy/)."""
    shutil.copytree(saved.parent, tmp_path / "ComfyUI")
    return tmp_path / "ComfyUI" / "models"


def manager(models: Path, tmp_path: Path) -> ModelManager:
    cache = tmp_path / "hf"  # an empty hub cache: nothing from this machine's may leak in
    cache.mkdir(exist_ok=True)
    return ModelManager(ModelConfig(models_dir=models, device="cpu", hub_cache_dir=cache))


def only_gguf_transformer(models: Path) -> None:
    """Seed 001's folder: the transformer is a GGUF file, nothing else could serve."""
    (models / "diffusion_models" / "flux1-tiny.safetensors").unlink()
    write_gguf(models / "unet" / SEED_001)


@pytest.mark.parametrize(
    ("field", "name", "advice"),
    [
        ("transformer", SEED_001, "use e.g. flux1-dev-fp8 / flux1-schnell-fp8 instead"),
        ("transformer", "flux1-dev-Q4_K_S.GGUF", "FLUX.1 as .safetensors"),
        ("t5", "t5-v1_1-xxl-encoder-Q8_0.gguf", "t5xxl_fp8_e4m3fn"),
        ("clip_l", "clip_l-Q8_0.gguf", "clip_l.safetensors"),
    ],
)
def test_a_named_gguf_file_is_an_input_error_naming_it(models, tmp_path, field, name, advice):
    folder = "unet" if field == "transformer" else "text_encoders"
    write_gguf(models / folder / name)
    with pytest.raises(InputError) as error:
        manager(models, tmp_path).resolve(ModelParams(**{field: name}))
    message = str(error.value)
    assert message.startswith(f"{name} is a GGUF file (llama.cpp-style quantisation).")
    assert advice in message and "Portrait Studio loads" in message


def test_a_named_gguf_file_that_is_not_there_is_refused_the_same_way(models, tmp_path):
    with pytest.raises(InputError, match="SRPO-Q8_0.gguf is a GGUF file"):
        manager(models, tmp_path).resolve(ModelParams(transformer=SEED_001))


def test_gguf_content_under_a_safetensors_name_says_gguf_not_a_parse_error(models, tmp_path):
    renamed = write_gguf(models / "text_encoders" / "t5xxl-renamed.safetensors")
    with pytest.raises(CheckpointError, match="is a GGUF file"):
        read_header(renamed)
    with pytest.raises(InputError) as error:
        manager(models, tmp_path).resolve(ModelParams(t5="t5xxl-renamed.safetensors"))
    assert str(error.value).startswith("t5xxl-renamed.safetensors is a GGUF file")
    assert "t5xxl_fp8_e4m3fn" in str(error.value)
    # Searched for rather than named: skipped with the reason, and the tiny T5 still serves.
    text = manager(models, tmp_path).describe()
    assert "Flux weights found" in text
    assert "t5xxl-renamed.safetensors is a GGUF file" in text
    assert "truncated" not in text and "cannot be read" not in text


def test_only_gguf_transformers_are_named_in_the_no_usable_weights_message(models, tmp_path):
    only_gguf_transformer(models)
    write_gguf(models / "diffusion_models" / "flux1-dev-renamed.safetensors")
    with pytest.raises(ModelNotFoundError) as error:
        manager(models, tmp_path).resolve(ModelParams())
    message = str(error.value)
    assert message.startswith(
        "No Flux transformer found. SRPO-Q8_0.gguf and flux1-dev-renamed.safetensors "
        "are GGUF files (llama.cpp-style quantisation). Portrait Studio loads FLUX.1 as "
        ".safetensors"
    )
    assert "flux1-dev-fp8" in message and str(models / "unet") in message
    # The studio's model status line says the same.
    status = manager(models, tmp_path).describe()
    assert status.startswith("No usable Flux weights yet. No Flux transformer found. SRPO")
    assert "SRPO-Q8_0.gguf" in status and "GGUF" in status


def test_engine_models_lists_gguf_files_as_not_supported(models, tmp_path, capsys):
    write_gguf(models / "unet" / SEED_001)
    write_gguf(models / "text_encoders" / "t5-v1_1-xxl-encoder-Q8_0.gguf")
    flags = ["--device", "cpu", "--outputs", str(tmp_path / "o"), "--data", str(tmp_path / "d")]
    assert cli.main(["models", "--models", str(models), *flags]) == 0
    out = capsys.readouterr().out
    assert "Flux weights found" in out  # the tiny .safetensors files still serve
    for name in ("SRPO-Q8_0.gguf", "t5-v1_1-xxl-encoder-Q8_0.gguf"):
        reason = "is a GGUF file (llama.cpp-style quantisation), which Portrait Studio does not"
        assert f"{name} {reason} support" in out
    only_gguf_transformer(models)
    assert cli.main(["models", "--models", str(models), *flags]) == 0
    out = capsys.readouterr().out
    assert "No Flux transformer found. SRPO-Q8_0.gguf is a GGUF file (llama.cpp" in out
