"""ReduxAdvanced per reference (specs §5): downsampling, weight², image mode, own attention bias."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from test_redux import T5_WIDTH, FixedText, redux_graph, run_graph

from engine.errors import InputError, RecipeError
from engine.recipe import Recipe, ReduxAdvancedParams
from engine.recipe_json import recipe_from_json, recipe_to_json, set_path
from engine.redux.advanced import (
    REDUX_GRID,
    TokenShaping,
    check_average,
    grid_side,
    shape_tokens,
)
from engine.redux.blend import balance_bias, blend, blend_scales, reference_biases
from engine.redux.encoder import preprocess, redux_tokens, siglip_features
from engine.redux.models import build_tiny_redux, build_tiny_siglip

WIDTH = 8
TEXT = 7  # FixedText's T5 tokens
N = 16  # the tiny SigLIP's 4 x 4 grid


def redux_grid_tokens(seed: int) -> torch.Tensor:
    """One real-sized reference: 27 x 27 = 729 tokens."""
    return torch.randn(REDUX_GRID**2, WIDTH, generator=torch.Generator().manual_seed(seed))


def resized(tokens: torch.Tensor, side: int, mode: str) -> torch.Tensor:
    """ReduxAdvanced's resize written out: grid (1, D, 27, 27) -> (side², D)."""
    grid = tokens.view(1, REDUX_GRID, REDUX_GRID, WIDTH).permute(0, 3, 1, 2)
    out = F.interpolate(grid, size=(side, side), mode=mode)
    return out.permute(0, 2, 3, 1).reshape(side * side, WIDTH)


@pytest.fixture
def studio(tmp_path):
    return redux_graph(tmp_path)


# Token arithmetic ---------------------------------------------------------------------------


def test_factor_3_in_area_mode_gives_81_tokens_of_the_resized_grid_times_weight_squared():
    tokens = redux_grid_tokens(0)
    out = shape_tokens(tokens, TokenShaping(3.0, "area", 0.7))
    assert out.shape == (81, WIDTH)
    assert torch.equal(out, resized(tokens, 9, "area") * (0.7 * 0.7))
    # Row-major grid: token 1 is the mean of rows 0-2, columns 3-5 (not its transpose).
    block = tokens.view(REDUX_GRID, REDUX_GRID, WIDTH)[0:3, 3:6].reshape(9, WIDTH)
    assert torch.allclose(out[1], block.mean(0) * 0.49, atol=1e-6)


@pytest.mark.parametrize(
    ("function", "mode"),
    [
        ("nearest", "nearest"),
        ("bilinear", "bilinear"),
        ("bicubic", "bicubic"),
        ("nearest_exact", "nearest-exact"),
    ],
)
def test_every_downsampling_function_is_torchs_interpolate_mode(function, mode):
    tokens = redux_grid_tokens(1)
    out = shape_tokens(tokens, TokenShaping(2.0, function, 1.0))
    assert out.shape == (14 * 14, WIDTH)  # round(27 / 2) = round(13.5) = 14
    assert torch.equal(out, resized(tokens, 14, mode))


def test_factor_one_and_weight_one_leave_the_tokens_untouched():
    tokens = redux_grid_tokens(2)
    assert shape_tokens(tokens, TokenShaping()) is tokens
    assert torch.equal(shape_tokens(tokens, TokenShaping(weight=0.5)), tokens * 0.25)
    assert [grid_side(27, f) for f in (1.0, 3.0, 4.5, 9.0)] == [27, 9, 6, 3]
    assert grid_side(4, 9.0) == 1  # a tiny grid keeps at least one token


def test_concat_with_factors_3_and_1_gives_81_plus_729_tokens():
    first, second = redux_grid_tokens(3), redux_grid_tokens(4)
    blocks = [shape_tokens(first, TokenShaping(3.0)), shape_tokens(second, TokenShaping())]
    out = blend(blocks, "concat", blend_scales("concat", (70, 30)))
    assert out.shape == (1, 81 + 729, WIDTH)
    assert torch.equal(out[0, :81], 0.7 * resized(first, 9, "area"))
    assert torch.equal(out[0, 81:], 0.3 * second)


def test_average_with_mismatched_grids_or_biases_is_refused_with_what_to_do():
    mismatched = (TokenShaping(3.0), TokenShaping())
    with pytest.raises(InputError, match="9×9 and 27×27") as error:
        check_average("average", mismatched, (0.0, 0.0), REDUX_GRID)
    assert "same downsampling factor" in str(error.value)
    assert "Concatenation" in str(error.value)
    with pytest.raises(InputError, match="same attention bias"):
        check_average("average", (TokenShaping(), TokenShaping()), (-1.0, 0.0), REDUX_GRID)
    # Different factors with the same grid, one reference, or concatenation are fine.
    check_average("average", (TokenShaping(8.9), TokenShaping(9.0)), (0.0, 0.0), REDUX_GRID)
    check_average("average", mismatched[:1], (-1.0,), REDUX_GRID)
    check_average("concat", mismatched, (-1.0, 0.0), REDUX_GRID)


