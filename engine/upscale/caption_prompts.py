"""JoyCaption Beta One prompts: caption types, lengths, extra options, and the prompt builder.

Sources (read, not copied; they agree on every sentence here): fpgaminer/joycaption
gradio-app/app.py (the author's Beta One demo: templates per type in three forms, any length /
word count / named length, the extra sentences, build_prompt: template + chosen sentences
joined by spaces, then {name}, {length}, {word_count} filled in); fpgaminer/joycaption_comfyui
nodes.py (same data, the system prompt, defaults 512 tokens, temperature 0.6, top_p 0.9);
chflame163/ComfyUI_LayerStyle_Advance py/joycaption_beta_1.py (the suite's "JoyCaption Beta
One" and extra-options nodes: the option keys, their fixed order, and user_prompt replacing
the template while the extra sentences still follow; its avoid_meta_descriptive_phrases
sentence starts with a stray quote that the author's has not, nor ours).

Ours, after the suite's note "refer_character_name - inject LoRA trigger words" (seed 000
section 9.2): {name} falls back to the trigger words, and caption.include_trigger_words puts
any trigger word a caption lacks in front of it (as the author's batch script's --prepend).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import RecipeError

_STRAIGHTFORWARD_RULES = (
    "Begin with the main subject and medium. Mention pivotal elements\u2014people, objects, "
    "scenery\u2014using confident, definite language. Focus on concrete details like color, "
    "shape, texture, and spatial relationships. Show how elements interact. Omit mood and "
    "speculative wording. If text is present, quote it exactly. Note any watermarks, "
    "signatures, or compression artifacts. Never mention what's absent, resolution, or "
    "unobservable details. Vary your sentence structure and keep the description concise, "
    "without starting with \u201cThis image is\u2026\u201d or similar phrasing."
)
_DANBOORU = (
    "Generate only comma-separated Danbooru tags (lowercase_underscores). Strict order: "
    "`artist:`, `copyright:`, `character:`, `meta:`, then general tags. Include counts "
    "(1girl), appearance, clothing, accessories, pose, expression, actions, background. Use "
    "precise Danbooru syntax. No extra text."
)
_E621 = (
    "comma-separated list of e621 tags in alphabetical order for this image. Start with the "
    "artist, copyright, character, species, meta, and lore tags (if any), prefixed by "
    "'artist:', 'copyright:', 'character:', 'species:', 'meta:', and 'lore:'. Then all the "
    "general tags."
)
_RULE34 = (
    "comma-separated list of rule34 tags in alphabetical order for this image. Start with the "
    "artist, copyright, character, and meta tags (if any), prefixed by 'artist:', "
    "'copyright:', 'character:', and 'meta:'. Then all the general tags."
)
_ART_CRITIC = (
    "Analyze this image like an art critic would with information about its composition, "
    "style, symbolism, the use of color, light, any artistic movement it might belong to, etc."
)
_SD = "stable diffusion prompt that is indistinguishable from a real stable diffusion prompt."

# Caption type -> (any length, a word count, a named length), in the nodes' order.
CAPTION_TYPES: dict[str, tuple[str, str, str]] = {
    "Descriptive": (
        "Write a detailed description for this image.",
        "Write a detailed description for this image in {word_count} words or less.",
        "Write a {length} detailed description for this image.",
    ),
    "Descriptive (Casual)": (
        "Write a descriptive caption for this image in a casual tone.",
        "Write a descriptive caption for this image in a casual tone within {word_count} words.",
        "Write a {length} descriptive caption for this image in a casual tone.",
    ),
    "Straightforward": (
        f"Write a straightforward caption for this image. {_STRAIGHTFORWARD_RULES}",
        "Write a straightforward caption for this image within {word_count} words. "
        + _STRAIGHTFORWARD_RULES,
        f"Write a {{length}} straightforward caption for this image. {_STRAIGHTFORWARD_RULES}",
    ),
    "Stable Diffusion Prompt": (
        f"Output a {_SD}",
        f"Output a {_SD} {{word_count}} words or less.",
        f"Output a {{length}} {_SD}",
    ),
    "MidJourney": (
        "Write a MidJourney prompt for this image.",
        "Write a MidJourney prompt for this image within {word_count} words.",
        "Write a {length} MidJourney prompt for this image.",
    ),
    "Danbooru tag list": (
        _DANBOORU,
        f"{_DANBOORU} {{word_count}} words or less.",
        f"{_DANBOORU} {{length}} length.",
    ),
    "e621 tag list": (
        f"Write a {_E621}",
        f"Write a {_E621} Keep it under {{word_count}} words.",
        f"Write a {{length}} {_E621}",
    ),
    "Rule34 tag list": (
        f"Write a {_RULE34}",
        f"Write a {_RULE34} Keep it under {{word_count}} words.",
        f"Write a {{length}} {_RULE34}",
    ),
    "Booru-like tag list": (
        "Write a list of Booru-like tags for this image.",
        "Write a list of Booru-like tags for this image within {word_count} words.",
        "Write a {length} list of Booru-like tags for this image.",
    ),
    "Art Critic": (
        _ART_CRITIC,
        f"{_ART_CRITIC} Keep it within {{word_count}} words.",
        f"{_ART_CRITIC} Keep it {{length}}.",
    ),
    "Product Listing": (
        "Write a caption for this image as though it were a product listing.",
        "Write a caption for this image as though it were a product listing. "
        "Keep it under {word_count} words.",
        "Write a {length} caption for this image as though it were a product listing.",
    ),
    "Social Media Post": (
        "Write a caption for this image as if it were being used for a social media post.",
        "Write a caption for this image as if it were being used for a social media post. "
        "Limit the caption to {word_count} words.",
        "Write a {length} caption for this image as if it were being used for a social media post.",
    ),
}
CAPTION_LENGTHS = ("any", "very short", "short", "medium-length", "long", "very long")
WORD_COUNT_CHOICES = tuple(range(20, 261, 10))  # the nodes' numeric lengths
MAX_WORD_COUNT = 1000

NAME_OPTION = "refer_character_name"
# Option key -> sentence, in the order the prompt lists them.
EXTRA_OPTIONS: dict[str, str] = {
    NAME_OPTION: "If there is a person/character in the image you must refer to them as {name}.",
    "exclude_people_info": "Do NOT include information about people/characters that cannot "
    "be changed (like ethnicity, gender, etc), but do still include changeable attributes "
    "(like hair style).",
    "include_lighting": "Include information about lighting.",
    "include_camera_angle": "Include information about camera angle.",
    "include_watermark": "Include information about whether there is a watermark or not.",
    "include_JPEG_artifacts": "Include information about whether there are JPEG artifacts or not.",
    "include_exif": "If it is a photo you MUST include information about what camera was "
    "likely used and details such as aperture, shutter speed, ISO, etc.",
    "exclude_sexual": "Do NOT include anything sexual; keep it PG.",
    "exclude_image_resolution": "Do NOT mention the image's resolution.",
    "include_aesthetic_quality": "You MUST include information about the subjective aesthetic "
    "quality of the image from low to very high.",
    "include_composition_style": "Include information on the image's composition style, such "
    "as leading lines, rule of thirds, or symmetry.",
    "exclude_text": "Do NOT mention any text that is in the image.",
    "specify_depth_field": "Specify the depth of field and whether the background is in focus "
    "or blurred.",
    "specify_lighting_sources": "If applicable, mention the likely use of artificial or "
    "natural lighting sources.",
    "do_not_use_ambiguous_language": "Do NOT use any ambiguous language.",
    "include_nsfw": "Include whether the image is sfw, suggestive, or nsfw.",
    "only_describe_most_important_elements": "ONLY describe the most important elements of "
    "the image.",
    "do_not_include_artist_name_or_title": "If it is a work of art, do not include the "
    "artist's name or the title of the work.",
    "identify_image_orientation": "Identify the image orientation (portrait, landscape, or "
    "square) and aspect ratio if obvious.",
    "use_vulgar_slang_and_profanity": "Use vulgar slang and profanity, such as (but not "
    'limited to) "fucking," "slut," "cock," etc.',
    "do_not_use_polite_euphemisms": "Do NOT use polite euphemisms\u2014lean into blunt, "
    "casual phrasing.",
    "include_character_age": "Include information about the ages of any people/characters "
    "when applicable.",
    "include_camera_shot_type": "Mention whether the image depicts an extreme close-up, "
    "close-up, medium close-up, medium shot, cowboy shot, medium wide shot, wide shot, or "
    "extreme wide shot.",
    "exclude_mood_feeling": "Do not mention the mood/feeling/etc of the image.",
    "include_camera_vantage_height": "Explicitly specify the vantage height (eye-level, "
    "low-angle worm\u2019s-eye, bird\u2019s-eye, drone, rooftop, etc.).",
    "mention_watermark": "If there is a watermark, you must mention it.",
    "avoid_meta_descriptive_phrases": "Your response will be used by a text-to-image model, "
    "so avoid useless meta phrases like \u201cThis image shows\u2026\u201d, "
    '"You are looking at...", etc.',
}

MAX_SEED = 2**53 - 1  # as recipe.py: a browser (JavaScript numbers) never rounds it
DEFAULT_MAX_NEW_TOKENS = 512
MAX_NEW_TOKENS_LIMIT = 2048
DEFAULT_TOP_P = 0.9
DEFAULT_TEMPERATURE = 0.6
MAX_TEMPERATURE = 2.0
_PLACEHOLDER = re.compile(r"\{(name|length|word_count)\}")


class CaptionOptionsError(RecipeError, ValueError):
    """Caption options that cannot be used; the message names the field."""


@dataclass(frozen=True, kw_only=True)
class CaptionOptions:
    """What to ask JoyCaption and how to sample its answer (the nodes' fields and defaults).

    caption_length is "any", a named length, or a word count ("40" or 40; kept as text).
    extra_options are EXTRA_OPTIONS keys, kept in the prompt's order. A non-empty user_prompt
    replaces the caption type's template; the extra sentences still follow it.
    """

    caption_type: str = "Descriptive"
    caption_length: str | int = "any"
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    top_p: float = DEFAULT_TOP_P
    temperature: float = DEFAULT_TEMPERATURE
    user_prompt: str = ""
    extra_options: tuple[str, ...] = ()
    name: str = ""
    trigger_words: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # normalising once, in a frozen dataclass
        set_field(self, "caption_length", _checked_length(self.caption_length))
        set_field(self, "extra_options", _checked_extras(self.extra_options))
        set_field(self, "trigger_words", _checked_words(self.trigger_words))
        _check_fields(self)

    @property
    def person_name(self) -> str:
        """The {name} in the person option: the name given, else the trigger words."""
        return self.name.strip() or ", ".join(self.trigger_words)


def _checked_length(length: object) -> str:
    if isinstance(length, int) and not isinstance(length, bool):
        length = str(length)
    if length in CAPTION_LENGTHS:
        return length
    is_number = isinstance(length, str) and length.isascii() and length.isdigit()
    if is_number and 1 <= int(length) <= MAX_WORD_COUNT:
        return str(int(length))
    raise CaptionOptionsError(
        f"Caption length {length!r} is not one of {', '.join(CAPTION_LENGTHS)} "
        f"or a word count from 1 to {MAX_WORD_COUNT}."
    )


def _checked_extras(extras: object) -> tuple[str, ...]:
    is_list = isinstance(extras, Sequence) and not isinstance(extras, str)
    unknown = [key for key in extras if key not in EXTRA_OPTIONS] if is_list else [extras]
    if unknown:
        raise CaptionOptionsError(f"Unknown caption extra options: {unknown!r}.")
    return tuple(key for key in EXTRA_OPTIONS if key in extras)


def _checked_words(words: object) -> tuple[str, ...]:
    is_list = isinstance(words, Sequence) and not isinstance(words, str)
    if not is_list or not all(isinstance(word, str) for word in words):
        raise CaptionOptionsError("Caption trigger words must be a list of words.")
    return tuple(dict.fromkeys(word.strip() for word in words if word.strip()))


def _check_fields(options: CaptionOptions) -> None:
    if options.caption_type not in CAPTION_TYPES:
        raise CaptionOptionsError(
            f"Caption type {options.caption_type!r} is not one of {', '.join(CAPTION_TYPES)}."
        )
    if not isinstance(options.user_prompt, str) or not isinstance(options.name, str):
        raise CaptionOptionsError("Caption user_prompt and name must be text.")
    if NAME_OPTION in options.extra_options and not options.person_name:
        raise CaptionOptionsError(f"Caption option {NAME_OPTION!r} needs a name or trigger words.")
    _check_number("max_new_tokens", options.max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT, whole=True)
    _check_number("seed", options.seed, 0, MAX_SEED, whole=True)
    _check_number("top_p", options.top_p, 0.0, 1.0)
    _check_number("temperature", options.temperature, 0.0, MAX_TEMPERATURE)


def _check_number(field: str, value: object, low: float, high: float, whole: bool = False) -> None:
    kinds = (int,) if whole else (int, float)
    number = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    if not number or not low <= value <= high:
        kind = "a whole number" if whole else "a number"
        raise CaptionOptionsError(
            f"Caption {field} must be {kind} from {low} to {high}, not {value!r}."
        )


def template_for(caption_type: str, caption_length: str) -> str:
    """The caption type's template for this length: any / word count / named length."""
    any_length, word_count, named_length = CAPTION_TYPES[caption_type]
    if caption_length == "any":
        return any_length
    return word_count if caption_length.isdigit() else named_length


def build_prompt(options: CaptionOptions) -> str:
    """The user message JoyCaption Beta One is sent, exactly as its own nodes build it."""
    user_prompt = options.user_prompt.strip()
    base = user_prompt or template_for(options.caption_type, options.caption_length)
    prompt = " ".join([base, *(EXTRA_OPTIONS[key] for key in options.extra_options)])
    values = {
        "name": options.person_name,
        "length": options.caption_length,
        "word_count": options.caption_length,
    }
    # One literal pass: other braces in a typed prompt stay as typed.
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], prompt)
