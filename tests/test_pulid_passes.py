"""PuLID on the finishing passes (identity.pulid.finishing), on the tiny Flux with tiny random
PuLID and face models: the hooks act during the latent pass, the Refine detailer and chin
passes (on the base model and on FLUX.1 Fill) and the Upscale tile passes; the switch and the
weight re-run those stages (not the ID tokens, nor the base pass for the switch); an inert
PuLID (weight 0, an empty window) leaves them bit-identical; the window holds under the
first-block cache; and the run budget counts PuLID on each of those passes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from diffusers import FluxTransformer2DModel

from engine.flux.fbcache import FirstBlockCache
from engine.flux.latents import image_ids
from engine.flux.sigma_modifiers import percent_to_sigma
from engine.identity.pulid_networks import TINY_PULID, build_pulid_modules
from engine.identity.pulid_passes import PulidPass
from engine.identity.pulid_sampling import PulidSampling, pulid_applied
from engine.models.tiny import TINY_TRANSFORMER, seeded
from engine.recipe import FirstBlockCacheParams, Recipe
from engine.recipe_json import recipe_from_json
from photos import astronaut
from photos import png_bytes as png
from tests.conftest import fresh_tiny_engine

ON = {"enabled": True, "weight": 1.0, "start": 0.0, "end": 1.0}
# A 64² render, its latent pass at 64² with 16 steps under the first-block cache
# (speed_accuracy 0), and Upscale 1 ×2 in 64 px tiles padded to 80² jobs.
LATENT = {"enabled": True, "speed_accuracy": 0.0, "upscale": 1.0}
UPSCALE = {
    "enabled": True,
    "first": {"steps": 2, "tile_width": 64, "tile_height": 64, "tile_padding": 8},
}
FINISHING = ["latent", "decode", "first_upscale", "first_tiles", "identity_score"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return fresh_tiny_engine(tmp_path_factory.mktemp("pulid-passes"))


@pytest.fixture(scope="module")
def me(engine: Any) -> str:
    return engine.store_image(png(astronaut()))


@dataclass
class SeenPass:
    """One pass sampled with PuLID attached: its size, transformer and CA calls that acted."""

    size: str
    transformer: torch.nn.Module
    acted: int = 0


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[SeenPass]:
    """Every pass that samples with PuLID attached, in order."""
    seen: list[SeenPass] = []
    original = PulidPass.on

    @contextmanager
    def on(self: PulidPass, transformer: Any, sampling: Any) -> Iterator[Any]:
        record = SeenPass(f"{sampling.width}x{sampling.height}", transformer)
        seen.append(record)
        with original(self, transformer, sampling) as handle:
            add = handle.add_to_image

            def counted(index: int, image: torch.Tensor) -> torch.Tensor:
                record.acted += 1
                return add(index, image)

            handle.add_to_image = counted
            yield handle

    monkeypatch.setattr(PulidPass, "on", on)
    return seen


def generated(me: str, color: dict | None = None, **pulid: Any) -> Recipe:
    """A 64² render with the latent pass and Upscale 1, PuLID from the photo `me`."""
    document = {
        "prompt": {"width": 64, "height": 64},
        "settings": {"steps": 2},
        "latent": LATENT,
        "upscale": UPSCALE,
        "identity": {"references": [me], "pulid": {**ON, **pulid}},
        "color": color or {"enabled": False},
    }
    return recipe_from_json(json.dumps(document))


def hooks_left(transformer: torch.nn.Module) -> bool:
    blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    return bool(
        transformer._forward_pre_hooks
        or transformer.time_text_embed._forward_pre_hooks
        or any(block._forward_hooks for block in blocks)
    )


def test_finishing_passes_sample_with_pulid_and_the_switch_re_runs_only_them(
    engine: Any, me: str, passes: list[SeenPass]
) -> None:
    off = engine.run(generated(me, finishing=False), save=False)
    assert [p.size for p in passes] == ["64x64"]  # the base pass alone
    passes.clear()
    on = engine.run(generated(me, finishing=True), save=False)
    assert on.report.ran_names == FINISHING  # the base pass and the ID tokens stay cached
    assert {"text", "identity_embed", "base"} <= set(on.report.cached)
    # the latent pass (under the first-block cache), then the four 80² tile jobs
    assert [p.size for p in passes] == ["64x64"] + ["80x80"] * 4
    assert all(p.acted > 0 for p in passes)
    assert on.images[0].tobytes() != off.images[0].tobytes()
    assert not hooks_left(engine.models.flux(generated(me).model).transformer)
    passes.clear()
    graded = engine.run(generated(me, {"enabled": True}, finishing=True), save=False)
    assert graded.report.ran_names == ["color"] and passes == []
    again = engine.run(generated(me, finishing=False), save=False)
    assert again.report.ran_names == [] and again.images[0].tobytes() == off.images[0].tobytes()


def test_an_inert_pulid_leaves_the_finishing_passes_bit_identical(
    engine: Any, me: str, passes: list[SeenPass]
) -> None:
    without = engine.run(generated(me, finishing=False, start=1.0, end=1.0), save=False)
    passes.clear()
    closed = engine.run(generated(me, finishing=True, start=1.0, end=1.0), save=False)
    assert closed.report.ran_names == FINISHING
    assert len(passes) == 5 and all(p.acted == 0 for p in passes)  # attached, never acting
    assert closed.images[0].tobytes() == without.images[0].tobytes()
    plain = engine.run(generated(me, enabled=False), save=False)
    zero = engine.run(generated(me, finishing=True, weight=0.0), save=False)
    assert zero.images[0].tobytes() == plain.images[0].tobytes()


def test_with_finishing_off_the_finishing_passes_run_without_pulid(
    engine: Any, me: str, passes: list[SeenPass]
) -> None:
    engine.run(generated(me, finishing=False), save=False)
    passes.clear()
    recipe = generated(me, finishing=False)
    moved = recipe_from_json(json.dumps({"latent": {"denoise": 0.3}}), base=recipe)
    result = engine.run(moved, save=False)
    assert result.report.ran_names == FINISHING and passes == []


def refined(photo: str, me: str, stage: str, fill: bool, **pulid: Any) -> Recipe:
    """The uploaded photo through the face detailer (at most 256 px) or the chin pass (256 px
    on the short side): one at a time, as the tiny Flux leaves no face for the chin pass."""
    region = {"enabled": True, "steps": 2, "fill_model": fill}
    if stage == "refine_face":
        region |= {"crop_factor": 1.5, "guide_size": 192, "max_size": 256}
    else:
        region |= {"size": 256}
    document = {
        "source": {"kind": "image", "image": photo},
        "refine": {stage.removeprefix("refine_"): region, "identity": {"enabled": False}},
        "identity": {"references": [me], "pulid": {**ON, **pulid}},
        "color": {"enabled": False},
    }
    return recipe_from_json(json.dumps(document))


@pytest.mark.parametrize("fill", [False, True])
@pytest.mark.parametrize(
    ("stage", "size"), [("refine_face", "192x256"), ("refine_chin", "256x256")]
)
def test_the_refine_passes_sample_with_pulid_on_the_model_that_samples(
    engine: Any, me: str, passes: list[SeenPass], stage: str, size: str, fill: bool
) -> None:
    off = engine.run(refined(me, me, stage, fill, finishing=False), save=False)
    assert passes == []  # an upload: no base pass
    on = engine.run(refined(me, me, stage, fill, finishing=True), save=False)
    assert on.report.ran_names[-2:] == [stage, "identity_score"]
    assert on.report.detections[stage][0]  # the face was found
    assert [p.size for p in passes] == [size] and passes[0].acted > 0
    base = engine.models.flux(refined(me, me, stage, fill).model).transformer
    assert (passes[0].transformer is base) != fill  # FLUX.1 Fill when asked
    assert not hooks_left(passes[0].transformer)
    assert on.images[0].tobytes() != off.images[0].tobytes()
    lighter = engine.run(refined(me, me, stage, fill, finishing=True, weight=0.5), save=False)
    assert lighter.report.ran_names == [stage, "identity_score"]  # the ID tokens stay cached


# The window under the first-block cache ------------------------------------------------------


def test_the_window_holds_under_the_first_block_cache() -> None:
    """The cache runs the blocks without the transformer's forward; PuLID's window still
    reads each call's sigma, so a forced miss equals the plain call with PuLID."""
    with seeded(7):
        transformer = FluxTransformer2DModel(
            **{**TINY_TRANSFORMER, "num_layers": 2, "num_single_layers": 2}
        ).eval()
    modules = build_pulid_modules(TINY_PULID.with_blocks(2, 2), seed=3)
    gen = torch.Generator().manual_seed(0)
    id_tokens = torch.randn(1, 4, 16, generator=gen)
    inputs = {
        "hidden_states": torch.randn(1, 16, 64, generator=gen),
        "guidance": torch.full((1,), 3.5),
        "pooled_projections": torch.randn(1, 32, generator=gen),
        "encoder_hidden_states": torch.randn(1, 8, 32, generator=gen),
        "txt_ids": torch.zeros(8, 3),
        "img_ids": image_ids(64, 64, torch.device("cpu")),
    }
    mu, params = 1.15, PulidSampling(1.0, 0.3, 0.7, "tiny")
    high, low = percent_to_sigma(0.3, mu), percent_to_sigma(0.7, mu)
    sigmas = (1.0, (high + low) / 2, low / 2)  # before, inside and after the window

    def call(model: Any, sigma: float) -> torch.Tensor:
        with torch.inference_mode():
            return model(**inputs, timestep=torch.tensor([sigma]), return_dict=False)[0]

    plain = [call(transformer, sigma) for sigma in sigmas]
    cache = FirstBlockCache(transformer, FirstBlockCacheParams(enabled=True, threshold=1e-12), mu)
    with pulid_applied(transformer, modules, id_tokens, params, mu):
        direct = [call(transformer, sigma) for sigma in sigmas]
        cached = [call(cache, sigma) for sigma in sigmas]
    assert cache.misses == 3
    assert [torch.equal(a, b) for a, b in zip(direct, cached, strict=True)] == [True] * 3
    assert [torch.equal(a, b) for a, b in zip(direct, plain, strict=True)] == [True, False, True]
    assert not hooks_left(transformer)


