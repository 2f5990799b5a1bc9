"""The Upscale tab's captioner: JoyCaption Beta One prompts, finding its folder, captioning.

Expected prompts are the strings JoyCaption Beta One's own code builds (fpgaminer/joycaption
gradio-app/app.py, fpgaminer/joycaption_comfyui nodes.py, and the suite's LayerStyle node);
captions come from a tiny random-weight LLaVA folder built in code.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine.errors import ModelNotFoundError, StudioError
from engine.upscale.caption import (
    JOYCAPTION_REPO_ID,
    Captioner,
    CaptionModelFiles,
    find_caption_model,
    include_trigger_words,
)
from engine.upscale.caption_prompts import (
    CAPTION_TYPES,
    EXTRA_OPTIONS,
    CaptionOptions,
    CaptionOptionsError,
    build_prompt,
)
from engine.upscale.tiny_llava import build_tiny_llava

PERSON = ("refer_character_name",)
STRAIGHTFORWARD_MEDIUM = (
    "Write a medium-length straightforward caption for this image. Begin with the main "
    "subject and medium. Mention pivotal elements\u2014people, objects, scenery\u2014using "
    "confident, definite language. Focus on concrete details like color, shape, texture, and "
    "spatial relationships. Show how elements interact. Omit mood and speculative wording. If "
    "text is present, quote it exactly. Note any watermarks, signatures, or compression "
    "artifacts. Never mention what's absent, resolution, or unobservable details. Vary your "
    "sentence structure and keep the description concise, without starting with \u201cThis "
    "image is\u2026\u201d or similar phrasing."
)
PROMPT_CASES = [
    ({}, "Write a detailed description for this image."),
    ({"caption_length": "long"}, "Write a long detailed description for this image."),
    ({"caption_length": 40}, "Write a detailed description for this image in 40 words or less."),
    (
        {"caption_type": "Straightforward", "caption_length": "medium-length"},
        STRAIGHTFORWARD_MEDIUM,
    ),
    (
        {"caption_type": "Danbooru tag list", "caption_length": "short"},
        "Generate only comma-separated Danbooru tags (lowercase_underscores). Strict order: "
        "`artist:`, `copyright:`, `character:`, `meta:`, then general tags. Include counts "
        "(1girl), appearance, clothing, accessories, pose, expression, actions, background. "
        "Use precise Danbooru syntax. No extra text. short length.",
    ),
    (
        {"caption_type": "Art Critic", "caption_length": "80"},
        "Analyze this image like an art critic would with information about its composition, "
        "style, symbolism, the use of color, light, any artistic movement it might belong to, "
        "etc. Keep it within 80 words.",
    ),
    (
        {"caption_type": "Social Media Post", "caption_length": "20"},
        "Write a caption for this image as if it were being used for a social media post. "
        "Limit the caption to 20 words.",
    ),
    (
        {
            "caption_type": "Stable Diffusion Prompt",
            "caption_length": "very long",
            "extra_options": (
                "specify_lighting_sources",
                "include_camera_angle",
                "include_lighting",
            ),
        },
        "Output a very long stable diffusion prompt that is indistinguishable from a real stable "
        "diffusion prompt. Include information about lighting. Include information about camera "
        "angle. If applicable, mention the likely use of artificial or natural lighting sources.",
    ),
    (
        {
            "caption_type": "Descriptive (Casual)",
            "extra_options": ("refer_character_name", "avoid_meta_descriptive_phrases"),
            "name": "Anna",
        },
        "Write a descriptive caption for this image in a casual tone. If there is a "
        "person/character in the image you must refer to them as Anna. Your response will be "
        "used by a text-to-image model, so avoid useless meta phrases like \u201cThis image "
        'shows\u2026\u201d, "You are looking at...", etc.',
    ),
]


@pytest.mark.parametrize(("fields", "expected"), PROMPT_CASES)
def test_prompt_matches_joycaption_templates(fields: dict, expected: str) -> None:
    assert build_prompt(CaptionOptions(**fields)) == expected


def test_every_type_has_three_templates_with_their_placeholders() -> None:
    assert len(CAPTION_TYPES) == 12 and len(EXTRA_OPTIONS) == 27
    for any_length, word_count, named_length in CAPTION_TYPES.values():
        assert "{" not in any_length and "{word_count}" in word_count and "{length}" in named_length


def test_user_prompt_replaces_the_template_and_keeps_extras() -> None:
    options = CaptionOptions(
        caption_type="MidJourney",
        caption_length="short",
        user_prompt="  Describe the portrait {on white}.  ",
        extra_options=("include_camera_angle",),
    )
    expected = "Describe the portrait {on white}. Include information about camera angle."
    assert build_prompt(options) == expected
    blank = CaptionOptions(caption_type="MidJourney", user_prompt="   ")
    assert build_prompt(blank) == "Write a MidJourney prompt for this image."


def test_trigger_words_name_the_person_and_lead_the_caption() -> None:
    options = CaptionOptions(extra_options=PERSON, trigger_words=(" ohwx woman ", "", "ohwx woman"))
    assert options.trigger_words == ("ohwx woman",)
    assert build_prompt(options).endswith("you must refer to them as ohwx woman.")
    named = CaptionOptions(extra_options=PERSON, name="Anna", trigger_words=("x",))
    assert build_prompt(named).endswith("refer to them as Anna.")
    assert include_trigger_words("A portrait.", ("ohwx", "PORTRAIT")) == "ohwx, A portrait."
    assert include_trigger_words("", ("ohwx", "film")) == "ohwx, film"
    assert include_trigger_words("ohwx at a party", ("ohwx", "art")) == "art, ohwx at a party"


def test_options_are_normalised_and_hashable() -> None:
    first = CaptionOptions(caption_length=40, extra_options=["include_lighting", "exclude_text"])
    second = CaptionOptions(caption_length="40", extra_options=("exclude_text", "include_lighting"))
    assert first == second and hash(first) == hash(second)
    assert first.caption_length == "40" and first.extra_options[0] == "include_lighting"


@pytest.mark.parametrize(
    "fields",
    [
        {"caption_type": "Poem"},
        {"caption_length": "medium"},
        {"caption_length": "0"},
        {"caption_length": 5000},
        {"caption_length": True},
        {"max_new_tokens": 0},
        {"max_new_tokens": 4096},
        {"max_new_tokens": 12.0},
        {"top_p": 1.5},
        {"temperature": -0.1},
        {"temperature": math.nan},
        {"temperature": 2.5},
        {"seed": -1},
        {"extra_options": ("make_it_pretty",)},
        {"extra_options": "include_lighting"},
        {"extra_options": PERSON},
        {"trigger_words": "ohwx"},
        {"user_prompt": None},
    ],
)
def test_invalid_options_are_refused(fields: dict) -> None:
    with pytest.raises(CaptionOptionsError) as caught:
        CaptionOptions(**fields)
    assert isinstance(caught.value, StudioError) and isinstance(caught.value, ValueError)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny") / "tiny-llava")


@pytest.fixture(scope="module")
def captioner(tiny_folder: Path) -> Captioner:
    return Captioner.load(find_caption_model(None, folder=tiny_folder), "cpu")


@pytest.fixture
def portrait() -> Image.Image:
    image = Image.new("RGB", (320, 480), (180, 140, 120))
    image.paste((40, 60, 90), (100, 120, 220, 360))
    return image


def copy_of(folder: Path, destination: Path) -> Path:
    return Path(shutil.copytree(folder, destination))


def test_found_in_each_comfy_folder(tiny_folder: Path, tmp_path: Path) -> None:
    layouts = [
        "LLavacheckpoints/llama-joycaption-beta-one-hf-llava",
        "LLM/llama-joycaption-beta-one-hf-llava",
        "LLM_llava/fancyfeast--llama-joycaption-beta-one-hf-llava",
        "llm/My-JoyCaption-Copy",
    ]
    for index, layout in enumerate(layouts):
        models = tmp_path / f"models{index}"
        (models / "LLM").mkdir(parents=True, exist_ok=True)
        (models / "LLM" / "some-other-llm").mkdir()  # not a JoyCaption folder: never taken
        copy_of(tiny_folder, models / layout)
        files = find_caption_model(models)
        assert files.folder == models / layout
        assert files.label == layout


def test_found_in_the_hugging_face_cache(tiny_folder: Path, tmp_path: Path) -> None:
    repo = tmp_path / "hub" / ("models--" + JOYCAPTION_REPO_ID.replace("/", "--"))
    snapshot = copy_of(tiny_folder, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    files = find_caption_model(tmp_path / "empty-models", cache_dir=tmp_path / "hub")
    assert files.folder == snapshot and JOYCAPTION_REPO_ID in files.label


def test_nothing_found_says_where_it_looked_and_where_to_put_it(tmp_path: Path) -> None:
    (tmp_path / "LLM").mkdir()
    with pytest.raises(ModelNotFoundError) as caught:
        find_caption_model(tmp_path, cache_dir=tmp_path / "no-hub")
    message = str(caught.value)
    assert str(tmp_path / "LLavacheckpoints") in message and str(tmp_path / "LLM") in message
    assert "LLavacheckpoints/llama-joycaption-beta-one-hf-llava" in message
    assert JOYCAPTION_REPO_ID in message


def test_identity_follows_the_weights(tiny_folder: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_folder, tmp_path / "copy")
    first = find_caption_model(None, folder=folder)
    assert find_caption_model(None, folder=folder).identity == first.identity
    weights = folder / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert find_caption_model(None, folder=folder).identity != first.identity


def test_missing_config_names_the_folder(tiny_folder: Path, tmp_path: Path) -> None:
    folder = copy_of(
        tiny_folder, tmp_path / "LLavacheckpoints" / "llama-joycaption-beta-one-hf-llava"
    )
    (folder / "config.json").unlink()
    for find in (
        lambda: find_caption_model(None, folder=folder),
        lambda: find_caption_model(tmp_path),
    ):
        with pytest.raises(ModelNotFoundError) as caught:
            find()
        assert str(folder) in str(caught.value) and "config.json" in str(caught.value)


def test_truncated_weights_name_the_folder(tiny_folder: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_folder, tmp_path / "LLM" / "llama-joycaption-beta-one-hf-llava")
    files = find_caption_model(tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelNotFoundError) as caught:
        find_caption_model(tmp_path)
    assert str(folder) in str(caught.value) and "model.safetensors" in str(caught.value)
    with pytest.raises(ModelNotFoundError, match="damaged weights"):
        Captioner.load(files, "cpu")  # broken after it was found


def test_a_missing_folder_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        Captioner.load(CaptionModelFiles(missing, "x", "x"), "cpu")


def test_caption_is_a_seeded_string(captioner: Captioner, portrait: Image.Image) -> None:
    state = torch.get_rng_state()
    options = CaptionOptions(max_new_tokens=12, temperature=0.6, seed=7)
    caption = captioner.caption(portrait, options)
    assert isinstance(caption, str) and caption == caption.strip()
    assert captioner.caption(portrait, options) == caption
    others = {
        captioner.caption(portrait, CaptionOptions(max_new_tokens=12, seed=s)) for s in (1, 2)
    }
    assert len(others | {caption}) > 1
    assert torch.equal(torch.get_rng_state(), state)  # the global generator was left alone


def test_caption_respects_max_new_tokens(captioner: Captioner, portrait: Image.Image) -> None:
    short = captioner.caption(portrait, CaptionOptions(max_new_tokens=4, temperature=0))
    long = captioner.caption(portrait, CaptionOptions(max_new_tokens=24, temperature=0))
    assert len(short) <= 4 < len(long) <= 24  # the tiny tokenizer has one token per character
    assert long.startswith(short)  # greedy: the longer answer continues the shorter one


def test_caption_carries_the_trigger_words(captioner: Captioner, portrait: Image.Image) -> None:
    options = CaptionOptions(max_new_tokens=6, temperature=0, trigger_words=("ohwx",))
    assert captioner.caption(portrait, options).startswith("ohwx, ")


def test_chat_text_has_the_system_prompt_and_the_image(captioner: Captioner) -> None:
    text = captioner.chat_text(" Write a long detailed description for this image. ")
    assert "You are a helpful assistant and help users with any queries" in text
    assert "<image>Write a long detailed description for this image.<|eot_id|>" in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
