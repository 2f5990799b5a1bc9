"""One input boundary: size and depth limits, a safe JSON parse, and text and name checks.

Everything that arrives from outside (a recipe from the API, a file or a PNG, a LoRA's
metadata) passes through here before the engine uses it, so a hostile or broken document
gets a message that names the limit, never a RecursionError or a crash much later.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Any

from engine.errors import RecipeError

MAX_JSON_DEPTH = 32  # a recipe nests about 5 levels deep
MAX_RECIPE_BYTES = 1_000_000  # a recipe is a few kB
MAX_PNG_TEXT_BYTES = 256 * 1024  # the recipe or "parameters" text chunk of a PNG
MAX_METADATA_JSON_BYTES = 4_000_000  # one JSON value in a LoRA's safetensors metadata
MAX_PROMPT_CHARS = 20_000  # the prompt and the negative prompt
MAX_NAME_CHARS = 1024  # every other string field: file names, digests, LoRA triggers

# How a string field that names something is checked (fields.file_ref); "" always passes.
DIGEST = "digest"  # an image in the image store: sha256:<64 hex>
PLAIN_NAME = "plain_name"  # a file name without folders (a LUT)
RELATIVE_NAME = "relative_name"  # a path inside a models folder (a LoRA, a model file)
NAME_KINDS = (DIGEST, PLAIN_NAME, RELATIVE_NAME)

EMPTY_RECIPE_HINT = "Send {} (an empty JSON object) for the default recipe."

_BAD_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_DIGEST = re.compile("sha256:[0-9a-f]{64}")


def parse_json_document(
    text: str | bytes,
    what: str,
    *,
    max_bytes: int = MAX_RECIPE_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
    empty_hint: str = "",
) -> Any:
    """Parse JSON text or bytes (a UTF-8 BOM is fine) within the size and depth limits.

    `what` starts every message ("The recipe"). Duplicate keys are refused, never silently
    resolved to the last value. Raises RecipeError.
    """
    size = len(text) if isinstance(text, bytes) else _utf8_size(text, max_bytes)
    if size > max_bytes:
        raise RecipeError(
            f"{what} is {size:,} bytes; the limit is {max_bytes:,} bytes. Check that this is "
            "the right file."
        )
    text = _as_text(text, what).removeprefix("\ufeff")
    if not text.strip():
        raise RecipeError(f"{what} is empty. {empty_hint}".strip())
    duplicates: dict[int, tuple[dict, str]] = {}
    try:
        data = json.loads(text, object_pairs_hook=lambda pairs: _object(pairs, duplicates))
    except RecursionError:
        raise _too_deep(what, max_depth) from None
    except json.JSONDecodeError as exc:
        raise RecipeError(f"{what} is not valid JSON ({exc}). Check the file.") from None
    except ValueError:  # an integer with thousands of digits
        raise RecipeError(
            f"{what} has a number with thousands of digits; no field takes one. Check the file."
        ) from None
    _check_tree(data, what, max_depth, duplicates)
    return data


def check_text(value: str, path: str, limit: int) -> str | None:
    """The problem with a string field's value (too long, a control or lone surrogate
    character), or None. The message starts with the field path."""
    if len(value) > limit:
        return f"{path}: {len(value):,} characters; the limit is {limit:,}. Shorten it."
    bad = _BAD_CHAR.search(value)
    if bad is None:
        return None
    code = ord(bad.group())
    if 0xD800 <= code <= 0xDFFF:
        kind = "a lone UTF-16 surrogate, half of a character pair"
    elif code == 0:
        kind = "a NUL character"
    else:
        kind = "a control character"
    return (
        f"{path}: character {bad.start() + 1} is {kind} (U+{code:04X}), which this field "
        "cannot hold. Remove it (only tabs and line breaks are allowed)."
    )


def check_name(value: str, path: str, kind: str) -> str | None:
    """The problem with a string that names an image or a file, or None ("" passes).

    Checked whatever the field's section says, so nothing unsafe reaches a PNG.
    """
    if not value:
        return None
    if kind == DIGEST:
        if is_image_digest(value):
            return None
        return (
            f"{path}: {value[:80]!r} is not an image digest (sha256:<64 hex>). "
            "Upload the image again."
        )
    if kind == PLAIN_NAME:
        plain = not any(ch in value for ch in "/\\:") and not value.startswith(".")
        if plain:
            return None
        return (
            f"{path}: {value[:80]!r} is not a plain file name (no folders, no '..', no drive, "
            "not hidden). Choose a file from the list."
        )
    parts = PurePosixPath(value.replace("\\", "/"))
    if parts.is_absolute() or ".." in parts.parts or ":" in value:
        return (
            f"{path}: {value[:80]!r} is not a file name inside its models folder (no "
            "absolute path, no '..', no drive). Choose a file from the list."
        )
    return None


def is_image_digest(value: str) -> bool:
    """Whether `value` has the image store's digest form, sha256:<64 lower-case hex>."""
    return _DIGEST.fullmatch(value) is not None


def _object(pairs: list[tuple[str, Any]], duplicates: dict[int, tuple[dict, str]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out and id(out) not in duplicates:
            duplicates[id(out)] = (out, key)
        out[key] = value
    return out


def _check_tree(
    data: Any, what: str, max_depth: int, duplicates: dict[int, tuple[dict, str]]
) -> None:
    """Depth and duplicate keys, walked without recursion (containers only)."""
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if depth > max_depth:
            raise _too_deep(what, max_depth)
        if isinstance(value, dict):
            if id(value) in duplicates:
                key = duplicates[id(value)][1]
                where = f" in {path}" if path else " at the top level"
                raise RecipeError(
                    f"{what} has the key {key!r} twice{where}. Keep one of them: "
                    "which one counts would otherwise be a guess."
                )
            children = ((v, f"{path}.{k}" if path else k) for k, v in value.items())
        elif isinstance(value, list):
            children = ((v, f"{path}[{i}]") for i, v in enumerate(value))
        else:
            continue
        stack.extend(
            (child, where, depth + 1) for child, where in children if isinstance(child, dict | list)
        )


def _too_deep(what: str, max_depth: int) -> RecipeError:
    return RecipeError(
        f"{what} nests deeper than {max_depth} levels; a recipe needs about 5. "
        "Check the file: it is not one the studio wrote."
    )


def _as_text(data: str | bytes, what: str) -> str:
    if isinstance(data, str):
        return data
    try:  # UTF-8 with or without a BOM; json's own detection also finds UTF-16/32
        return data.decode(json.detect_encoding(data))
    except (UnicodeDecodeError, LookupError) as exc:
        raise RecipeError(f"{what} is not UTF-8 text ({exc}). Save it as UTF-8.") from None


def _utf8_size(text: str, limit: int) -> int:
    if len(text) > limit:  # every character is at least one byte: no need to encode
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))