# The run budget --------------------------------------------------------------------------


def test_the_estimate_counts_pulid_on_each_finishing_pass_about_to_run() -> None:
    from engine.budget import DeviceProfile, FluxShape, Workload
    from engine.budget_identity import CA_PARAMETERS, pulid_finishing_parts

    flux = FluxShape(params=11.9e9, hidden=3072, heads=24, blocks=57, text_tokens=512)
    h200 = DeviceProfile("H200", 133.0, 7.0e14)
    document = {
        "latent": {"enabled": True, "upscale": 1.0, "speed_accuracy": 0.0},  # 16 steps
        "refine": {"enabled": True, "face": {"enabled": True}},  # 20 steps at 1024²
        "upscale": {"enabled": True},  # Upscale 1: 2048² in 1024² tiles
        "identity": {"references": ["sha256:" + "a" * 64], "pulid": {**ON, "end": 0.5}},
    }
    recipe = recipe_from_json(json.dumps(document))
    parts = {p.stage: p for p in pulid_finishing_parts(recipe, Workload(), flux, h200)}
    assert set(parts) == {"latent", "refine_face", "first_tiles"}
    per_call = 0.5 * 20 * 2 * CA_PARAMETERS * 64 * 64 / 7.0e14  # window × 20 CAs × 1024²
    assert parts["latent"].seconds == pytest.approx(16 * per_call)
    assert parts["refine_face"].seconds == pytest.approx(20 * per_call)
    assert parts["first_tiles"].seconds > 4 * 30 * per_call  # 4 tiles of 30 steps, padded
    assert all(p.what == "PuLID" and p.flops == 0 for p in parts.values())
    pending = Workload(latent=False, finishing=frozenset({"refine_face"}))
    assert [p.stage for p in pulid_finishing_parts(recipe, pending, flux, h200)] == ["refine_face"]
    off = recipe_from_json(json.dumps({"identity": {"pulid": {"finishing": False}}}), recipe)
    assert pulid_finishing_parts(off, Workload(), flux, h200) == []
