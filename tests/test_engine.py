"""End-to-end renders on tiny random models: determinism, re-runs, bad input, the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.engine import Engine, EngineConfig
from engine.errors import InputError, ModelNotFoundError
from engine.models.manager import ModelConfig
from engine.recipe import Recipe
from engine.recipe_json import recipe_to_json, set_path
from engine.runtypes import CancelToken

ROOT = Path(__file__).resolve().parent.parent


def small(recipe: Recipe | None = None, **paths) -> Recipe:
    recipe = recipe or Recipe()
    for path, value in {
        "prompt.width": 64,
        "prompt.height": 64,
        "settings.steps": 3,
        **paths,
    }.items():
        recipe = set_path(recipe, path, value)
    return recipe


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    return Engine(
        EngineConfig(
            models=ModelConfig(tiny=True, device="cpu"),
            outputs_dir=root / "out",
            data_dir=root / "data",
        )
    )


def pixels(result):
    return [im.tobytes() for im in result.images]


def test_tiny_render_is_bit_identical_for_a_seed_and_differs_for_another(tmp_path):
    config = ModelConfig(tiny=True, device="cpu")
    first = Engine(EngineConfig(models=config, outputs_dir=tmp_path / "a", data_dir=tmp_path))
    second = Engine(EngineConfig(models=config, outputs_dir=tmp_path / "b", data_dir=tmp_path))
    recipe = small(**{"settings.seed": 11})
    a, b = first.run(recipe), second.run(recipe)  # separate engines: nothing shared
    assert pixels(a) == pixels(b)
    assert pixels(first.run(small(**{"settings.seed": 12}))) != pixels(a)


def test_reruns_follow_the_recipe_change(engine):
    recipe = small(**{"settings.seed": 5, "prompt.prompt": "portrait, rim light"})
    first = engine.run(recipe, save=False)
    assert first.report.ran_names == ["text", "base", "decode", "color"]
    assert first.report.counters["model calls"] == 3
    regrade = engine.run(set_path(recipe, "color.tone.contrast", 1.4), save=False)
    assert regrade.report.ran_names == ["color"]
    assert regrade.report.line().startswith("ran: color ")
    assert "cached: text, base, decode" in regrade.report.line()
    reseed = engine.run(set_path(recipe, "settings.seed", 6), save=False)
    assert reseed.report.ran_names == ["base", "decode", "color"]
    assert engine.run(recipe, save=False).report.ran_names == []


def test_batch_images_use_consecutive_seeds(engine):
    batch = engine.run(small(**{"settings.seed": 20, "prompt.batch_size": 3}), save=False)
    assert len(batch.images) == 3 and batch.images[0].size == (64, 64)
    single = engine.run(small(**{"settings.seed": 22}), save=False)
    assert batch.images[2].tobytes() == single.images[0].tobytes()


def test_artifacts_for_ab_and_saved_files(engine):
    result = engine.run(small(**{"settings.seed": 31}))
    assert set(result.artifacts) >= {"decode", "color"}
    assert result.artifacts["color"][0].tobytes() == result.images[0].tobytes()
    assert result.saved and result.saved[0].exists()
    assert engine.read_recipe_file(result.saved[0]) == result.recipe


def test_size_is_rounded_to_16_with_a_note(engine):
    result = engine.run(small(**{"prompt.width": 70, "prompt.height": 100}), save=False)
    assert result.images[0].size == (64, 96)
    assert any("70×100 rounded to 64×96" in note for note in result.report.notes)


def test_colour_grades_an_uploaded_image_without_diffusion(tmp_path):
    import io

    from PIL import Image

    engine = Engine(
        EngineConfig(
            models=ModelConfig(models_dir=tmp_path / "none"),
            outputs_dir=tmp_path / "out",
            data_dir=tmp_path,
        )
    )
    assert not engine.has_diffusion()
    buffer = io.BytesIO()
    Image.effect_noise((40, 30), 30).convert("RGB").save(buffer, format="PNG")
    digest = engine.store_image(buffer.getvalue())
    recipe = set_path(set_path(Recipe(), "source.kind", "image"), "source.image", digest)
    result = engine.run(recipe, save=False)
    assert result.report.ran_names == ["image", "color"]
    assert result.images[0].size == (40, 30)
    assert engine.run(
        set_path(recipe, "color.tone.contrast", 1.5), save=False
    ).report.ran_names == ["color"]


def test_missing_models_name_the_places_searched(tmp_path):
    engine = Engine(
        EngineConfig(
            models=ModelConfig(models_dir=tmp_path / "models"),
            outputs_dir=tmp_path / "out",
            data_dir=tmp_path,
        )
    )
    with pytest.raises(ModelNotFoundError) as info:
        engine.run(small())
    assert str(tmp_path / "models") in str(info.value)


def test_cancel_stops_a_render(engine):
    token = CancelToken()
    calls = []

    def progress(event):
        calls.append(event)
        if event.stage == "base" and event.step == 1:
            token.cancel()

    from engine.errors import Cancelled

    with pytest.raises(Cancelled):
        engine.run(small(**{"settings.seed": 99}), progress=progress, cancel=token, save=False)
    assert [c.step for c in calls if c.stage == "base"][:2] == [0, 1]
    assert engine.run(small(**{"settings.seed": 98}), save=False).images  # still serving


def write(path: Path, recipe: Recipe) -> Path:
    path.write_text(recipe_to_json(recipe))
    return path


def test_cli_renders_several_recipes_sharing_the_cache(tmp_path):
    a = small(**{"settings.seed": 3})
    files = [
        write(tmp_path / "a.json", a),
        write(tmp_path / "b_colour.json", set_path(a, "color.exposure.exposure", 16)),
        write(
            tmp_path / "c_seed.json",
            set_path(set_path(a, "color.exposure.exposure", 16), "settings.seed", 4),
        ),
        write(
            tmp_path / "d_same.json",
            set_path(set_path(a, "color.exposure.exposure", 16), "settings.seed", 4),
        ),
    ]
    bad_type = tmp_path / "e_bad.json"
    bad_type.write_text('{"settings": {"steps": "ten"}}')
    luts = tmp_path / "luts"
    luts.mkdir()
    (luts / "broken.cube").write_text("LUT_3D_SIZE 2\n0 0 0\n1 x 0\n")
    broken_lut = write(
        tmp_path / "f_lut.json",
        set_path(set_path(a, "color.lut.enabled", True), "color.lut.file", "broken.cube"),
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "render",
            "--tiny",
            "--device",
            "cpu",
            "--luts",
            str(luts),
            "--outputs",
            str(tmp_path / "out"),
            "--data",
            str(tmp_path / "data"),
            *map(str, files),
            str(bad_type),
            str(broken_lut),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    ran = [[r["stage"] for r in line["report"]["ran"]] for line in lines[:4]]
    assert ran == [["text", "base", "decode", "color"], ["color"], ["base", "decode", "color"], []]
    assert "settings.steps" in lines[4]["error"] and not lines[4]["ok"]
    assert "broken.cube" in lines[5]["error"]
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == 4


def test_cli_missing_model_message(tmp_path):
    recipe = write(tmp_path / "r.json", small())
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "render",
            "--models",
            str(tmp_path / "nowhere"),
            "--outputs",
            str(tmp_path / "out"),
            str(recipe),
        ],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = json.loads(out.stdout)
    assert not line["ok"] and "nowhere" in line["error"] and out.returncode == 1


def test_errors_leave_earlier_outputs_alone(engine):
    good = engine.run(small(**{"settings.seed": 41}))
    before = good.saved[0].read_bytes()
    missing_lut = set_path(small(), "color.lut.enabled", True)
    missing_lut = set_path(missing_lut, "color.lut.file", "no.cube")
    with pytest.raises(InputError, match="no.cube"):
        engine.run(missing_lut)
    assert good.saved[0].read_bytes() == before


def test_uploads_are_checked(engine):
    from bad_inputs import corrupt_png, png_claiming

    for data in (corrupt_png(), png_claiming(50000, 50000)):
        with pytest.raises(InputError):
            engine.store_image(data)
