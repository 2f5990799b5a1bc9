"""The sampling core through the engine on tiny models: samplers, CFG, sigma modifiers,
img2img, the latent second pass, sharpen and live previews."""

import io

import pytest
import torch
from PIL import Image

from engine.color.sharpen import sharpen, sharpen_kernel
from engine.engine import Engine, EngineConfig
from engine.models.manager import ModelConfig
from engine.recipe import SAMPLERS, Recipe
from engine.recipe_json import set_path
from engine.stages.latent import second_pass_settings


def small(**paths) -> Recipe:
    recipe = Recipe()
    base = {"prompt.width": 64, "prompt.height": 64, "settings.steps": 3, "settings.seed": 9}
    for path, value in {**base, **paths}.items():
        recipe = set_path(recipe, path, value)
    return recipe


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("sampling")
    config = ModelConfig(tiny=True, device="cpu")
    return Engine(EngineConfig(models=config, outputs_dir=root / "o", data_dir=root / "d"))


def render(engine, **paths):
    return engine.run(small(**paths), save=False)


def same_pixels(a, b) -> bool:
    return [i.tobytes() for i in a.images] == [i.tobytes() for i in b.images]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_renders_deterministically(engine, sampler):
    first = render(engine, **{"settings.sampler": sampler, "prompt.batch_size": 2})
    engine.cache.__init__(engine.cache.max_bytes)  # drop artifacts: really run again
    again = render(engine, **{"settings.sampler": sampler, "prompt.batch_size": 2})
    assert same_pixels(first, again) and again.report.ran_names[-1] == "color"


def test_stochastic_batch_image_equals_the_single_render(engine):
    batch = render(engine, **{"settings.sampler": "euler_ancestral", "prompt.batch_size": 2})
    alone = render(engine, **{"settings.sampler": "euler_ancestral", "settings.seed": 10})
    assert batch.images[1].tobytes() == alone.images[0].tobytes()


@pytest.mark.parametrize(
    "paths",
    [
        {"settings.detail_daemon.enabled": True, "settings.detail_daemon.amount": 0.0},
        {"settings.lying_sigma.enabled": True, "settings.lying_sigma.dishonesty": 0.0},
        {"settings.first_block_cache.enabled": False, "settings.first_block_cache.threshold": 0.5},
        {"prompt.negative_prompt": "blurry", "settings.cfg": 1.0},
    ],
)
def test_neutral_settings_are_bit_identical_to_plain_sampling(engine, paths):
    plain = render(engine)
    assert same_pixels(render(engine, **paths), plain)


def test_nonzero_modifiers_change_the_image(engine):
    plain = render(engine)
    assert not same_pixels(
        render(
            engine, **{"settings.detail_daemon.enabled": True, "settings.detail_daemon.amount": 0.5}
        ),
        plain,
    )
    assert not same_pixels(render(engine, **{"settings.lying_sigma.enabled": True}), plain)


def test_true_cfg_doubles_the_model_calls_and_notes_when_unused(engine):
    off = render(engine, **{"prompt.negative_prompt": "blurry", "settings.seed": 501})
    assert off.report.counters["model calls"] == 3
    assert any("ignored at CFG 1" in n for n in off.report.notes)
    on = render(
        engine, **{"prompt.negative_prompt": "blurry", "settings.cfg": 2.0, "settings.seed": 501}
    )
    assert on.report.counters["model calls"] == 6
    assert "text" in on.report.ran_names  # the negative prompt had to be encoded
    assert not same_pixels(on, off)


def test_previews_stream_during_sampling(engine):
    events = []
    engine.run(small(**{"settings.seed": 77}), progress=events.append, save=False)
    previews = [e for e in events if e.stage == "base" and e.preview is not None]
    assert len(previews) == 3 and previews[0].preview.size == (8, 8)  # latent resolution


def _upload(engine) -> str:
    buffer = io.BytesIO()
    Image.effect_noise((96, 80), 40).convert("RGB").save(buffer, format="PNG")
    return engine.store_image(buffer.getvalue())


def test_img2img_starts_from_the_upload(engine):
    digest = _upload(engine)
    paths = {"source.kind": "img2img", "source.image": digest, "settings.denoise": 0.5}
    first = render(engine, **paths)
    assert first.report.ran_names[:2] == ["image", "base"] or "base" in first.report.ran_names
    assert first.images[0].size == (64, 64)
    weaker = render(engine, **{**paths, "settings.denoise": 0.3})
    assert weaker.report.ran_names == ["base", "decode", "color"]  # text and image cached
    assert not same_pixels(first, weaker)
    zero = render(engine, **{**paths, "settings.denoise": 0.0})
    assert zero.report.counters.get("model calls", 0) == 0


def test_latent_second_pass_upscales_and_reports(engine):
    paths = {
        "latent.enabled": True,
        "latent.upscale": 1.5,
        "latent.speed_accuracy": 0.0,
        "latent.denoise": 0.5,
    }
    result = render(engine, **paths)
    assert result.images[0].size == (96, 96)
    assert "latent" in result.report.ran_names
    sharper = render(engine, **{**paths, "latent.sharpen": 0.4})
    assert sharper.report.ran_names == ["decode", "color"]


def test_second_pass_mapping():
    r = set_path(set_path(Recipe(), "latent.speed_accuracy", 0.5), "latent.rough_smooth", 0.8)
    s = second_pass_settings(r)
    assert (s.steps, s.scheduler, s.denoise, s.guidance) == (28, "simple", 0.45, 1.9)
    assert s.first_block_cache.enabled and s.first_block_cache.threshold == pytest.approx(0.06)
    assert s.detail_daemon.enabled and s.detail_daemon.amount == pytest.approx(-0.15)
    neutral = second_pass_settings(
        set_path(set_path(Recipe(), "latent.rough_smooth", 0.5), "latent.speed_accuracy", 1.0)
    )
    assert neutral.steps == 40 and not neutral.detail_daemon.enabled
    assert not neutral.first_block_cache.enabled


def test_sharpen_kernel_matches_the_formula():
    k = sharpen_kernel(1, 1.0, 0.5)
    axis = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    g = torch.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / 2)
    g = g / g.sum()
    expected = -5 * g
    expected[1, 1] = -5 * g[1, 1] + 1 + 5  # centre raised so the kernel sums to 1
    assert torch.allclose(k.double(), expected, atol=1e-6)
    assert k.sum().item() == pytest.approx(1.0)
    flat = torch.full((1, 3, 5, 5), 0.4)
    assert torch.allclose(sharpen(flat, 0.5), flat, atol=1e-6)  # flat areas unchanged
    assert torch.equal(sharpen(flat, 0.0), flat)
