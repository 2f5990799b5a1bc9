"""The `--tiny` demo's LoRA files: fixed bytes, three layouts, each one changes the image."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import app
from engine.engine import Engine, EngineConfig
from engine.models import demo_loras
from engine.models.demo_loras import DEMO_LORAS, FILM, FRECKLES, SKIN, write_demo_loras
from engine.models.manager import ModelConfig
from engine.models.tiny import TINY_TRANSFORMER, tiny_clip_config
from engine.recipe import Recipe
from engine.recipe_json import set_path

ROOT = Path(__file__).resolve().parent.parent
# Layout, layers placed (as the run report counts them) and the file's trigger words.
EXPECTED = {
    SKIN: ("peft", "9 of 9 layers matched", ["demo skin texture"]),
    FILM: ("kohya", "8 of 8 layers matched (2 on CLIP-L)", ["demo film look"]),
    FRECKLES: ("lycoris", "3 of 3 layers matched (LoKr 3)", ["demo freckles", "sun-kissed"]),
}
pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config`:UserWarning")


def digests(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_the_widths_are_the_tiny_models_widths() -> None:
    heads = TINY_TRANSFORMER["num_attention_heads"]
    head_dim = TINY_TRANSFORMER["attention_head_dim"]
    assert heads * head_dim == demo_loras.D and demo_loras.MLP == 4 * demo_loras.D
    assert TINY_TRANSFORMER["in_channels"] == demo_loras.LATENT
    assert tiny_clip_config()["hidden_size"] == demo_loras.CLIP_D


def test_the_files_are_the_same_bytes_every_time(tmp_path: Path) -> None:
    first = write_demo_loras(tmp_path / "a")
    assert sorted(p.name for p in first) == sorted(DEMO_LORAS) == sorted(EXPECTED)
    mtimes = [p.stat().st_mtime_ns for p in first]
    assert write_demo_loras(tmp_path / "a") == first
    assert [p.stat().st_mtime_ns for p in first] == mtimes  # right already: not rewritten
    # safetensors orders metadata differently in each process: a fresh one must agree.
    code = (
        "import sys; from pathlib import Path; from engine.models.demo_loras import "
        "write_demo_loras; write_demo_loras(Path(sys.argv[1]))"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], cwd=ROOT, check=True)
    assert digests(first) == digests(sorted((tmp_path / "b").iterdir()))
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no temps


def test_a_damaged_file_is_written_again(tmp_path: Path) -> None:
    (path, *_) = write_demo_loras(tmp_path)
    good = path.read_bytes()
    path.write_bytes(good[:100])
    write_demo_loras(tmp_path)
    assert path.read_bytes() == good


def test_each_file_carries_the_metadata_of_its_layout(tmp_path: Path) -> None:
    for path in write_demo_loras(tmp_path):
        with safe_open(str(path), framework="pt") as handle:
            keys, metadata = list(handle.keys()), handle.metadata()
        if path.name == SKIN:
            assert all(k.startswith("transformer.") and ".lora_" in k for k in keys)
            assert json.loads(metadata["lora_adapter_metadata"])["transformer.lora_alpha"] == 8
        elif path.name == FILM:
            assert any(k.startswith("lora_unet_double_blocks_0_") for k in keys)
            assert any(k.startswith("lora_te1_") for k in keys)
            assert "ss_tag_frequency" in metadata
        else:
            assert all(k.startswith("lycoris_") for k in keys)
            assert any(k.endswith(".lokr_w2_a") for k in keys)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = tmp_path_factory.mktemp("demo")
    write_demo_loras(root / "models" / "loras")
    models = ModelConfig(tiny=True, device="cpu", models_dir=root / "models")
    return Engine(EngineConfig(models=models, outputs_dir=root / "out", data_dir=root / "data"))


def recipe(*slots: dict) -> Recipe:
    r = Recipe()
    values = {"prompt.width": 64, "prompt.height": 64, "settings.steps": 2, "settings.seed": 7}
    values["prompt.prompt"] = "a portrait"
    for path, value in values.items():
        r = set_path(r, path, value)
    return set_path(r, "prompt.loras", list(slots))


def test_the_tiny_engine_lists_them_with_their_triggers(engine: Engine) -> None:
    assert engine.list_loras() == sorted(EXPECTED)
    for name, (_, _, triggers) in EXPECTED.items():
        assert engine.lora_triggers(name) == triggers


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_one_lands_and_changes_the_render(engine: Engine, name: str) -> None:
    plain = np.asarray(engine.run(recipe(), save=False).images[0], dtype=np.float32)
    # A trigger already in the prompt keeps the prompt as it is: only the weights differ.
    slot = {"file": name, "trigger": "portrait"}
    result = engine.run(recipe(slot), save=False)
    layout, matched, _ = EXPECTED[name]
    assert f"LoRA {name} ({layout}): {matched}" in result.report.notes, result.report.notes
    assert not [n for n in result.report.notes if n.startswith("Prompt as encoded")]
    image = np.asarray(result.images[0], dtype=np.float32)
    assert np.abs(image - plain).mean() > 1.0  # visibly, not one rounding step
    off = engine.run(recipe({**slot, "enabled": False}), save=False)
    assert np.array_equal(np.asarray(off.images[0], dtype=np.float32), plain)


def test_all_three_at_once(engine: Engine) -> None:
    slots = [{"file": name, "strength_model": 0.3, "strength_clip": 0.3} for name in EXPECTED]
    result = engine.run(recipe(*slots), save=False)
    assert sum("layers matched" in note for note in result.report.notes) == 3
    words = "demo skin texture, demo film look, demo freckles, sun-kissed, a portrait"
    assert f"Prompt as encoded: {words}" in result.report.notes


def test_tiny_without_models_uses_the_demo_folder(tmp_path: Path) -> None:
    args = app.parse_args(["--tiny", "--data", str(tmp_path / "data")])
    folder = app.models_dir_for(args)
    assert folder == tmp_path / "data" / "demo-models"
    assert sorted(p.name for p in (folder / "loras").iterdir()) == sorted(EXPECTED)


def test_a_models_folder_or_real_weights_get_no_demo_files(tmp_path: Path) -> None:
    data = ["--data", str(tmp_path / "data")]
    mine = tmp_path / "mine"
    assert app.models_dir_for(app.parse_args(["--tiny", "--models", str(mine), *data])) == mine
    assert app.models_dir_for(app.parse_args(["--models", str(mine), *data])) == mine
    assert app.models_dir_for(app.parse_args(data)) is None
    assert not (tmp_path / "data").exists()