def test_reference_biases_add_the_own_bias_to_the_balance():
    assert reference_biases(0.5, (0.0, 0.0)) is None
    assert reference_biases(0.5, (0.0, -1.5)) == (0.0, -1.5)
    low = reference_biases(0.75, (0.5, -1.0))
    assert low == pytest.approx((math.log(0.5) + 0.5, math.log(0.5) - 1.0))
    assert reference_biases(1.0, (2.0, 0.0)) == (-math.inf, -math.inf)


# Preprocessing ------------------------------------------------------------------------------


def test_keep_aspect_letterboxes_a_wide_image_with_black_bars_top_and_bottom():
    image = torch.full((1, 3, 60, 120), 0.8)
    image[..., :30] = 0.2  # the left quarter, which a centre crop cuts away
    out = preprocess(image, 56, "letterbox")
    assert out.shape == (1, 3, 56, 56)
    # 120 x 60 scales to 56 x 28, centred: 14 black rows above and below (black is -1).
    assert (out[..., :14, :] == -1).all() and (out[..., 42:, :] == -1).all()
    picture = out[..., 14:42, :]
    assert (picture > -1).all()
    assert picture[..., 4:10].mean() == pytest.approx(-0.6, abs=0.02)  # the left quarter
    assert picture[..., 30:50].mean() == pytest.approx(0.6, abs=0.02)
    assert (preprocess(image, 56, "center") > 0).all()  # the centre crop lost the left quarter
    tall = preprocess(image.transpose(-1, -2), 56, "letterbox")
    assert (tall[..., :14] == -1).all() and (tall[..., 42:] == -1).all()


# Through the stages -------------------------------------------------------------------------


def previous_path(studio, recipe: Recipe):
    """The positive embeddings as the code before ReduxAdvanced built them, written out."""
    images = [studio.env.images.load(digest) for digest in studio.digests[:2]]
    features = siglip_features(build_tiny_siglip(), images)
    per_reference = redux_tokens(build_tiny_redux(), features)
    mode = recipe.redux.mode
    tokens = blend(per_reference, mode, blend_scales(mode, (70, 30)))
    text = FixedText().run(None, {"prompt": recipe.prompt.prompt}, {}).positive
    bias = balance_bias(recipe.redux.prompt_balance)
    token_bias = None
    if bias is not None:
        token_bias = torch.cat([torch.zeros(TEXT), torch.full((tokens.shape[1],), bias)])
    return torch.cat([text.tokens, tokens], dim=1), token_bias


@pytest.mark.parametrize(("mode", "balance"), [("average", 0.5), ("concat", 0.5), ("concat", 0.8)])
def test_the_defaults_give_bit_identical_embeddings_to_the_previous_path(studio, mode, balance):
    recipe = set_path(set_path(studio.recipe, "redux.mode", mode), "redux.prompt_balance", balance)
    run_graph(studio, recipe)
    positive = studio.sink.seen.positive
    tokens, token_bias = previous_path(studio, recipe)
    assert torch.equal(positive.tokens, tokens)
    if token_bias is None:
        assert positive.token_bias is None  # no mask: the fast attention kernels stay
    else:
        assert torch.equal(positive.token_bias, token_bias)


def test_downsampling_in_the_stage_shortens_that_reference_only(studio):
    recipe = set_path(studio.recipe, "redux.mode", "concat")
    run_graph(studio, recipe)
    full = studio.sink.seen.positive.tokens
    run_graph(studio, set_path(recipe, "redux.advanced2.downsampling_factor", 2.0))
    short = studio.sink.seen.positive.tokens
    assert short.shape == (1, TEXT + N + 4, T5_WIDTH)  # 4 x 4 -> 2 x 2
    assert torch.equal(short[:, : TEXT + N], full[:, : TEXT + N])
    second = full[0, TEXT + N :] / 0.3  # reference 2's tokens before its strength
    expected = 0.3 * F.avg_pool2d(second.T.reshape(1, T5_WIDTH, 4, 4), 2)
    assert torch.allclose(short[0, TEXT + N :], expected.reshape(T5_WIDTH, 4).T, atol=1e-5)


def test_average_with_mismatched_grids_is_refused_before_siglip_runs(studio):
    recipe = set_path(studio.recipe, "redux.advanced1.downsampling_factor", 3.0)
    with pytest.raises(InputError, match="same downsampling factor"):
        run_graph(studio, recipe)
    assert studio.env.engine.redux_models.load_counts() == {"siglip": 0, "redux": 0}
    both = set_path(recipe, "redux.advanced2.downsampling_factor", 3.0)
    run_graph(studio, both)  # the same factor for both averages fine: 4 x 4 -> 1 x 1
    assert studio.sink.seen.positive.tokens.shape == (1, TEXT + 1, T5_WIDTH)


