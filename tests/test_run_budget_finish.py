"""The run budget counts the finishing stages: each Refine region's expected segments and
the chin pass, and only those about to run."""

from __future__ import annotations

import dataclasses
import json

import pytest

from engine.budget import DeviceProfile, FluxShape, RunBudget, flux_flops
from engine.budget_finish import (
    detailer_side,
    finishing_passes,
    finishing_variants,
)
from engine.recipe import Recipe
from engine.recipe_json import recipe_from_json
from engine.recipe_refine import DetailerParams
from engine.run_guard import OverBudget
from photos import astronaut
from photos import png_bytes as png
from tests.test_run_budget import tiny

FLUX = FluxShape(params=11.9e9, hidden=3072, heads=24, blocks=57, text_tokens=512)
H200 = DeviceProfile("H200", 133.0, 7.0e14)


def finishing(source: dict | None = None, **sections: dict) -> Recipe:
    document = {"refine": sections, **({"source": source} if source else {})}
    return recipe_from_json(json.dumps(document))


def test_a_segment_renders_at_guide_size_times_crop_factor_capped_by_max_size():
    assert detailer_side(DetailerParams()) == 1024  # 512 × 3.0 = 1536, capped at 1024
    assert detailer_side(DetailerParams(guide_size=256, crop_factor=1.5)) == 384
    assert detailer_side(DetailerParams(guide_size_for="crop_region")) == 512
    assert detailer_side(DetailerParams(guide_size=210, crop_factor=1.0, max_size=4096)) == 208


def test_each_region_costs_its_expected_segments_steps_and_cycles():
    recipe = finishing(
        face={"enabled": True, "steps": 20},
        hands={"enabled": True, "steps": 10, "cycles": 2, "guide_size": 256},
        chin={"enabled": True, "steps": 8, "size": 768},
    )
    parts = finishing_passes(recipe, None, FLUX, H200)
    sampled = [p for p in parts if "encode" not in p.what]
    labels = [p.what for p in sampled]
    assert labels == [
        "face 1 detailer 1024×1024",
        "hands 1 detailer 768×768",
        "hands 2 detailer 768×768",
        "chin pass 768×768",
    ]
    one_eval = {side: flux_flops((side // 16) ** 2 + 512, FLUX) for side in (1024, 768)}
    assert sampled[0].seconds == pytest.approx(20 * one_eval[1024] / 7.0e14)
    assert sampled[1].seconds == pytest.approx(10 * 2 * one_eval[768] / 7.0e14)
    assert sampled[3].seconds == pytest.approx(8 * one_eval[768] / 7.0e14)
    assert all(p.flops == 0 for p in parts)  # detection time must not calibrate the device
    assert len(parts) == 2 * 4  # every segment also encodes and decodes


def test_only_the_pending_stages_are_counted_and_true_cfg_doubles_them():
    recipe = finishing(face={"enabled": True}, hands={"enabled": True})
    hands_only = finishing_passes(recipe, frozenset({"refine_hands"}), FLUX, H200)
    assert {p.stage for p in hands_only} == {"refine_hands"}
    cfg = dataclasses.replace(recipe, settings=dataclasses.replace(recipe.settings, cfg=3.0))
    doubled = finishing_passes(cfg, frozenset({"refine_hands"}), FLUX, H200)
    assert doubled[0].seconds == pytest.approx(2 * hands_only[0].seconds)
    off = finishing(face={"enabled": True, "denoise": 0.0})
    assert finishing_passes(off, frozenset({"refine_face"}), FLUX, H200)[0].seconds == 0


def test_variants_switch_one_finishing_pass_off_each():
    recipe = finishing(face={"enabled": True}, eyes={"enabled": True}, chin={"enabled": True})
    phrases = dict(finishing_variants(recipe))
    assert list(phrases) == ["face detailer off", "eyes detailer off", "chin pass off"]
    assert phrases["eyes detailer off"].refine.active_regions() == ("face",)
    assert phrases["chin pass off"].refine.chin.enabled is False


def test_a_refine_over_the_budget_is_refused_with_the_region_to_switch_off(tmp_path):
    engine = tiny(tmp_path)
    photo = {"kind": "image", "image": engine.store_image(png(astronaut()))}
    recipe = finishing(photo, face={"enabled": True, "steps": 30})
    whole = engine.estimate(recipe)
    assert any(p.stage == "refine_face" for p in whole.parts)
    face = sum(p.seconds for p in whole.parts if p.stage == "refine_face")
    engine.guard.budget = RunBudget(max_seconds=whole.seconds - face / 2)
    with pytest.raises(OverBudget) as refused:
        engine.run(recipe, save=False)
    message = str(refused.value)
    assert "face 1 detailer 1024×1024" in message
    assert "It would fit with: face detailer off" in message


def test_pulid_and_the_pose_controlnet_add_their_share_of_the_base_pass():
    from engine.budget_identity import CA_PARAMETERS, identity_parts

    document = {
        "settings": {"steps": 20},
        "identity": {
            "references": ["sha256:" + "a" * 64],
            "pulid": {"enabled": True, "start": 0.0, "end": 0.5},
            "pose": {"enabled": True, "image": "sha256:" + "b" * 64, "start": 0.0, "end": 1.0},
        },
    }
    parts = {p.what: p for p in identity_parts(recipe_from_json(json.dumps(document)), FLUX, H200)}
    tokens = 64 * 64
    controlnet = 20 * (15 / 57) * flux_flops(tokens + 512, FLUX)
    assert parts["pose ControlNet"].seconds == pytest.approx(controlnet / 7.0e14)
    pulid = 20 * 0.5 * 20 * 2 * CA_PARAMETERS * tokens
    assert parts["PuLID"].seconds == pytest.approx(pulid / 7.0e14)
    assert all(p.stage == "base" and p.flops == 0 for p in parts.values())
    assert identity_parts(Recipe(), FLUX, H200) == []
