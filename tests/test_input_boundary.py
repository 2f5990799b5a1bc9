"""The input boundary: hostile recipes, PNG text and LoRA metadata get a message, never a crash."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from bad_inputs import png_with_text
from engine.cli import main
from engine.errors import InputError, RecipeError, StudioError
from engine.input_limits import (
    MAX_JSON_DEPTH,
    MAX_PNG_TEXT_BYTES,
    MAX_PROMPT_CHARS,
    MAX_RECIPE_BYTES,
    check_name,
    parse_json_document,
)
from engine.lora.files import metadata_triggers
from engine.lora.stack import LoraStack
from engine.metadata import PARAMETERS_KEY, RECIPE_KEY, recipe_from_png
from engine.recipe import Recipe
from engine.recipe_json import get_path, recipe_from_json, set_path

DEEP = "[" * 100_000


def refused(text: str | bytes) -> str:
    with pytest.raises(RecipeError) as info:
        recipe_from_json(text)
    return str(info.value)


@pytest.mark.parametrize("text", [DEEP, '{"a":' * 10_000 + "1" + "}" * 10_000])
def test_deep_nesting_names_the_depth_limit(text):
    assert f"deeper than {MAX_JSON_DEPTH} levels" in refused(text)


def test_depth_just_over_the_limit_is_refused_and_a_real_recipe_passes():
    depth = MAX_JSON_DEPTH + 1
    assert f"deeper than {MAX_JSON_DEPTH}" in refused("[" * depth + "]" * depth)
    assert recipe_from_json('{"color": {"tone": {"contrast": 1.2}}}').color.tone.contrast == 1.2


def test_a_huge_document_names_the_size_and_the_limit():
    message = refused(" " * MAX_RECIPE_BYTES + "{}")
    assert f"{MAX_RECIPE_BYTES + 2:,} bytes" in message and f"{MAX_RECIPE_BYTES:,}" in message


def test_the_cli_prints_a_json_line_for_a_hostile_recipe(tmp_path, capsys):
    deep, twice = tmp_path / "deep.json", tmp_path / "twice.json"
    deep.write_text(DEEP)
    twice.write_text('{"settings": {"seed": 1, "seed": 2}}')
    args = ["render", str(deep), str(twice), "--tiny", "--no-save"]
    code = main([*args, "--outputs", str(tmp_path / "o"), "--data", str(tmp_path / "d")])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1 and [line["ok"] for line in lines] == [False, False]
    assert f"deeper than {MAX_JSON_DEPTH} levels" in lines[0]["error"]
    assert "'seed' twice in settings" in lines[1]["error"]


def test_duplicate_keys_are_refused_with_key_and_path():
    assert "the key 'seed' twice in settings" in refused('{"settings": {"seed": 1, "seed": 2}}')
    assert "'prompt' twice at the top level" in refused('{"prompt": {}, "prompt": {}}')
    message = refused('{"prompt": {"loras": [{"file": "a", "file": "b"}]}}')
    assert "'file' twice in prompt.loras[0]" in message


def test_a_utf8_bom_is_accepted_from_text_and_bytes():
    doc = '{"settings": {"seed": 7}}'
    assert recipe_from_json("\ufeff" + doc).settings.seed == 7
    assert recipe_from_json(b"\xef\xbb\xbf" + doc.encode()).settings.seed == 7


def test_a_bom_file_reads_through_the_cli_path(tmp_path):
    from engine.metadata import read_recipe_file

    path = tmp_path / "bom.txt"  # no .json suffix: recognised by its first character
    path.write_bytes(b"\xef\xbb\xbf{}")
    assert read_recipe_file(path) == Recipe()


@pytest.mark.parametrize("text", ["", "   \n", b"", b"\xef\xbb\xbf", "\ufeff "])
def test_empty_text_says_to_send_an_empty_object(text):
    assert refused(text) == (
        "The recipe is empty. Send {} (an empty JSON object) for the default recipe."
    )


def test_an_empty_recipe_file_gets_the_same_message(tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    code = main(["render", str(empty), "--tiny", "--no-save", "--outputs", str(tmp_path)])
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert code == 1 and line["error"] == refused("")


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_a_lone_surrogate_is_refused_naming_the_field(field):
    message = refused(json.dumps({"prompt": {field: "ab\ud800cd"}}))
    assert f"prompt.{field}: character 3 is a lone UTF-16 surrogate" in message
    assert "U+D800" in message


def test_nul_and_control_characters_are_refused_but_line_breaks_pass():
    message = refused(json.dumps({"prompt": {"prompt": "a\x00b"}}))
    assert "prompt.prompt: character 2 is a NUL character (U+0000)" in message
    assert "U+001B" in refused(json.dumps({"prompt": {"negative_prompt": "\x1b[31m"}}))
    ok = recipe_from_json(json.dumps({"prompt": {"prompt": "a\tb\r\nc"}}))
    assert ok.prompt.prompt == "a\tb\r\nc"


def test_string_lengths_are_capped_with_limit_and_length():
    huge = "x" * 20_000_001
    with pytest.raises(RecipeError) as info:
        set_path(Recipe(), "prompt.prompt", huge)
    assert f"prompt.prompt: 20,000,001 characters; the limit is {MAX_PROMPT_CHARS:,}" in str(
        info.value
    )
    assert set_path(Recipe(), "prompt.prompt", "x" * MAX_PROMPT_CHARS).prompt.prompt
    message = refused(json.dumps({"prompt": {"loras": [{"trigger": "w" * 1025}]}}))
    assert "prompt.loras[0].trigger: 1,025 characters; the limit is 1,024" in message


def test_a_png_with_a_huge_parameters_chunk_is_refused():
    for compressed in (False, True):
        data = png_with_text(PARAMETERS_KEY, "a portrait, " * 200_000, compressed)  # 2.4 MB
        with pytest.raises(RecipeError) as error:
            recipe_from_png(data, "big.png")
        assert "big.png's 'parameters' text is" in str(error.value)
        assert f"the limit is {MAX_PNG_TEXT_BYTES:,} bytes" in str(error.value)


def test_png_recipe_text_passes_the_recipe_rules():
    info = PngImagePlugin.PngInfo()
    info.add_itxt(RECIPE_KEY, json.dumps({"prompt": {"prompt": "p" * (MAX_PROMPT_CHARS + 1)}}))
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    with pytest.raises(RecipeError, match="prompt.prompt: 20,001 characters"):
        recipe_from_png(buffer.getvalue())


def _tiny_lora(path: Path, metadata: dict[str, str]) -> Path:
    import torch
    from safetensors.torch import save_file

    module = "transformer.single_transformer_blocks.0.attn.to_q"
    tensors = {
        f"{module}.lora_A.weight": torch.zeros(4, 32),
        f"{module}.lora_B.weight": torch.zeros(32, 4),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_deeply_nested_lora_metadata_gives_no_trigger_words(tmp_path, caplog):
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    _tiny_lora(tmp_path / "loras" / "deep.safetensors", {"ss_tag_frequency": deep})
    _tiny_lora(tmp_path / "loras" / "list.safetensors", {"trigger_words": DEEP})
    stack = LoraStack(tmp_path / "loras")
    assert stack.trigger_words("deep.safetensors") == []
    assert stack.trigger_words("list.safetensors") == []
    assert f"deeper than {MAX_JSON_DEPTH} levels" in caplog.text


def test_good_lora_metadata_still_gives_its_words():
    tags = json.dumps({"10_frckls": {"frckls": 12, "woman": 5, "odd": float("inf")}})
    assert metadata_triggers({"ss_tag_frequency": tags}) == ["frckls"]
    assert metadata_triggers({"trigger_words": '["ohwx", "skin\\u0000x"]'}) == ["ohwx"]
    assert metadata_triggers({"modelspec.trigger_phrase": "ohwx, portrait"}) == ["ohwx", "portrait"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("color.lut.file", "../x.cube"),
        ("color.lut.file", "sub/x.cube"),
        ("upscale.first.model", "../../etc/passwd"),
        ("upscale.final.model", "/abs/4x.pth"),
        ("model.vae", "C:ae.safetensors"),
        ("redux.image1", "../x.png"),
        ("source.image", "sha256:" + "0" * 63 + "G"),
        ("expression.sample_image", "/etc/passwd"),
    ],
)
def test_names_in_switched_off_sections_are_still_checked(path, value):
    section, _, field = path.rpartition(".")
    doc: dict = {}
    node = doc
    for part in section.split("."):
        node = node.setdefault(part, {})
    if hasattr(get_path(Recipe(), section), "enabled"):
        node["enabled"] = False
    node[field] = value
    message = refused(json.dumps(doc))
    assert path in message and repr(value) in message


def test_a_switched_off_lora_slot_with_dotdot_is_refused():
    message = refused('{"prompt": {"loras": [{"file": "../x.safetensors", "enabled": false}]}}')
    assert "prompt.loras[0].file: '../x.safetensors' is not a file name inside" in message


def test_good_names_pass():
    digest = "sha256:" + "ab" * 32
    assert check_name(digest, "source.image", "digest") is None
    assert check_name("sub/skin.safetensors", "prompt.loras[0].file", "relative_name") is None
    assert check_name("teal_orange.cube", "color.lut.file", "plain_name") is None
    assert set_path(Recipe(), "redux.image2", digest).redux.image2 == digest


def test_parse_json_document_is_a_studio_error_for_every_bad_input():
    for text in (DEEP, "{", "1" * 5000, b"\xff\xfe\x00", '{"a": 1, "a": 1}'):
        with pytest.raises(StudioError):
            parse_json_document(text, "The test document")


def test_a_recipe_file_over_the_upload_limit_is_refused_without_reading_it_all(
    tmp_path, monkeypatch
):
    import engine.metadata as metadata

    monkeypatch.setattr(metadata, "MAX_UPLOAD_BYTES", 2 * 2**20)
    big = tmp_path / "big.json"
    big.write_text("{" + " " * 3 * 2**20 + "}")
    with pytest.raises(InputError, match="big.json is over 2 MB"):
        metadata.read_recipe_file(big)
