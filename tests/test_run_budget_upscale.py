"""The run budget counts the Upscale passes: the model upscale, every redraw and seam-fix job
at its processing size, the upscaled image's memory, only the stages about to run, and the
changes that make an upscale fit."""

from __future__ import annotations

import dataclasses
import json

import pytest

from engine.budget import GB, RunBudget, decode_cost, flux_flops, flux_pass
from engine.budget_upscale import (
    IMAGE_BYTES_PER_PIXEL,
    MODEL_UPSCALE_SECONDS,
    upscale_input_size,
    upscale_passes,
    upscale_variants,
)
from engine.recipe import Recipe
from engine.recipe_json import recipe_from_json
from engine.run_guard import FINISHING_STAGES, HEAVY_STAGES, OverBudget, all_variants
from engine.stage_list import build_stages
from engine.upscale.passes import UPSCALE_STAGES
from tests.test_run_budget import FLUX, H200, tiny

FIRST = frozenset({"first_upscale", "first_tiles", "first_seams"})


def upscaled(first: dict | None = None, final: dict | None = None, **sections) -> Recipe:
    """A 1024² render with Upscale 1 on (12 steps at 0.3, as bench/upscale.py runs it)."""
    passes = {"first": {"steps": 12, "denoise": 0.3, **(first or {})}}
    if final is not None:
        passes["final"] = {"enabled": True, **final}
    document = {"upscale": {"enabled": True, **passes}, **sections}
    return recipe_from_json(json.dumps(document))


def by_label(parts) -> dict:
    return {p.what: p for p in parts}


def one_eval(width: int, height: int) -> float:
    return flux_flops((width // 16) * (height // 16) + 512, FLUX)


def test_a_2x_upscale_of_1024_with_1024_tiles_runs_4_redraw_jobs_at_1056():
    parts = by_label(upscale_passes(upscaled(), None, FLUX, H200))
    tiles = parts["Upscale 1 tiles 4 × 1056×1056"]  # round((1024 + 32) / 8)·8
    assert tiles.stage == "first_tiles"
    assert tiles.seconds == pytest.approx(4 * 12 * one_eval(1056, 1056) / 7.0e14)
    image = 2048 * 2048 * IMAGE_BYTES_PER_PIXEL / GB  # the upscaled image held beside each job
    activations = flux_pass("first_tiles", 1056, 1056, 1, 12, FLUX, H200).gb
    assert tiles.gb == pytest.approx(activations + image)
    coded = parts["Upscale 1 tiles encode + decode 4 × 1056×1056"]
    decode = decode_cost(1056, 1056, 1, FLUX, H200, tiled=False)
    assert coded.seconds == pytest.approx(4 * 2 * decode.seconds)
    assert coded.gb == pytest.approx(decode.gb + image)
    assert not any(p.stage == "first_seams" for p in parts.values())  # seam fix off by default
    assert all(p.flops == 0 for p in parts.values())  # stage times must not calibrate the device


def test_a_processing_size_off_the_16_px_grid_samples_padded_up_to_it():
    recipe = upscaled({"tile_width": 512, "tile_height": 512, "tile_padding": 24})
    parts = by_label(upscale_passes(recipe, frozenset({"first_tiles"}), FLUX, H200))
    tiles = parts["Upscale 1 tiles 16 × 536×536"]  # 536 = 33.5 × 16: sampled at 544²
    assert tiles.seconds == pytest.approx(16 * 12 * one_eval(544, 544) / 7.0e14)


def test_the_model_upscale_is_a_fixed_part_and_lanczos_alone_costs_no_time():
    with_model = by_label(upscale_passes(upscaled({"model": "4x.pth"}), None, FLUX, H200))
    model = with_model["Upscale 1 model ×4 1024×1024 → 2048×2048"]
    assert model.stage == "first_upscale" and model.seconds == MODEL_UPSCALE_SECONDS
    plain = by_label(upscale_passes(upscaled(), None, FLUX, H200))
    lanczos = plain["Upscale 1 LANCZOS 1024×1024 → 2048×2048"]
    assert lanczos.seconds == 0
    assert lanczos.gb == pytest.approx(2048 * 2048 * IMAGE_BYTES_PER_PIXEL / GB)
    assert model.gb > lanczos.gb  # the 4× output in fp32 before the resize


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("half_tile", {"Upscale 1 seams 4 × 1024×1024": 4}),  # rows(cols−1) + (rows−1)cols
        ("half_tile_intersections", {"Upscale 1 seams 5 × 1024×1024": 5}),  # + 1 corner
        # one band per interior tile line, band + 2·padding wide over the whole canvas
        ("band_pass", {"Upscale 1 seams 1 × 96×2048": 1, "Upscale 1 seams 1 × 2048×96": 1}),
    ],
)
def test_the_seam_fix_adds_its_jobs_at_their_processing_size(mode, expected):
    parts = upscale_passes(upscaled({"seam_fix": mode}), frozenset({"first_seams"}), FLUX, H200)
    sampled = {p.what: p for p in parts if "encode" not in p.what}
    assert list(sampled) == list(expected)
    for label, jobs in expected.items():
        width, height = (int(v) for v in label.rsplit(" ", 1)[1].split("×"))
        seconds = jobs * 12 * one_eval(width, height) / 7.0e14
        assert sampled[label].seconds == pytest.approx(seconds)
        assert sampled[label].stage == "first_seams"


