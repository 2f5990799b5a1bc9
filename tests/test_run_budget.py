"""The run budget: estimates from the recipe, refusal with what to lower, out-of-memory
recovery, and the estimate's formulas."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from engine.budget import (
    DeviceProfile,
    FluxShape,
    RunBudget,
    Workload,
    cheaper_variants,
    estimate,
    flux_flops,
)
from engine.engine import Engine, EngineConfig
from engine.errors import StudioError
from engine.models.manager import ModelConfig
from engine.recipe import Recipe
from engine.recipe_json import set_path
from engine.run_guard import OutOfMemory, OverBudget

FLUX = FluxShape(params=11.9e9, hidden=3072, heads=24, blocks=57, text_tokens=512)
H200 = DeviceProfile("H200", 133.0, 7.0e14)


def tiny(tmp_path, budget: RunBudget | None = None) -> Engine:
    budget = budget or RunBudget()
    models = ModelConfig(tiny=True, device="cpu")
    config = EngineConfig(
        models=models, outputs_dir=tmp_path / "out", data_dir=tmp_path / "data", budget=budget
    )
    return Engine(config)


def small(**paths) -> Recipe:
    recipe = Recipe()
    defaults = {"prompt.width": 128, "prompt.height": 128, "settings.steps": 2}
    for path, value in {**defaults, **paths}.items():
        recipe = set_path(recipe, path, value)
    return recipe


def test_flux_flops_formula():
    tokens = 4096 + 512
    expected = 2 * 11.9e9 * tokens + 4 * tokens**2 * 3072 * 57
    assert flux_flops(tokens, FLUX) == pytest.approx(expected)


def test_estimate_counts_steps_cfg_batch_and_two_eval_samplers():
    one = estimate(small(), FLUX, H200, 12.0, Workload(latent=False, decode=False))
    tokens = (128 // 16) ** 2 + 512
    assert one.parts[0].flops == pytest.approx(2 * flux_flops(tokens, FLUX))
    assert one.seconds == pytest.approx(one.parts[0].flops / 7.0e14)
    heavy = small(**{"settings.sampler": "heun", "settings.cfg": 3.0, "prompt.batch_size": 4})
    four = estimate(heavy, FLUX, H200, 12.0, Workload(latent=False, decode=False))
    assert four.parts[0].flops == pytest.approx(one.parts[0].flops * 2 * 2 * 4)


def test_regions_add_their_text_tokens_to_the_base_pass():
    work = Workload(latent=False, decode=False)
    regions = {"regions.enabled": True, "regions.text_tokens": 128}
    two = estimate(small(**regions), FLUX, H200, 12.0, work)
    tokens = (128 // 16) ** 2 + 512 + 2 * 128
    assert two.parts[0].flops == pytest.approx(2 * flux_flops(tokens, FLUX))
    full = estimate(small(**{"regions.enabled": True}), FLUX, H200, 12.0, work)
    assert full.parts[0].flops == pytest.approx(2 * flux_flops(64 + 3 * 512, FLUX))


def test_latent_pass_runs_at_the_upscaled_size_with_its_own_steps():
    recipe = small(**{"latent.enabled": True, "latent.upscale": 2.0, "latent.speed_accuracy": 0.5})
    found = estimate(recipe, FLUX, H200, 12.0, Workload(base=False, decode=False))
    (part,) = found.parts
    assert part.what.startswith("latent pass 256×256")
    assert part.flops == pytest.approx(28 * flux_flops(16 * 16 + 512, FLUX))  # 16 + 24·0.5


def test_peak_is_weights_plus_the_largest_pass_and_tiling_caps_the_decode():
    recipe = small(**{"prompt.width": 4096, "prompt.height": 4096, "prompt.batch_size": 4})
    whole = estimate(recipe, FLUX, H200, 12.0)
    tiled = estimate(recipe, FLUX, H200, 12.0, Workload(tiled_vae=True))
    assert whole.peak_gb == pytest.approx(12.0 + max(p.gb for p in whole.parts))
    decode = whole.parts[-1]
    assert decode.gb > 4 * 4096**2 * 2300 / 1024**3  # the untiled decode holds every pixel
    assert tiled.parts[-1].gb < decode.gb / 10


def test_quadratic_attention_adds_the_score_matrices():
    plain = estimate(small(), FLUX, H200, 0.0, Workload(latent=False, decode=False))
    math = dataclasses.replace(H200, quadratic_attention=True)
    quad = estimate(small(), FLUX, math, 0.0, Workload(latent=False, decode=False))
    tokens = 64 + 512
    assert quad.peak_gb - plain.peak_gb == pytest.approx(24 * tokens**2 * 4 / 1024**3)


def test_cheaper_variants_lower_one_thing_each():
    recipe = small(**{"prompt.batch_size": 4, "settings.steps": 150, "latent.enabled": True})
    phrases = dict(cheaper_variants(recipe))
    assert phrases["batch 1"].prompt.batch_size == 1
    assert phrases["30 steps"].settings.steps == 30
    assert phrases["latent pass off"].latent.enabled is False


def test_over_budget_is_refused_with_the_estimate_and_what_to_lower(tmp_path):
    engine = tiny(tmp_path)
    fits = engine.estimate(small(**{"prompt.width": 1024, "prompt.height": 1024}))
    budget = RunBudget(max_gb=fits.peak_gb * 1.2)
    engine = tiny(tmp_path, budget)
    big = small(**{"prompt.width": 4096, "prompt.height": 4096, "prompt.batch_size": 4})
    with pytest.raises(OverBudget) as refused:
        engine.run(big, save=False)
    message = str(refused.value)
    assert "over the studio's run budget" in message and "memory" in message
    assert "peak on CPU" in message and "--max-render-gb" in message
    assert "It would fit with: batch 1 + size 1024×1024" in message
    result = engine.run(small(), save=False)  # the engine goes on
    assert "base" in result.report.ran_names
    assert any(n.startswith("Estimated before the run") for n in result.report.notes)


def test_time_budget_refuses_and_a_colour_change_of_a_cached_render_is_never_refused(tmp_path):
    engine = tiny(tmp_path)
    engine.run(small(), save=False)
    engine.guard.budget = RunBudget(max_seconds=1e-9, max_gb=engine.guard.budget.max_gb)
    regrade = set_path(small(), "color.tone.contrast", 1.2)
    result = engine.run(regrade, save=False)
    assert result.report.ran_names == ["color"]
    with pytest.raises(OverBudget, match="time"):
        engine.run(small(**{"settings.steps": 3}), save=False)


def test_the_estimate_is_the_first_progress_event_of_a_render(tmp_path):
    engine = tiny(tmp_path)
    events = []
    engine.run(small(), save=False, progress=events.append)
    assert events[0].stage == "estimate" and "peak on CPU" in events[0].message
    assert [e.stage for e in events[1:]].count("estimate") == 0
    events.clear()
    engine.run(set_path(small(), "color.tone.contrast", 1.3), save=False, progress=events.append)
    assert all(e.stage != "estimate" for e in events)  # a re-grade has nothing to estimate


def test_the_device_speed_follows_measured_renders(tmp_path):
    engine = tiny(tmp_path)
    engine.run(small(**{"settings.steps": 1}), save=False)  # loads the models: not measured
    assert engine.guard.profile().measured_runs == 0
    engine.run(small(**{"settings.seed": 5}), save=False)
    assert engine.guard.profile().measured_runs == 1
    ran = engine.run(small(**{"settings.seed": 6}), save=False)
    found = engine.estimate(small(**{"settings.seed": 7}))
    base_ms = dict(ran.report.ran)["base"]
    assert found.parts[0].seconds == pytest.approx(base_ms / 1000, rel=2.0)


def test_out_of_memory_frees_says_what_to_lower_and_the_next_render_works(tmp_path, monkeypatch):
    engine = tiny(tmp_path)
    stage = engine.graph.stages["base"]
    real = stage.run
    calls = {"n": 0}

    def fails_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(stage, "run", fails_once)
    recipe = small(**{"prompt.batch_size": 2})
    with pytest.raises(OutOfMemory) as failed:
        engine.run(recipe, save=False)
    message = str(failed.value)
    assert isinstance(failed.value, StudioError)
    assert "ran out of memory" in message and "Tried to allocate 40.00 GiB" in message
    assert "batch 1" in message and "--memory budget" in message
    result = engine.run(recipe, save=False)
    assert len(result.images) == 2


def test_cpu_allocator_failure_is_out_of_memory_too(tmp_path, monkeypatch):
    engine = tiny(tmp_path)

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 68719476736 bytes.")  # fmt: skip

    monkeypatch.setattr(engine.graph.stages["decode"], "run", no_memory)
    with pytest.raises(OutOfMemory, match="The machine ran out of memory"):
        engine.run(small(), save=False)


def test_other_runtime_errors_are_not_taken_for_out_of_memory(tmp_path, monkeypatch):
    engine = tiny(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(engine.graph.stages["decode"], "run", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        engine.run(small(), save=False)


def test_the_cli_refuses_a_recipe_over_its_budget_with_a_json_line(tmp_path, capsys):
    from engine.cli import main

    big = tmp_path / "big.json"
    big.write_text('{"prompt": {"width": 4096, "height": 4096, "batch_size": 4}}')
    flags = ["--tiny", "--device", "cpu", "--no-save", "--max-render-gb", "0.5"]
    folders = ["--outputs", str(tmp_path / "out"), "--data", str(tmp_path / "data")]
    assert main(["render", str(big), *flags, *folders]) == 1
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["ok"] is False and "over the studio's run budget" in line["error"]
    assert "memory" in line["error"] and "> 512 MB" in line["error"]
