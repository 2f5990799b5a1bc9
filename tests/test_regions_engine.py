"""Regional prompts through the engine on tiny models: one full region is the plain prompt,
each region's text encoding is cached on its own, a region's LoRA acts on its tokens only."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_lora import build_kohya
from test_lora_merged import lokr_only

from conftest import tiny_lora
from engine.engine import Engine, EngineConfig
from engine.errors import InputError
from engine.flux import latents
from engine.flux.denoiser import FluxDenoiser
from engine.flux.prompt import PromptEmbeddings, encode_prompt
from engine.models.manager import ModelConfig
from engine.recipe import Recipe
from engine.recipe_json import set_path
from engine.recipe_lora import LoraSlot
from engine.regions.attention import TextSegments
from engine.regions.layout import RegionalLayout
from engine.regions.lora_tokens import RegionAdapters, region_loras, token_stream
from engine.regions.masks import split_masks, token_owners, token_weights
from engine.regions.sampling import region_window
from photos import astronaut
from photos import png_bytes as png

CHARACTER_A, CHARACTER_B = "celeste.safetensors", "roxy.safetensors"
LORAS = []  # the module engine's loras/ folder


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    root = tmp_path_factory.mktemp("regions")
    loras = root / "models" / "loras"
    tiny_lora(loras / CHARACTER_A, {"modelspec.trigger_phrase": "celestesh-01"}, 11)
    tiny_lora(loras / CHARACTER_B, {"modelspec.trigger_phrase": "roxygirl04"}, 12)
    build_kohya().save(loras / "with_clip.safetensors")
    LORAS.append(loras)
    config = ModelConfig(tiny=True, device="cpu", models_dir=root / "models")
    return Engine(EngineConfig(models=config, outputs_dir=root / "o", data_dir=root / "d"))


def recipe(**paths) -> Recipe:
    r = Recipe()
    base = {"prompt.width": 64, "prompt.height": 64, "settings.steps": 2, "settings.seed": 4}
    for path, value in {**base, **paths}.items():
        r = set_path(r, path, value)
    return r


def two_regions(b_lora: dict | None = None, b_prompt: str = "blue hair", **paths) -> Recipe:
    a = {"prompt": "red hair", "loras": [{"file": CHARACTER_A, "strength_model": 0.7}]}
    b = {"prompt": b_prompt, "loras": [b_lora or {"file": CHARACTER_B}]}
    return recipe(**{
        "prompt.prompt": "two women", "regions.enabled": True, "regions.blur": 4.0,
        "regions.regions": [a, b], **paths,
    })  # fmt: skip


def pixels(result) -> bytes:
    return result.images[0].tobytes()


def test_one_region_over_the_whole_canvas_is_the_plain_prompt_bit_for_bit(engine) -> None:
    plain = engine.run(recipe(**{"prompt.prompt": "a portrait"}), save=False)
    one = recipe(**{
        "prompt.prompt": "", "regions.enabled": True,
        "regions.regions": [{"prompt": "a portrait"}],
    })  # fmt: skip
    result = engine.run(one, save=False)
    assert {"region_text_1", "regions"} <= set(result.report.ran_names)
    assert pixels(result) == pixels(plain)


def test_each_regions_text_encoding_is_cached_on_its_own(engine) -> None:
    first = engine.run(two_regions(), save=False)
    assert {"region_text_1", "region_text_2", "regions", "base"} <= set(first.report.ran_names)
    assert any("celeste.safetensors" in n for n in first.report.notes)
    # region B's CLIP strength: only B's encoding, the layout and what follows run
    clip = engine.run(two_regions({"file": "with_clip.safetensors", "strength_clip": 0.5}))
    clip_again = engine.run(
        two_regions({"file": "with_clip.safetensors", "strength_clip": 0.9}), save=False
    )
    assert "region_text_1" in clip_again.report.cached
    assert clip_again.report.ran_names[:3] == ["region_text_2", "regions", "base"]
    assert pixels(clip) != pixels(clip_again)
    # region B's model strength: the encodings and the layout stay, the base pass runs
    model = engine.run(two_regions({"file": CHARACTER_B, "strength_model": 0.4}), save=False)
    assert model.report.ran_names == ["base", "decode", "color"]
    assert {"region_text_1", "region_text_2", "regions"} <= set(model.report.cached)
    assert pixels(model) != pixels(first)


def test_region_prompts_change_the_image_and_keep_the_base_cached(engine) -> None:
    first = engine.run(two_regions(), save=False)
    changed = engine.run(two_regions(b_prompt="grey hair"), save=False)
    assert "text" in changed.report.cached and "region_text_1" in changed.report.cached
    assert pixels(changed) != pixels(first)


def test_region_lora_acts_on_its_tokens_only_at_the_first_step(engine) -> None:
    bundle, stack = engine.models.flux(Recipe().model), engine.models.loras()
    size = 64
    base, _ = encode_prompt(bundle, "two women")
    a_text, _ = encode_prompt(bundle, "red hair", 8)
    b_text, _ = encode_prompt(bundle, "blue hair", 8)
    weights = token_weights(split_masks(size, size, 2, "left_right", 0, 0.0))
    segments = TextSegments(base.tokens.shape[1], (8, 8))
    layout = RegionalLayout(segments, weights, token_owners(weights), isolate=True)
    tokens = torch.cat([base.tokens, a_text.tokens, b_text.tokens], dim=1)
    embeddings = PromptEmbeddings(tokens, base.pooled, regions=layout)
    denoiser = FluxDenoiser(
        bundle.transformer, embeddings, latents.image_ids(size, size, bundle.device), 3.5,
        bundle.compute_dtype, region_window=(0.0, 1.0),
    )  # fmt: skip
    x = torch.randn(1, weights.shape[1], 64, generator=torch.Generator().manual_seed(0))
    text = segments.total
    sigma = torch.tensor(1.0)

    def velocity(slots_a: list[LoraSlot]) -> torch.Tensor:
        _, region = stack.apply_regions(bundle, [], [slots_a, []])
        adapters = [RegionAdapters(w, layout.lora_tokens()[i]) for i, w in enumerate(region)]
        with region_loras(bundle.transformer, [a for a in adapters if a.weights], text):
            return denoiser.velocity(x, sigma)

    plain = velocity([])
    with_a = velocity([LoraSlot(file=CHARACTER_A, strength_model=2.0)])
    owners = token_owners(weights)
    in_a, in_b = owners == 0, owners == 1
    assert not torch.allclose(with_a[0, in_a], plain[0, in_a], atol=1e-4)
    torch.testing.assert_close(with_a[0, in_b], plain[0, in_b], atol=1e-6, rtol=0)
    assert text == base.tokens.shape[1] + 16


def test_token_streams_of_the_flux_layers() -> None:
    assert token_stream("transformer_blocks.3.attn.to_q") == "image"
    assert token_stream("transformer_blocks.3.attn.add_k_proj") == "text"
    assert token_stream("transformer_blocks.3.ff_context.net.2") == "text"
    assert token_stream("single_transformer_blocks.7.proj_mlp") == "joint"
    assert token_stream("transformer_blocks.3.norm1.linear") is None
    assert token_stream("time_text_embed.timestep_embedder.linear_1") is None


def test_the_mask_window_covers_the_steps_asked_for() -> None:
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
    assert region_window(sigmas, 0.0, 1.0) == (0.0, 1.0)
    assert region_window(sigmas, 0.0, 0.5) == (0.5, 1.0)  # steps 0 and 1
    assert region_window(sigmas, 0.25, 0.75) == (0.25, 0.75)  # steps 1 and 2
    assert region_window(sigmas, 0.5, 0.5) is None


def test_a_painted_layout_without_masks_says_what_to_do(engine) -> None:
    bad = two_regions(**{"regions.layout": "painted"})
    with pytest.raises(InputError, match="Regions 1, 2 have no painted mask"):
        engine.run(bad, save=False)


def test_a_lokr_file_in_a_region_is_refused_with_a_message(engine) -> None:
    lokr_only().save(LORAS[0] / "lokr.safetensors")
    with pytest.raises(InputError, match="a region takes LoRA files"):
        engine.run(two_regions({"file": "lokr.safetensors"}), save=False)


def test_the_latent_pass_keeps_the_regions_laid_over_its_larger_size(engine) -> None:
    second = {"latent.enabled": True, "latent.upscale": 1.5, "latent.speed_accuracy": 0.0}
    result = engine.run(two_regions(**second), save=False)
    assert result.images[0].size == (96, 96)
    moved = engine.run(
        two_regions({"file": CHARACTER_B, "strength_model": 0.3}, **second), save=False
    )
    assert moved.report.ran_names[:2] == ["base", "latent"]
    assert pixels(moved) != pixels(result)


def test_a_layout_laid_over_another_size_keeps_its_split() -> None:
    masks = split_masks(64, 32, 2, "left_right", 0, 0.0)
    layout = RegionalLayout.from_masks(TextSegments(0, (4, 4)), masks, isolate=True)
    bigger = layout.at(128, 64)
    assert bigger.image_tokens == 8 * 4
    grid = bigger.owners.reshape(4, 8)
    assert (grid[:, :4] == 0).all() and (grid[:, 4:] == 1).all()
    assert layout.at(64, 32) is layout


def two_astronauts() -> bytes:
    """Two copies of the astronaut side by side: one face in each half of 1024 x 512."""
    one = astronaut()
    both = Image.new("RGB", (2 * one.width, one.height))
    both.paste(one, (0, 0))
    both.paste(one, (one.width, 0))
    return png(both)


def test_refine_renders_each_face_as_the_character_of_its_region(engine) -> None:
    digest = engine.store_image(two_astronauts())
    paths = {
        "source.kind": "image", "source.image": digest, "refine.face.enabled": True,
        "refine.face.steps": 2, "color.enabled": False,
    }  # fmt: skip
    result = engine.run(two_regions(**paths), save=False)
    notes = " ".join(result.report.notes)
    assert "rendered as region 1's character." in notes
    assert "rendered as region 2's character." in notes
    assert len(result.report.detections["refine_face"][0]) == 2
    moved = engine.run(
        two_regions({"file": CHARACTER_B, "strength_model": 0.3}, **paths), save=False
    )
    assert moved.report.ran_names == ["refine_face"]
    before, after = np.asarray(result.images[0]), np.asarray(moved.images[0])
    assert np.array_equal(after[:, :512], before[:, :512])  # region 1's face: LoRA A only
    assert not np.array_equal(after[:, 512:], before[:, 512:])
