"""Recipe <-> JSON: strict loading (field paths in every message), partial overlays, paths."""

from __future__ import annotations

import dataclasses
import json
import typing
from functools import cache
from typing import Any

from engine.errors import RecipeError
from engine.fields import bounds_of, choices_of, max_length_of, name_kind_of
from engine.input_limits import EMPTY_RECIPE_HINT, check_name, check_text, parse_json_document
from engine.recipe import SCHEMA_VERSION, Recipe
from engine.recipe_refine import migrate_refine_v1
from engine.recipe_upscale import migrate_upscale_v2

# Migrations from version N to N+1, applied in order to older documents.
# version -> the step that turns a recipe of that version into the next one
MIGRATIONS: dict[int, typing.Callable[[dict], dict]] = {
    1: migrate_refine_v1,
    2: migrate_upscale_v2,
}
MAX_LISTED = 20  # problems listed in one message; the rest are counted


def to_dict(obj: Any) -> dict:
    """A plain JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def recipe_to_json(recipe: Recipe, indent: int | None = 2) -> str:
    """The recipe as a JSON document with its schema_version first."""
    return json.dumps({"schema_version": SCHEMA_VERSION, **to_dict(recipe)}, indent=indent)


def canonical_json(value: Any) -> str:
    """Stable JSON for hashing: sorted keys, no whitespace; dataclasses become objects."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_plain
    )


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def recipe_from_json(text: str | bytes, base: Recipe | None = None) -> Recipe:
    """Parse a recipe (or a partial recipe laid over `base`) from JSON text or bytes.

    Within input_limits' size and depth limits; a UTF-8 BOM is fine, duplicate keys and
    empty text are refused ("{}" is the default recipe).
    """
    data = parse_json_document(text, "The recipe", empty_hint=EMPTY_RECIPE_HINT)
    return recipe_from_dict(data, base)


def recipe_from_dict(data: Any, base: Recipe | None = None) -> Recipe:
    """Validate a (partial) recipe dict and lay it over `base` (defaults when None)."""
    if not isinstance(data, dict):
        raise RecipeError("A recipe must be a JSON object at the top level.")
    data = _migrate(dict(data))
    errors: list[str] = []
    recipe = _load(Recipe, data, base or Recipe(), "", errors)
    if errors:
        more = f"\n- … and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
        listed = "\n".join(f"- {e}" for e in errors[:MAX_LISTED])
        raise RecipeError(f"The recipe has problems:\n{listed}{more}")
    return recipe


def _migrate(data: dict) -> dict:
    version = data.pop("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise RecipeError("schema_version: expected an integer.")
    if version > SCHEMA_VERSION:
        raise RecipeError(
            f"schema_version {version} is newer than this studio understands "
            f"({SCHEMA_VERSION}). Update Portrait Studio to open it."
        )
    for step in range(version, SCHEMA_VERSION):
        data = MIGRATIONS[step](data)
    return data


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _load(cls: type, data: Any, base: Any, path: str, errors: list[str]) -> Any:
    if not isinstance(data, dict):
        errors.append(f"{path or 'recipe'}: expected an object, got {_kind(data)}")
        return base
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            shown = key if len(key) <= 80 and key.isprintable() else repr(key[:80])
            errors.append(f"{_join(path, shown)}: unknown field (known: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _value(
                f, _hints(cls)[name], data[name], getattr(base, name), _join(path, name), errors
            )
    return dataclasses.replace(base, **values)


def _value(
    f: dataclasses.Field, hint: Any, raw: Any, old: Any, path: str, errors: list[str]
) -> Any:
    if dataclasses.is_dataclass(hint):
        return _load(hint, raw, old, path, errors)
    if typing.get_origin(hint) is tuple:
        return _tuple(f, typing.get_args(hint)[0], raw, old, path, errors)
    checked = _scalar(hint, raw, path, errors, max_length_of(f))
    if checked is None:
        return old
    kind = name_kind_of(f)
    problem = check_name(checked, path, kind) if kind else _range_problem(f, checked)
    if problem:
        errors.append(problem if kind else f"{path}: {problem}")
        return old
    return checked


def _tuple(
    f: dataclasses.Field, item: Any, raw: Any, old: Any, path: str, errors: list[str]
) -> Any:
    if not isinstance(raw, list):
        errors.append(f"{path}: expected a list, got {_kind(raw)}")
        return old
    limit = f.metadata.get("max_items", 64)
    if len(raw) > limit:
        errors.append(f"{path}: at most {limit} entries, got {len(raw)}")
        return old
    if dataclasses.is_dataclass(item):
        return tuple(_load(item, r, item(), f"{path}[{i}]", errors) for i, r in enumerate(raw))
    length, kind = max_length_of(f), name_kind_of(f)
    out = [_scalar(item, r, f"{path}[{i}]", errors, length) for i, r in enumerate(raw)]
    for i, value in enumerate(out):
        problem = check_name(value, f"{path}[{i}]", kind) if kind and value else None
        if problem:
            errors.append(problem)
            out[i] = None
    return tuple(out) if None not in out else old


def _scalar(hint: Any, raw: Any, path: str, errors: list[str], max_length: int) -> Any:
    if hint is bool:
        ok = isinstance(raw, bool)
    elif hint is int:
        ok = isinstance(raw, int) and not isinstance(raw, bool)
    elif hint is float:
        ok = isinstance(raw, (int, float)) and not isinstance(raw, bool)
        raw = float(raw) if ok else raw
    else:
        ok = isinstance(raw, str)
    if not ok:
        errors.append(f"{path}: expected {_expected(hint)}, got {_kind(raw)} {raw!r:.40}")
        return None
    problem = check_text(raw, path, max_length) if isinstance(raw, str) else None
    if problem:
        errors.append(problem)
        return None
    return raw


def _range_problem(f: dataclasses.Field, value: Any) -> str | None:
    bounds, options = bounds_of(f), choices_of(f)
    if bounds and not bounds.lo <= value <= bounds.hi:
        return f"{value} is outside the allowed range {bounds.lo:g} to {bounds.hi:g}"
    if options and value not in options:
        return f"{value!r} is not one of {', '.join(options)}"
    if isinstance(value, float) and value != value:
        return "NaN is not a number this studio accepts"
    return None


def _expected(hint: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint)
    )


def _kind(raw: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }.get(type(raw), type(raw).__name__)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def get_path(obj: Any, path: str) -> Any:
    """The value at a dotted field path, e.g. 'color.tone.contrast'."""
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def set_path(obj: Any, path: str, value: Any, _done: str = "") -> Any:
    """A copy of `obj` with the dotted field path set (validated like JSON input)."""
    head, _, rest = path.partition(".")
    where = _join(_done, head)
    if rest:
        inner = set_path(getattr(obj, head), rest, value, where)
        return dataclasses.replace(obj, **{head: inner})
    errors: list[str] = []
    out = _load(type(obj), {head: value}, obj, _done, errors)
    if errors:
        raise RecipeError(errors[0])
    return out


def overlay(recipe: Recipe, partial: dict) -> Recipe:
    """Lay a partial recipe (a preset) over `recipe`."""
    return recipe_from_dict(partial, recipe)


def field_paths(cls: type = Recipe, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """Every leaf field path of the recipe schema, with its dataclass field."""
    out: list[tuple[str, dataclasses.Field]] = []
    for f in dataclasses.fields(cls):
        hint = _hints(cls)[f.name]
        path = _join(prefix, f.name)
        if dataclasses.is_dataclass(hint):
            out.extend(field_paths(hint, path))
        else:
            out.append((path, f))
    return out