def test_seams_sample_at_their_own_denoise_when_set_and_a_zero_denoise_samples_nothing():
    off = upscaled({"denoise": 0.0, "seam_fix": "half_tile"})
    parts = by_label(upscale_passes(off, None, FLUX, H200))
    assert parts["Upscale 1 tiles 4 × 1056×1056"].seconds == 0
    assert parts["Upscale 1 seams 4 × 1024×1024"].seconds == 0
    own = upscaled({"denoise": 0.0, "seam_fix": "half_tile", "seam_fix_denoise": 0.5})
    assert by_label(upscale_passes(own, None, FLUX, H200))["Upscale 1 seams 4 × 1024×1024"].seconds


def test_each_pass_starts_from_the_image_the_stages_before_it_left():
    recipe = upscaled(final={"upscale_by": 1.5}, prompt={"width": 832, "height": 1216})
    assert upscale_input_size(recipe, "first") == (832, 1216)
    assert upscale_input_size(recipe, "final") == (1664, 2432)  # round(side·2 / 8)·8
    latent = upscaled(final={}, latent={"enabled": True, "upscale": 1.25})
    assert upscale_input_size(latent, "first") == (1280, 1280)
    assert upscale_input_size(latent, "final") == (2560, 2560)
    assert upscale_input_size(_first_off(latent), "final") == (1280, 1280)
    photo = upscaled(source={"kind": "image"}, latent={"enabled": True})
    assert upscale_input_size(photo, "first") == (1024, 1024)  # no latent pass on a photo


def test_only_the_pending_stages_of_the_active_passes_are_counted():
    recipe = upscaled({"model": "4x.pth", "seam_fix": "half_tile"}, final={"steps": 15})
    every = upscale_passes(recipe, None, FLUX, H200)
    assert {p.stage for p in every} == set(UPSCALE_STAGES) - {"final_seams"}  # final: no seams
    final_tiles = upscale_passes(recipe, frozenset({"final_tiles"}), FLUX, H200)
    assert {p.stage for p in final_tiles} == {"final_tiles"}
    assert final_tiles[0].what == "Upscale final tiles 4 × 1056×1056"  # on Upscale 1's 2048²
    assert upscale_passes(recipe, frozenset({"refine_face"}), FLUX, H200) == []
    assert upscale_passes(_first_off(recipe), FIRST, FLUX, H200) == []
    off = dataclasses.replace(recipe, upscale=dataclasses.replace(recipe.upscale, enabled=False))
    assert upscale_passes(off, None, FLUX, H200) == []


