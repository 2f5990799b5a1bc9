"""Uploads and metadata: bad images get clear messages; PNG metadata round-trips."""

import io

import pytest
from PIL import Image

from bad_inputs import corrupt_png, not_an_image, png_claiming
from engine.errors import InputError, RecipeError
from engine.images import ImageStore, open_checked, pil_to_tensor, tensor_to_pil
from engine.metadata import (
    PARAMETERS_KEY,
    png_bytes,
    read_recipe_file,
    recipe_from_parameters,
    recipe_from_png,
)
from engine.outputs import save_outputs
from engine.recipe import Recipe
from engine.recipe_json import set_path


def test_header_claiming_50000_squared_is_refused_before_decoding():
    with pytest.raises(InputError) as info:
        open_checked(png_claiming(50000, 50000), "huge.png")
    assert "huge.png" in str(info.value) and "8192×8192" in str(info.value)


def test_header_just_over_the_limit_names_the_size():
    with pytest.raises(InputError, match="claims 9000×9000 pixels"):
        open_checked(png_claiming(9000, 9000), "big.png")


@pytest.mark.parametrize("data", [corrupt_png(), not_an_image(), b""])
def test_corrupt_or_foreign_files(data):
    with pytest.raises(InputError, match="upload again|damaged"):
        open_checked(data, "upload.png")


def test_store_is_content_addressed(tmp_path):
    store = ImageStore(tmp_path)
    image = Image.effect_noise((32, 16), 40).convert("RGB")
    png, jpg_as_png = io.BytesIO(), io.BytesIO()
    image.save(png, format="PNG")
    image.save(jpg_as_png, format="BMP")
    digest = store.put(png.getvalue())
    assert digest.startswith("sha256:") and digest == store.put(jpg_as_png.getvalue())
    assert store.load(digest).tobytes() == image.tobytes()
    with pytest.raises(InputError, match="not in this studio's image store"):
        store.require("sha256:" + "0" * 64)
    with pytest.raises(InputError, match="not an image digest"):
        store.require("../../etc/passwd")


def test_rgba_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    store = ImageStore(tmp_path)
    assert store.load(store.put(buffer.getvalue())).getpixel((0, 0)) == (255, 255, 255)


def test_tensor_pil_round_trip_is_exact():
    image = Image.effect_noise((16, 8), 60).convert("RGB")
    assert tensor_to_pil(pil_to_tensor([image], "cpu"))[0].tobytes() == image.tobytes()


def test_png_metadata_round_trip():
    recipe = set_path(Recipe(), "settings.seed", 1234)
    recipe = set_path(recipe, "color.tone.contrast", 1.3)
    data = png_bytes(Image.new("RGB", (8, 8)), recipe, "tiny demo")
    assert recipe_from_png(data) == recipe
    text = Image.open(io.BytesIO(data)).info[PARAMETERS_KEY]
    assert text.startswith(recipe.prompt.prompt)
    assert "Seed: 1234" in text and "Steps: 25" in text and "Size: 1024x1024" in text


def test_saved_batch_images_carry_their_own_seed(tmp_path):
    recipe = set_path(set_path(Recipe(), "settings.seed", 40), "prompt.batch_size", 3)
    images = [Image.new("RGB", (8, 8), (i * 60, 0, 0)) for i in range(3)]
    paths = save_outputs(images, recipe, tmp_path)
    restored = [read_recipe_file(p) for p in paths]
    assert [r.settings.seed for r in restored] == [40, 41, 42]
    assert {r.prompt.batch_size for r in restored} == {1}
    assert len(set(paths)) == 3 and not list(tmp_path.glob(".tmp-*"))
    again = save_outputs(images[:1], recipe, tmp_path)  # same second: never overwrites
    assert again[0] not in paths


def test_png_without_recipe_and_a1111_parameters():
    plain = io.BytesIO()
    Image.new("RGB", (8, 8)).save(plain, format="PNG")
    with pytest.raises(RecipeError, match="carries no recipe"):
        recipe_from_png(plain.getvalue())
    text = "a portrait\nNegative prompt: blur\nSteps: 20, Seed: 77, Size: 832x1216, Foo: 1"
    recipe = recipe_from_parameters(text)
    assert (recipe.prompt.prompt, recipe.prompt.negative_prompt) == ("a portrait", "blur")
    assert (recipe.settings.steps, recipe.settings.seed) == (20, 77)
    assert (recipe.prompt.width, recipe.prompt.height) == (832, 1216)


def test_recipe_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"settings": {"steps": "many"}}')
    with pytest.raises(RecipeError, match="settings.steps"):
        read_recipe_file(bad)
    with pytest.raises(InputError, match="Cannot read"):
        read_recipe_file(tmp_path / "missing.json")
