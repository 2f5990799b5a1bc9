"""A quiet console: the noise diffusers and transformers print on every load is filtered once
at start (studio and CLI), while real warnings and errors still reach the log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.models.tiny_export import save_tiny_comfy

ROOT = Path(__file__).resolve().parent.parent
NOISE = ("should be kept in float32", "Loading weights")

# Loads the tiny files in bf16 twice, before and after quiet_console(), then logs real
# problems through the same library loggers.
SCRIPT = r"""
import logging, sys, warnings
from pathlib import Path

import torch

from engine.models import loaders
from engine.models.manager import ModelConfig, ModelManager
from engine.recipe import ModelParams

config = ModelConfig(models_dir=Path(sys.argv[1]), device="cpu")
files = ModelManager(config).resolve(ModelParams())
PARTS = {"transformer": loaders.load_transformer, "vae": loaders.load_vae,
         "clip": loaders.load_clip, "t5": loaders.load_t5}

def load_bf16():
    for part, load in PARTS.items():
        load(files.spec(part), torch.bfloat16)

load_bf16()
print("=== quiet from here", flush=True)
from engine.quiet_console import quiet_console
quiet_console()
quiet_console()  # a second call changes nothing
load_bf16()
logging.getLogger("diffusers.models.modeling_utils").warning("a real diffusers warning")
logging.getLogger("transformers.modeling_utils").error("a real transformers error")
from huggingface_hub.utils import are_progress_bars_disabled
print("download bars off:", are_progress_bars_disabled(), flush=True)
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("quiet") / "ComfyUI" / "models"
    save_tiny_comfy(models)
    return models


def run(args: list[str], cwd: Path) -> str:
    """stdout and stderr of a fresh Python, interleaved as a console shows them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout
    return done.stdout


def test_a_bf16_load_prints_no_library_noise_but_real_problems_still_log(models: Path):
    out = run(["-c", SCRIPT, str(models)], ROOT)
    noisy, quiet = out.split("=== quiet from here")
    for line in NOISE:  # the script does print them without the filter...
        assert line in noisy, noisy
        assert line not in quiet, quiet  # ...and none with it
    assert "a real diffusers warning" in quiet and "a real transformers error" in quiet
    assert "download bars off: False" in quiet  # a first download still shows progress


def test_the_cli_filters_the_noise_at_start(models: Path, tmp_path: Path) -> None:
    """`python -m engine render` loads CLIP and T5 from the files: no loading bars."""
    recipe = tmp_path / "r.json"
    small = {"prompt": "a portrait", "width": 64, "height": 64}
    recipe.write_text(json.dumps({"prompt": small, "settings": {"steps": 1, "seed": 1}}))
    out = run(
        [
            "-m", "engine", "render", str(recipe), "--models", str(models), "--device", "cpu",
            "--no-save", "--outputs", str(tmp_path / "o"), "--data", str(tmp_path / "d"),
        ],
        tmp_path,
    )  # fmt: skip
    assert '"ok": true' in out, out
    assert not any(line in out for line in NOISE), out
