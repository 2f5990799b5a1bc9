"""Redux: blend arithmetic, SigLIP preprocessing, tiny models, loading, and the stages."""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from engine.cache import ArtifactCache
from engine.errors import InputError, ModelNotFoundError
from engine.flux import latents
from engine.flux.denoiser import FluxDenoiser
from engine.flux.prompt import PromptEmbeddings
from engine.flux.sampling import Conditioning
from engine.graph import StageContext, StageGraph
from engine.images import ImageStore
from engine.models.tiny import build_tiny_transformer
from engine.recipe import Recipe
from engine.recipe_json import set_path
from engine.redux import reference_hints
from engine.redux.blend import (
    average_weights,
    balance_bias,
    balance_scale,
    blend,
    blend_scales,
    concatenate,
    weighted_average,
)
from engine.redux.encoder import preprocess, redux_tokens, siglip_features
from engine.redux.models import (
    TINY_REDUX,
    TINY_SIGLIP,
    ReduxConfig,
    ReduxModelManager,
    build_tiny_redux,
    build_tiny_siglip,
)
from engine.runtypes import RunReport
from engine.stages.redux import ReduxStage
from engine.stages.vision import VisionStage

N_TOKENS = (TINY_SIGLIP["image_size"] // TINY_SIGLIP["patch_size"]) ** 2
T5_WIDTH = TINY_REDUX["txt_in_features"]


def portrait(seed: int, size: tuple[int, int] = (80, 64)) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# Blend arithmetic -------------------------------------------------------------------------


def test_average_is_the_normalised_weighted_sum_exactly():
    e = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    scales = blend_scales("average", (70, 30))
    w = 70 / (70 + 30)
    assert scales == (w, 1 - w)
    out = blend(e, "average", scales)
    assert out.shape == (1, 5, 8)
    assert torch.equal(out[0], w * e[0] + (1 - w) * e[1])
    # only the ratio matters, and equal strengths are an even mix
    assert blend_scales("average", (35, 15)) == scales
    assert average_weights(100, 100) == (0.5, 0.5)
    assert blend_scales("average", (40,)) == (1.0,)


def test_concatenation_keeps_both_blocks_each_scaled_by_its_strength():
    e = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    scales = blend_scales("concat", (70, 30))
    assert scales == (0.7, 0.3)
    out = blend(e, "concat", scales)
    assert out.shape == (1, 2 * 5, 8)
    assert torch.equal(out[0, :5], 0.7 * e[0])
    assert torch.equal(out[0, 5:], 0.3 * e[1])
    assert torch.equal(concatenate(e[:1], (0.01,))[0], 0.01 * e[0])


def test_weighted_average_of_one_block_with_weight_one_is_that_block():
    e = torch.randn(1, 3, 4)
    assert torch.equal(weighted_average(e, (1.0,))[0], e[0])


def test_prompt_balance_is_no_bias_at_one_half_and_minus_infinity_at_one():
    assert balance_scale(0.5) == 1.0 and balance_bias(0.5) is None
    assert balance_bias(1.0) == -math.inf
    assert balance_bias(0.0) == pytest.approx(math.log(2.0))
    assert balance_bias(0.75) == pytest.approx(math.log(0.5))
    with pytest.raises(ValueError):
        balance_scale(1.5)


def test_unknown_mode_and_mismatched_scales_are_refused():
    with pytest.raises(ValueError):
        blend_scales("sum", (1, 2))
    with pytest.raises(ValueError):
        blend(torch.zeros(2, 3, 4), "average", (1.0,))


# Preprocessing and hints ------------------------------------------------------------------


def test_preprocess_normalises_with_mean_and_std_one_half():
    image = torch.rand(1, 3, 56, 56)
    out = preprocess(image, 56)
    expected = ((image * 255).round() / 255 - 0.5) / 0.5
    assert torch.allclose(out, expected, atol=1e-6)
    assert out.min() >= -1 and out.max() <= 1


def test_preprocess_centre_crop_keeps_the_middle_square_and_none_stretches():
    image = torch.zeros(1, 3, 56, 168)  # three squares side by side, the middle one white
    image[..., 56:112] = 1.0
    cropped = preprocess(image, 56, "center")
    assert cropped.shape == (1, 3, 56, 56)
    assert torch.allclose(cropped[..., 4:-4], torch.ones(1, 3, 56, 48), atol=1e-2)
    stretched = preprocess(image, 56, "none")
    assert stretched.shape == (1, 3, 56, 56)
    assert stretched[..., :10].mean() < -0.9  # the black left square is still there


def test_reference_hints_follow_the_guidelines():
    assert reference_hints(Image.new("RGB", (2048, 2048))) == []
    assert reference_hints(Image.new("RGB", (1024, 1100))) == []
    small = reference_hints(Image.new("RGB", (800, 800)))
    assert len(small) == 1 and "1024" in small[0]
    tiny = reference_hints(Image.new("RGB", (300, 300)))
    assert len(tiny) == 1 and "384" in tiny[0] and "upscaled" in tiny[0]
    wide = reference_hints(Image.new("RGB", (3000, 1500)))
    assert len(wide) == 1 and "square" in wide[0]


# Tiny models and loading ------------------------------------------------------------------


def tiny_tokens(siglip, redux, images) -> torch.Tensor:
    return redux_tokens(redux, siglip_features(siglip, images))


def test_tiny_siglip_and_redux_give_t5_width_tokens():
    siglip, redux = build_tiny_siglip(), build_tiny_redux()
    features = siglip_features(siglip, [portrait(1), portrait(2, (50, 90))])
    assert features.shape == (2, N_TOKENS, TINY_SIGLIP["hidden_size"])
    tokens = redux_tokens(redux, features)
    assert tokens.shape == (2, N_TOKENS, T5_WIDTH)
    again = tiny_tokens(build_tiny_siglip(), build_tiny_redux(), [portrait(1), portrait(2)])
    assert torch.equal(tokens[0], again[0])  # built from fixed seeds


def write_comfy_files(models_dir: Path) -> None:
    """Tiny weights in the real single-file layouts: `vision_model.*` and `redux_up/down.*`."""
    vision = {
        f"vision_model.{k}": v.contiguous() for k, v in build_tiny_siglip().state_dict().items()
    }
    (models_dir / "clip_vision").mkdir(parents=True)
    (models_dir / "style_models").mkdir(parents=True)
    save_file(vision, models_dir / "clip_vision" / "sigclip_vision_patch14_384.safetensors")
    save_file(
        build_tiny_redux().state_dict(), models_dir / "style_models" / "flux1-redux-dev.safetensors"
    )


def test_comfy_folder_files_give_the_same_tokens_as_the_tiny_models(tmp_path):
    write_comfy_files(tmp_path)
    manager = ReduxModelManager(ReduxConfig(models_dir=tmp_path, device="cpu"))
    images = [portrait(3), portrait(4)]
    loaded = tiny_tokens(manager.siglip(), manager.redux_encoder(), images)
    expected = tiny_tokens(build_tiny_siglip(), build_tiny_redux(), images)
    assert torch.equal(loaded, expected)
    assert manager.identity("siglip").startswith("comfy:clip_vision/sigclip_vision_patch14_384")
    assert manager.identity("redux").startswith("comfy:style_models/flux1-redux-dev")
    manager.siglip(), manager.redux_encoder()
    assert manager.load_counts() == {"siglip": 1, "redux": 1}  # kept warm


def test_diffusers_folder_gives_the_same_tokens_as_the_tiny_models(tmp_path):
    build_tiny_siglip().save_pretrained(tmp_path / "image_encoder")
    build_tiny_redux().save_pretrained(tmp_path / "image_embedder")
    manager = ReduxModelManager(ReduxConfig(redux_dir=tmp_path, device="cpu"))
    images = [portrait(5)]
    loaded = tiny_tokens(manager.siglip(), manager.redux_encoder(), images)
    expected = tiny_tokens(build_tiny_siglip(), build_tiny_redux(), images)
    assert torch.equal(loaded, expected)
    assert manager.identity("siglip").startswith("diffusers:image_encoder:")


def test_a_missing_file_names_the_file_and_every_place_searched(tmp_path):
    (tmp_path / "models" / "clip_vision").mkdir(parents=True)
    (tmp_path / "models" / "clip_vision" / "notes.safetensors").write_bytes(b"junk")
    config = ReduxConfig(
        models_dir=tmp_path / "models", redux_dir=tmp_path / "redux", repo_id="nobody/none"
    )
    manager = ReduxModelManager(config)
    with pytest.raises(ModelNotFoundError) as siglip_error:
        manager.siglip()
    text = str(siglip_error.value)
    assert "sigclip_vision_patch14_384.safetensors" in text
    assert str(tmp_path / "models" / "clip_vision") in text
    assert str(tmp_path / "redux" / "image_encoder") in text
    assert "nobody/none/image_encoder" in text
    assert "notes.safetensors cannot be read" in text
    with pytest.raises(ModelNotFoundError) as redux_error:
        manager.identity("redux")
    text = str(redux_error.value)
    assert "flux1-redux-dev.safetensors" in text
    assert str(tmp_path / "models" / "style_models") + " (missing)" in text


# Stages in a graph ------------------------------------------------------------------------


@dataclass
class FixedText:
    """Stand-in for the text stage: a fixed Conditioning that depends on the prompt."""

    name: str = "text"
    version: int = 1
    uses_models: bool = False

    def inputs(self, recipe):
        return ()

    def enabled(self, recipe):
        return True

    def select(self, recipe, env):
        return {"prompt": recipe.prompt.prompt}

    def run(self, ctx, params, upstream):
        generator = torch.Generator().manual_seed(len(params["prompt"]))
        tokens = torch.randn(1, 7, T5_WIDTH, generator=generator)
        negative = PromptEmbeddings(torch.zeros(1, 7, T5_WIDTH), torch.zeros(1, 32))
        return Conditioning(PromptEmbeddings(tokens, torch.ones(1, 32)), negative)


@dataclass
class Sink:
    """Stand-in for the base stage: consumes the conditioning (redux, or text when off)."""

    name: str = "base"
    version: int = 1
    uses_models: bool = False
    seen: Conditioning | None = None

    def inputs(self, recipe):
        return ("redux",)

    def enabled(self, recipe):
        return True

    def select(self, recipe, env):
        return {"seed": recipe.settings.seed}

    def run(self, ctx, params, upstream):
        (self.seen,) = upstream.values()
        return self.seen.positive.tokens.sum()


def redux_graph(tmp_path: Path) -> SimpleNamespace:
    """FixedText -> vision -> redux -> Sink over tiny models, with three stored portraits."""
    images = ImageStore(tmp_path / "images")
    digests = [images.put(png_bytes(portrait(seed))) for seed in (10, 11, 12)]
    redux_models = ReduxModelManager(ReduxConfig(tiny=True, device="cpu"))
    env = SimpleNamespace(images=images, engine=SimpleNamespace(redux_models=redux_models))
    sink = Sink()
    graph = StageGraph([FixedText(), VisionStage(), ReduxStage(), sink], ArtifactCache(10**8))
    recipe = Recipe()
    redux = dataclasses.replace(recipe.redux, enabled=True, image1=digests[0], image2=digests[1])
    recipe = dataclasses.replace(recipe, redux=redux)
    return SimpleNamespace(graph=graph, env=env, sink=sink, digests=digests, recipe=recipe)


@pytest.fixture
def studio(tmp_path):
    return redux_graph(tmp_path)


def run_graph(studio, recipe) -> RunReport:
    report = RunReport()
    studio.graph.run(recipe, studio.env, StageContext(studio.env, report), "base")
    return report


def test_redux_appends_blended_tokens_to_the_positive_only(studio):
    run_graph(studio, studio.recipe)
    cond = studio.sink.seen
    assert cond.positive.tokens.shape == (1, 7 + N_TOKENS, T5_WIDTH)
    text = FixedText().run(None, {"prompt": studio.recipe.prompt.prompt}, {})
    assert torch.equal(cond.positive.tokens[:, :7], text.positive.tokens)
    assert torch.equal(cond.positive.pooled, text.positive.pooled)
    assert torch.equal(cond.negative.tokens, text.negative.tokens)
    images = [studio.env.images.load(d) for d in studio.digests[:2]]
    per_image = tiny_tokens(build_tiny_siglip(), build_tiny_redux(), images)
    expected = blend(per_image, "average", blend_scales("average", (70, 30)))
    assert torch.allclose(cond.positive.tokens[:, 7:], expected, atol=1e-6)

    assert cond.positive.token_bias is None  # neutral balance: no attention mask

    concat = set_path(studio.recipe, "redux.mode", "concat")
    run_graph(studio, concat)
    assert studio.sink.seen.positive.tokens.shape == (1, 7 + 2 * N_TOKENS, T5_WIDTH)


def test_the_prompt_balance_biases_the_redux_columns_and_leaves_the_tokens(studio):
    run_graph(studio, studio.recipe)
    neutral = studio.sink.seen
    run_graph(studio, set_path(studio.recipe, "redux.prompt_balance", 0.8))
    cond = studio.sink.seen
    assert torch.equal(cond.positive.tokens, neutral.positive.tokens)  # not scaled
    bias = cond.positive.token_bias
    assert bias.shape == (7 + N_TOKENS,) and bias.dtype == torch.float32
    assert not bias[:7].any()
    assert torch.allclose(bias[7:], torch.full((N_TOKENS,), math.log(2 * (1 - 0.8))))
    assert cond.negative.token_bias is None  # the negative prompt gets no Redux, no bias
    run_graph(studio, set_path(studio.recipe, "redux.prompt_balance", 1.0))
    assert torch.isinf(studio.sink.seen.positive.token_bias[7:]).all()


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("redux.strength1", 40, ["redux", "base"]),
        ("redux.mode", "concat", ["redux", "base"]),
        ("redux.prompt_balance", 0.8, ["redux", "base"]),
        ("prompt.prompt", "another prompt", ["text", "redux", "base"]),
        ("settings.seed", 3, ["base"]),
    ],
)
def test_a_redux_setting_reruns_redux_and_downstream_but_never_siglip(
    studio, path, value, expected
):
    run_graph(studio, studio.recipe)
    report = run_graph(studio, set_path(studio.recipe, path, value))
    assert report.ran_names == expected
    assert studio.env.engine.redux_models.load_counts() == {"siglip": 1, "redux": 1}


