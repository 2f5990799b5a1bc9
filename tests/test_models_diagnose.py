"""`python -m engine models` as a diagnosis table: what each file is, its layout, dtype,
variant, block / layer counts and fp8 scaling, and warnings for files that differ from the
known FLUX.1 / T5-XXL / CLIP-L / AE shapes (a file with a block missing among them)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import logging
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from engine import cli
from engine.models.checkpoint import Header
from engine.models.detect import Detected, detect_clip, detect_t5, detect_transformer, detect_vae
from engine.models.diagnose import COLUMNS, PartFacts, header_facts
from engine.models.manager import ModelConfig, ModelManager
from engine.models.tiny_export import save_tiny_comfy, save_tiny_diffusers
from engine.recipe import ModelParams

TINY_TRANSFORMER = "1 double + 1 single blocks, width 32"
COMFY = "model.diffusion_model."


@pytest.fixture(autouse=True)
def offline(no_network: None) -> None:
    """Every test here reads headers only: nothing may go online."""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("diagnose")
    for fmt in ("fp32", "fp8_e4m3fn", "fp8_e4m3fn_scaled"):
        save_tiny_comfy(root / f"ComfyUI-{fmt}" / "models", fmt, fmt)
    save_tiny_diffusers(root / "flux-tiny")
    return root


def engine_models(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> str:
    flags = ["--device", "cpu", "--outputs", str(tmp_path / "o"), "--data", str(tmp_path / "d")]
    assert cli.main(["models", *args, *flags]) == 0
    return capsys.readouterr().out


def table(out: str) -> dict[str, dict[str, str]]:
    """The rows of the printed table, keyed by their part cell."""
    rows = [line for line in out.splitlines() if line.startswith("| ")][1:]  # no header
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    return {row[0]: dict(zip(COLUMNS, row, strict=True)) for row in cells}


def models_copy(root: Path, tmp_path: Path, fmt: str = "fp32") -> Path:
    shutil.copytree(root / f"ComfyUI-{fmt}", tmp_path / "ComfyUI")
    return tmp_path / "ComfyUI" / "models"


@pytest.mark.parametrize(
    ("fmt", "stored", "t5_stored", "fp8"),
    [
        ("fp32", "fp32", "fp32", "no"),
        ("fp8_e4m3fn", "fp8_e4m3fn", "fp8_e4m3fn (+ fp16)", "plain"),
        ("fp8_e4m3fn_scaled", "fp8_e4m3fn", "fp8_e4m3fn (+ fp16)", "scaled"),
    ],
)
def test_engine_models_describes_each_comfy_file(
    root, tmp_path, capsys, fmt, stored, t5_stored, fp8
):
    rows = table(
        engine_models(["--models", str(root / f"ComfyUI-{fmt}" / "models")], tmp_path, capsys)
    )
    suffix = "" if fmt == "fp32" else f"-{fmt}"
    assert rows["transformer (in use)"] == {
        "part": "transformer (in use)",
        "file": f"diffusion_models/flux1-tiny{suffix}.safetensors",
        "what": "tiny test transformer",
        "layout": f"diffusers, keys under {COMFY}",
        "stored as": stored,
        "variant": "dev",
        "blocks": TINY_TRANSFORMER,
        "fp8": fp8,
        "check": "ok",
    }
    vae, clip, t5 = rows["VAE (in use)"], rows["CLIP-L (in use)"], rows["T5 (in use)"]
    assert (vae["layout"], vae["stored as"], vae["blocks"]) == (
        "ldm", "fp32", "4 encoder + 4 decoder levels, width 8"
    )  # fmt: skip
    assert (clip["layout"], clip["blocks"], clip["check"]) == (
        "transformers",
        "2 layers, width 32",
        "ok",
    )
    assert (t5["stored as"], t5["fp8"], t5["blocks"], t5["check"]) == (
        t5_stored, "no" if fmt == "fp32" else fp8, "2 layers, width 32", "ok"
    )  # fmt: skip


def test_a_diffusers_folder_is_described_from_its_headers(root, tmp_path, capsys):
    out = engine_models(["--diffusers", str(root / "flux-tiny")], tmp_path, capsys)
    rows = table(out)
    transformer = rows["transformer (in use)"]
    assert transformer["file"] == "flux-tiny/transformer"
    assert (transformer["layout"], transformer["variant"], transformer["blocks"]) == (
        "diffusers", "dev", TINY_TRANSFORMER
    )  # fmt: skip
    assert rows["VAE (in use)"]["layout"] == "diffusers"
    assert rows["T5 (in use)"]["blocks"] == "2 layers, width 32"
    assert "Tokenizers: tokenizer (the text encoder's folder)" in out


def test_an_all_in_one_checkpoint_gives_a_row_per_part(root, tmp_path, capsys):
    source = root / "ComfyUI-fp32" / "models"
    state = load_file(str(source / "diffusion_models" / "flux1-tiny.safetensors"))
    prefixes = {
        "vae/ae-tiny.safetensors": "first_stage_model.",
        "text_encoders/clip_l-tiny.safetensors": "text_encoders.clip_l.transformer.",
        "text_encoders/t5xxl-tiny.safetensors": "text_encoders.t5xxl.transformer.",
    }
    for name, prefix in prefixes.items():
        state.update({prefix + k: v for k, v in load_file(str(source / name)).items()})
    models = tmp_path / "ComfyUI" / "models"
    (models / "checkpoints").mkdir(parents=True)
    save_file(state, str(models / "checkpoints" / "flux1-tiny-aio.safetensors"))
    shutil.copytree(root / "ComfyUI-fp32" / "comfy", tmp_path / "ComfyUI" / "comfy")
    rows = table(engine_models(["--models", str(models)], tmp_path, capsys))
    assert {row["file"] for row in rows.values()} == {"checkpoints/flux1-tiny-aio.safetensors"}
    assert rows["transformer (in use)"]["layout"] == f"diffusers, keys under {COMFY}"
    assert rows["VAE (in use)"]["layout"] == "ldm, keys under first_stage_model."
    assert (
        rows["T5 (in use)"]["layout"] == "transformers, keys under text_encoders.t5xxl.transformer."
    )
    assert all(row["check"] == "ok" for row in rows.values())


def drop_double_block_zero(models: Path, renumber: bool) -> None:
    """Delete the tiny transformer's only double block, or move it to number 1 (a gap)."""
    path = models / "diffusion_models" / "flux1-tiny.safetensors"
    state, stem = load_file(str(path)), f"{COMFY}transformer_blocks.0."
    moved = {
        f"{COMFY}transformer_blocks.1.{k[len(stem) :]}": v
        for k, v in state.items()
        if k.startswith(stem)
    }
    state = {k: v for k, v in state.items() if not k.startswith(stem)}
    save_file({**state, **(moved if renumber else {})}, str(path))