def test_an_own_bias_lands_on_exactly_that_references_columns(studio):
    recipe = set_path(studio.recipe, "redux.mode", "concat")
    recipe = set_path(recipe, "redux.advanced2.attention_bias", -1.5)
    recipe = set_path(recipe, "redux.advanced2.downsampling_factor", 2.0)  # 4 columns
    run_graph(studio, recipe)
    bias = studio.sink.seen.positive.token_bias
    assert bias.shape == (TEXT + N + 4,) and bias.dtype == torch.float32
    assert not bias[: TEXT + N].any()
    assert (bias[TEXT + N :] == -1.5).all()
    run_graph(studio, set_path(recipe, "redux.prompt_balance", 0.75))
    bias = studio.sink.seen.positive.token_bias
    assert not bias[:TEXT].any()
    assert torch.allclose(bias[TEXT : TEXT + N], torch.full((N,), math.log(0.5)))
    assert torch.allclose(bias[TEXT + N :], torch.full((4,), math.log(0.5) - 1.5))
    run_graph(studio, set_path(recipe, "redux.prompt_balance", 1.0))
    assert torch.isinf(studio.sink.seen.positive.token_bias[TEXT:]).all()  # -inf stays


def test_an_average_takes_the_bias_both_references_share(studio):
    recipe = set_path(studio.recipe, "redux.advanced1.attention_bias", -1.0)
    with pytest.raises(InputError, match="same attention bias"):
        run_graph(studio, recipe)
    run_graph(studio, set_path(recipe, "redux.advanced2.attention_bias", -1.0))
    bias = studio.sink.seen.positive.token_bias
    assert bias.shape == (TEXT + N,)
    assert not bias[:TEXT].any() and (bias[TEXT:] == -1.0).all()


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("redux.advanced1.downsampling_factor", 2.0, ["redux", "base"]),
        ("redux.advanced2.weight", 0.5, ["redux", "base"]),
        ("redux.advanced1.attention_bias", -1.0, ["redux", "base"]),
        ("redux.advanced1.image_mode", "keep_aspect", ["vision", "redux", "base"]),
        ("redux.advanced1.downsampling_function", "bicubic", []),  # factor 1: no effect
    ],
)
def test_advanced_settings_rerun_only_the_stages_they_touch(studio, path, value, expected):
    recipe = set_path(studio.recipe, "redux.mode", "concat")
    run_graph(studio, recipe)
    before = studio.sink.seen.positive
    report = run_graph(studio, set_path(recipe, path, value))
    assert report.ran_names == expected
    after = studio.sink.seen.positive
    changed = not torch.equal(after.tokens, before.tokens) or after.token_bias is not None
    assert changed == bool(expected)
    assert studio.env.engine.redux_models.load_counts() == {"siglip": 1, "redux": 1}  # warm


def test_the_function_counts_once_the_factor_downsamples(studio):
    recipe = set_path(studio.recipe, "redux.advanced1.downsampling_factor", 2.0)
    recipe = set_path(recipe, "redux.advanced2.downsampling_factor", 2.0)
    run_graph(studio, recipe)
    report = run_graph(studio, set_path(recipe, "redux.advanced1.downsampling_function", "nearest"))
    assert report.ran_names == ["redux", "base"]


# The recipe ---------------------------------------------------------------------------------


def test_an_old_recipe_without_the_new_keys_loads_with_the_defaults():
    data = json.loads(recipe_to_json(Recipe()))
    del data["redux"]["advanced1"], data["redux"]["advanced2"]
    data["redux"].update(enabled=True, strength1=55, mode="concat")
    recipe = recipe_from_json(json.dumps(data))
    assert recipe.redux.strength1 == 55 and recipe.redux.mode == "concat"
    assert recipe.redux.advanced1 == recipe.redux.advanced2 == ReduxAdvancedParams()
    defaults = ReduxAdvancedParams()
    assert (defaults.downsampling_factor, defaults.downsampling_function) == (1.0, "area")
    assert (defaults.weight, defaults.image_mode, defaults.attention_bias) == (
        1.0,
        "center_crop",
        0.0,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("downsampling_factor", 9.5),
        ("downsampling_factor", 0.5),
        ("downsampling_function", "nearest-exact"),  # the id is nearest_exact
        ("weight", 1.2),
        ("image_mode", "autocrop"),
        ("attention_bias", -4.5),
    ],
)
def test_out_of_range_advanced_values_are_refused_by_field(field, value):
    text = json.dumps({"redux": {"advanced2": {field: value}}})
    with pytest.raises(RecipeError, match=f"redux.advanced2.{field}"):
        recipe_from_json(text)