def test_a_new_reference_image_reruns_vision_and_redux(studio):
    run_graph(studio, studio.recipe)
    report = run_graph(studio, set_path(studio.recipe, "redux.image2", studio.digests[2]))
    assert report.ran_names == ["vision", "redux", "base"]


def test_unused_strength_of_an_empty_slot_changes_nothing(studio):
    one = set_path(studio.recipe, "redux.image2", "")
    run_graph(studio, one)
    assert run_graph(studio, set_path(one, "redux.strength2", 99)).ran_names == []
    assert studio.sink.seen.positive.tokens.shape == (1, 7 + N_TOKENS, T5_WIDTH)


def test_redux_off_forwards_the_text_conditioning(studio):
    recipe = set_path(studio.recipe, "redux.enabled", False)
    report = run_graph(studio, recipe)
    assert report.ran_names == ["text", "base"]
    assert report.off == ["redux"]
    assert studio.sink.seen.positive.tokens.shape == (1, 7, T5_WIDTH)


def test_redux_on_without_references_is_an_input_error(studio):
    recipe = set_path(set_path(studio.recipe, "redux.image1", ""), "redux.image2", "")
    with pytest.raises(InputError, match="Redux tab"):
        run_graph(studio, recipe)


@pytest.mark.parametrize("balance", [0.5, 0.2])
def test_the_tiny_transformer_accepts_the_longer_conditioning(studio, balance):
    recipe = set_path(studio.recipe, "redux.mode", "concat")
    run_graph(studio, set_path(recipe, "redux.prompt_balance", balance))
    positive = studio.sink.seen.positive
    transformer = build_tiny_transformer()
    denoiser = FluxDenoiser(
        transformer, positive, latents.image_ids(32, 32, "cpu"), 3.5, torch.float32
    )
    x = torch.randn(1, 4, 64)
    assert denoiser(x, torch.tensor(0.5)).shape == x.shape