def test_true_cfg_two_evaluation_samplers_and_the_batch_multiply_the_jobs():
    plain = upscale_passes(upscaled(), frozenset({"first_tiles"}), FLUX, H200)[0]
    heavy = upscaled({"sampler": "heun"}, settings={"cfg": 3.0}, prompt={"batch_size": 2})
    doubled = by_label(upscale_passes(heavy, frozenset({"first_tiles"}), FLUX, H200))
    tiles = doubled["Upscale 1 tiles 8 × 1056×1056"]
    assert tiles.seconds == pytest.approx(2 * 2 * 2 * plain.seconds)


def test_the_six_stages_are_heavy_finishing_stages():
    assert set(UPSCALE_STAGES) == {
        f"{p}_{k}" for p in ("first", "final") for k in ("upscale", "tiles", "seams")
    }
    assert set(UPSCALE_STAGES) <= set(FINISHING_STAGES) <= set(HEAVY_STAGES)


def test_variants_lower_one_upscale_cost_each():
    recipe = upscaled(
        {"seam_fix": "half_tile", "steps": 30, "upscale_by": 4.0}, final={"tile_width": 512}
    )
    phrases = dict(upscale_variants(recipe))
    assert list(phrases) == [
        "Upscale 1 seam fix off",
        "Upscale 1 15 steps",
        "Upscale 1 ×4 → ×2",
        "Upscale 1 tiles 1024×1024 → 768×768",
        "Upscale final tiles 512×1024 → 512×768",
        "Upscale final off",
        "Upscale 1 off",
    ]
    assert phrases["Upscale 1 seam fix off"].upscale.first.seam_fix == "none"
    assert phrases["Upscale final off"].upscale.active_passes() == ("first",)
    assert phrases["Upscale 1 off"].upscale.active_passes() == ("final",)
    assert [p for p, _ in all_variants(recipe)][-7:] == list(phrases)
    for phrase in ("Upscale 1 seam fix off", "Upscale 1 15 steps", "Upscale 1 ×4 → ×2"):
        cheaper = upscale_passes(phrases[phrase], None, FLUX, H200)
        whole = upscale_passes(recipe, None, FLUX, H200)
        assert sum(p.seconds for p in cheaper) < sum(p.seconds for p in whole)
    smaller = upscale_passes(phrases["Upscale 1 tiles 1024×1024 → 768×768"], FIRST, FLUX, H200)
    assert max(p.gb for p in smaller) < max(p.gb for p in upscale_passes(recipe, FIRST, FLUX, H200))


def test_an_upscale_over_the_memory_budget_is_refused_with_what_would_fit(tmp_path):
    engine = tiny(tmp_path)
    small = {"prompt": {"width": 128, "height": 128}, "settings": {"steps": 2}}
    tiles = {"steps": 2, "tile_width": 256, "tile_height": 256}
    recipe = upscaled({**tiles, "upscale_by": 4.0}, **small)
    fits = engine.estimate(upscaled(tiles, **small)).peak_gb
    assert engine.estimate(recipe).peak_gb > fits  # a 512² image instead of 256² (one tile)
    engine.guard.budget = RunBudget(max_gb=fits * 1.01)
    with pytest.raises(OverBudget) as refused:
        engine.run(recipe, save=False)
    message = str(refused.value)
    assert "memory" in message and "Upscale 1 LANCZOS 128×128 → 512×512" in message
    assert "Upscale 1 tiles 4 × 288×288" in message  # round((256 + 32) / 8)·8
    assert "It would fit with: Upscale 1 ×4 → ×2" in message and "Upscale 1 off" in message
    ran = engine.run(upscaled(tiles, **small), save=False).report.ran_names
    assert {"first_upscale", "first_tiles"} <= set(ran)
    assert set(UPSCALE_STAGES) <= {stage.name for stage in build_stages()}  # the same names


def _first_off(recipe: Recipe) -> Recipe:
    first = dataclasses.replace(recipe.upscale.first, enabled=False)
    return dataclasses.replace(recipe, upscale=dataclasses.replace(recipe.upscale, first=first))