def test_a_tiny_file_with_a_block_missing_warns_but_still_loads(root, tmp_path, capsys, caplog):
    models = models_copy(root, tmp_path)
    drop_double_block_zero(models, renumber=False)
    out = engine_models(["--models", str(models)], tmp_path, capsys)
    row = table(out)["transformer (in use)"]  # a warning, not a refusal
    assert row["blocks"] == "0 double + 1 single blocks, width 32"
    assert row["check"] == "0 double blocks where the tiny test model has 1"
    assert "Unusual files (they load, but differ from the known shapes): diffusion_models/" in out
    manager = ModelManager(ModelConfig(models_dir=models, device="cpu", hub_cache_dir=tmp_path))
    with caplog.at_level(logging.WARNING, logger="engine.models.diagnose"):
        bundle = manager.flux(ModelParams())
    assert len(bundle.transformer.transformer_blocks) == 0
    assert "0 double blocks where the tiny test model has 1 (it loads" in caplog.text


def test_a_gap_in_the_block_numbers_is_named(root, tmp_path, capsys):
    models = models_copy(root, tmp_path)
    drop_double_block_zero(models, renumber=True)
    row = table(engine_models(["--models", str(models)], tmp_path, capsys))["transformer (in use)"]
    assert (
        row["check"] == "double block 0 is missing; 2 double blocks where the tiny test model has 1"
    )


# --- real FLUX.1 / T5-XXL / CLIP-L / AE shapes, as headers (no weights) ---------------------


def header(shapes: dict[str, tuple[int, ...]], dtype: str = "BF16", name: str = "x") -> Header:
    dtypes = {key: dtype if len(shape) >= 2 else "F32" for key, shape in shapes.items()}
    return Header(Path(f"{name}.safetensors"), shapes, dtypes)


def bfl_shapes(prefix: str = "", double: int = 19, single: int = 38, guidance: bool = True):
    """The keys detection and the checks read, at FLUX.1's real shapes."""
    shapes = {
        "img_in.weight": (3072, 64),
        "txt_in.weight": (3072, 4096),
        "vector_in.in_layer.weight": (3072, 768),
        "final_layer.linear.weight": (64, 3072),
    }
    if guidance:
        shapes["guidance_in.in_layer.weight"] = (3072, 256)
    block = {"img_attn.qkv.weight": (9216, 3072), "img_attn.proj.weight": (3072, 3072),
             "img_mlp.0.weight": (12288, 3072), "txt_attn.qkv.weight": (9216, 3072)}  # fmt: skip
    for i in range(double):
        shapes.update({f"double_blocks.{i}.{k}": v for k, v in block.items()})
    for i in range(single):
        shapes[f"single_blocks.{i}.linear1.weight"] = (21504, 3072)
        shapes[f"single_blocks.{i}.linear2.weight"] = (3072, 15360)
    return {prefix + k: v for k, v in shapes.items()}