def test_real_layout_headers_are_recognised_without_reading_weights(tmp_path):
    from engine.models.checkpoint import Header
    from engine.redux.models import detect_redux, detect_siglip

    p = "vision_model."
    shapes = {
        f"{p}embeddings.patch_embedding.weight": (1152, 3, 14, 14),
        f"{p}embeddings.position_embedding.weight": (729, 1152),
        f"{p}encoder.layers.0.mlp.fc1.weight": (4304, 1152),
        f"{p}encoder.layers.26.layer_norm1.weight": (1152,),
        f"{p}head.probe": (1, 1, 1152),
    }
    siglip = detect_siglip(Header(tmp_path / "s.safetensors", shapes, {}))
    assert siglip.dims() == {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "image_size": 384,
        "patch_size": 14,
        "vision_use_head": True,
    }
    shapes = {"redux_up.weight": (12288, 1152), "redux_down.weight": (4096, 12288)}
    redux = detect_redux(Header(tmp_path / "r.safetensors", shapes, {}))
    assert redux.dims() == {"redux_dim": 1152, "txt_in_features": 4096}
    clip = {f"{p}embeddings.patch_embedding.weight": (1280, 3, 14, 14)}
    clip[f"{p}embeddings.class_embedding"] = (1280,)
    assert "CLIP vision" in detect_siglip(Header(tmp_path / "c.safetensors", clip, {}))


def test_a_clip_vision_file_is_skipped_with_its_reason(tmp_path):
    (tmp_path / "clip_vision").mkdir()
    clip = {"vision_model.embeddings.patch_embedding.weight": torch.zeros(8, 3, 14, 14)}
    clip["vision_model.embeddings.class_embedding"] = torch.zeros(8)
    save_file(clip, tmp_path / "clip_vision" / "clip_vision_h.safetensors")
    manager = ReduxModelManager(ReduxConfig(models_dir=tmp_path, device="cpu"))
    with pytest.raises(ModelNotFoundError, match="clip_vision_h.safetensors is a CLIP vision"):
        manager.identity("siglip")
