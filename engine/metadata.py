"""PNG metadata: the full recipe as JSON plus an A1111-style "parameters" text."""

from __future__ import annotations

import codecs
import io
import re
import zlib
from collections.abc import Mapping
from pathlib import Path

from PIL import Image, PngImagePlugin

from engine.errors import InputError, RecipeError
from engine.images import MAX_UPLOAD_BYTES, open_checked
from engine.input_limits import MAX_PNG_TEXT_BYTES
from engine.recipe import Recipe
from engine.recipe_json import recipe_from_dict, recipe_from_json, recipe_to_json
from engine.sizes import render_size

RECIPE_KEY = "portrait_studio_recipe"
PARAMETERS_KEY = "parameters"


def parameters_text(
    recipe: Recipe, model_label: str = "", extra: Mapping[str, str] | None = None
) -> str:
    """The A1111 'parameters' convention other tools (and civitai) read; `extra` adds fields
    that describe this image (e.g. its identity score)."""
    p, s = recipe.prompt, recipe.settings
    width, height = render_size(p)
    fields = [
        ("Steps", s.steps),
        ("Sampler", s.sampler),
        ("Schedule type", s.scheduler),
        ("CFG scale", s.cfg),
        ("Distilled CFG Scale", s.guidance),
        ("Seed", s.seed),
        ("Size", f"{width}x{height}"),
        ("Denoising strength", s.denoise),
        ("Shift", f"{s.base_shift}/{s.max_shift}"),
    ]
    if model_label:
        fields.append(("Model", model_label.replace(",", " ")))
    fields += [(key, value.replace(",", " ")) for key, value in (extra or {}).items()]
    lines = [p.prompt]
    if p.negative_prompt:
        lines.append(f"Negative prompt: {p.negative_prompt}")
    lines.append(", ".join(f"{k}: {v}" for k, v in fields))
    return "\n".join(lines)


def png_bytes(
    image: Image.Image,
    recipe: Recipe,
    model_label: str = "",
    extra: Mapping[str, str] | None = None,
) -> bytes:
    """PNG bytes with the recipe and parameters text chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt(RECIPE_KEY, recipe_to_json(recipe, indent=None))
    info.add_itxt(PARAMETERS_KEY, parameters_text(recipe, model_label, extra))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=4)
    return buffer.getvalue()


def recipe_from_png(data: bytes, name: str = "The PNG") -> Recipe:
    """The recipe inside a studio PNG; falls back to an A1111 'parameters' text.

    The two text chunks are measured before Pillow reads them: each may hold at most
    MAX_PNG_TEXT_BYTES (after decompression).
    """
    _check_text_chunks(data, name)
    image = open_checked(data, name)
    text = image.info.get(RECIPE_KEY)
    if text:
        return recipe_from_json(text)
    parameters = image.info.get(PARAMETERS_KEY)
    if parameters:
        return recipe_from_parameters(parameters)
    raise RecipeError(
        f"{name} carries no recipe: it was not made by Portrait Studio (or its "
        "metadata was stripped, e.g. by a WEBP/JPEG conversion)."
    )


_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def _check_text_chunks(data: bytes, name: str) -> None:
    """Refuse a recipe or parameters chunk over MAX_PNG_TEXT_BYTES (PIL reads a plain one of
    any size, and fails a compressed one over 1 MB with a message about a damaged file)."""
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IEND":
            return
        key, _, rest = body.partition(b"\0")
        if kind not in _TEXT_CHUNKS or key.decode("latin-1") not in (RECIPE_KEY, PARAMETERS_KEY):
            continue
        size, exact = _text_size(kind, rest)
        if size > MAX_PNG_TEXT_BYTES:
            raise RecipeError(
                f"{name}'s {key.decode('latin-1')!r} text is "
                f"{f'{size:,}' if exact else f'over {MAX_PNG_TEXT_BYTES:,}'} bytes; the limit is "
                f"{MAX_PNG_TEXT_BYTES:,} "
                "bytes. A studio recipe is a few kB, so Portrait Studio did not write this text: "
                "open a PNG the studio saved."
            )


def _text_size(kind: bytes, rest: bytes) -> tuple[int, bool]:
    """The text's length in bytes and whether it is exact (a compressed text is inflated
    only to one byte past the limit)."""
    if kind == b"tEXt":
        return len(rest), True
    if kind == b"zTXt":
        compressed, packed = True, rest[1:]
    else:  # iTXt: flag, method, language\0, translated key\0, text
        compressed = rest[:1] == b"\1"
        packed = rest[2:].split(b"\0", 2)[-1]
    if not compressed:
        return len(packed), True
    try:
        size = len(zlib.decompressobj().decompress(packed, MAX_PNG_TEXT_BYTES + 1))
    except zlib.error:
        return 0, True  # Pillow skips a chunk it cannot inflate
    return size, size <= MAX_PNG_TEXT_BYTES


_KNOWN = {
    "Steps": ("settings", "steps", int),
    "Seed": ("settings", "seed", int),
    "Distilled CFG Scale": ("settings", "guidance", float),
    "Denoising strength": ("settings", "denoise", float),
}


def recipe_from_parameters(text: str) -> Recipe:
    """A best-effort recipe from another tool's A1111 'parameters' text (prompt, steps, seed...)."""
    lines = text.strip().split("\n")
    settings_line = lines[-1] if len(lines) > 1 and "Steps:" in lines[-1] else ""
    body = lines[:-1] if settings_line else lines
    negative = [ln for ln in body if ln.startswith("Negative prompt:")]
    prompt = "\n".join(ln for ln in body if not ln.startswith("Negative prompt:"))
    data: dict = {"prompt": {"prompt": prompt}, "settings": {}}
    if negative:
        data["prompt"]["negative_prompt"] = negative[0].removeprefix("Negative prompt:").strip()
    for key, value in re.findall(r"([A-Za-z ]+): ([^,]+)", settings_line):
        key = key.strip()
        if key in _KNOWN:
            section, field, cast = _KNOWN[key]
            try:
                data[section][field] = cast(value.strip())
            except ValueError:
                continue
        elif key == "Size" and "x" in value:
            w, _, h = value.strip().partition("x")
            if w.isdigit() and h.isdigit():
                data["prompt"].update(width=int(w), height=int(h))
    return recipe_from_dict(data)


def read_recipe_file(path: Path) -> Recipe:
    """A recipe from a studio PNG or a recipe .json file."""
    try:
        with path.open("rb") as file:  # never more than the largest upload, plus one byte
            data = file.read(MAX_UPLOAD_BYTES + 1)
    except OSError as exc:
        raise InputError(f"Cannot read {path.name}: {exc.strerror}.") from exc
    if len(data) > MAX_UPLOAD_BYTES:
        raise InputError(
            f"{path.name} is over {MAX_UPLOAD_BYTES // 2**20} MB; a studio PNG or recipe is far "
            "smaller. Open a file the studio saved."
        )
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return recipe_from_png(data, path.name)
    if path.suffix.lower() == ".json" or data.removeprefix(codecs.BOM_UTF8).lstrip()[:1] == b"{":
        return recipe_from_json(data)
    raise InputError(f"{path.name} is neither a studio PNG nor a recipe .json file.")