def facts(part: str, found: Detected | str, head: Header) -> PartFacts:
    assert isinstance(found, Detected), found
    return header_facts(part, head, found)


def test_flux1_dev_in_bfl_layout_matches_19_double_and_38_single_blocks():
    head = header(bfl_shapes(COMFY), name="flux1-dev")
    row = facts("transformer", detect_transformer(head), head)
    assert (row.what, row.layout, row.dtype, row.variant, row.counts, row.fp8, row.warnings) == (
        "FLUX.1 transformer", f"bfl, keys under {COMFY}", "bf16", "dev",
        "19 double + 38 single blocks, width 3072", "no", (),
    )  # fmt: skip
    schnell = header(bfl_shapes(guidance=False), dtype="F8_E4M3")
    row = facts("transformer", detect_transformer(schnell), schnell)
    assert (row.variant, row.dtype, row.fp8) == ("schnell", "fp8_e4m3fn", "plain")


def test_flux1_files_with_blocks_missing_or_incomplete_are_warned_about():
    shapes = bfl_shapes(single=37)
    del (
        shapes["double_blocks.7.img_attn.qkv.weight"],
        shapes["double_blocks.7.img_attn.proj.weight"],
    )
    del shapes["double_blocks.7.img_mlp.0.weight"], shapes["double_blocks.7.txt_attn.qkv.weight"]
    del shapes["double_blocks.3.img_mlp.0.weight"]
    shapes.update({"scaled_fp8": (0,), "img_in.scale_weight": ()})
    head = header(shapes, dtype="F8_E4M3")
    row = facts("transformer", detect_transformer(head), head)
    assert row.fp8 == "scaled" and row.counts == "18 double + 37 single blocks, width 3072"
    assert row.warnings == (
        "double block 7 is missing",
        "double block 3 lacks 1 of its 4 tensors (e.g. img_mlp.0.weight)",
        "37 single blocks where FLUX.1 has 38",
    )
    # Even without block 0 (what the anchors look for first) the file is still recognised.
    shapes = {k: v for k, v in bfl_shapes().items() if not k.startswith("double_blocks.0.")}
    row = facts("transformer", detect_transformer(header(shapes)), header(shapes))
    assert row.warnings == ("double block 0 is missing",)


def t5_shapes(layers: int = 24, skip: tuple[int, ...] = ()) -> dict[str, tuple[int, ...]]:
    shapes = {"shared.weight": (32128, 4096), "encoder.final_layer_norm.weight": (4096,)}
    if 0 not in skip:  # T5 holds its relative attention bias in the first block only
        shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (32, 64)
    for i in (i for i in range(layers) if i not in skip):
        for name in ("q", "k", "v", "o"):
            shapes[f"encoder.block.{i}.layer.0.SelfAttention.{name}.weight"] = (4096, 4096)
        shapes[f"encoder.block.{i}.layer.1.DenseReluDense.wi_0.weight"] = (10240, 4096)
    return shapes


def test_t5_xxl_clip_l_and_the_ae_are_checked_against_their_known_shapes():
    head = header(t5_shapes(), dtype="F16", name="t5xxl_fp16")
    row = facts("t5", detect_t5(head), head)
    assert (row.what, row.counts, row.warnings) == ("T5-XXL encoder", "24 layers, width 4096", ())
    short = header(t5_shapes(layers=23))
    assert facts("t5", detect_t5(short), short).warnings == ("23 layers where T5-XXL has 24",)
    gap = header(t5_shapes(skip=(0,)))  # recognised without its first block
    assert facts("t5", detect_t5(gap), gap).warnings == ("layer 0 is missing",)
    clip = {"text_model.embeddings.token_embedding.weight": (49408, 768)}
    for i in range(11):
        clip[f"text_model.encoder.layers.{i}.self_attn.q_proj.weight"] = (768, 768)
    row = facts("clip", detect_clip(header(clip)), header(clip))
    assert (row.what, row.counts) == ("CLIP-L text encoder", "11 layers, width 768")
    assert row.warnings == ("11 layers where CLIP-L has 12",)
    ae = {"decoder.conv_in.weight": (512, 16, 3, 3), "encoder.conv_in.weight": (128, 3, 3, 3)}
    for level in range(4):
        ae[f"encoder.down.{level}.block.0.conv1.weight"] = (128, 128, 3, 3)
        if level != 2:
            ae[f"decoder.up.{level}.block.0.conv1.weight"] = (128, 128, 3, 3)
    row = facts("vae", detect_vae(header(ae)), header(ae))
    assert (row.what, row.layout, row.counts) == (
        "FLUX.1 AE (16-channel VAE)", "ldm", "4 encoder + 3 decoder levels, width 128"
    )  # fmt: skip
    assert row.warnings == ("decoder level 2 is missing",)
