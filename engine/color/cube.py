"""Reading .cube 3D LUT files, by plain file name, from the configured LUT folders."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pillow_lut import load_cube_file

from engine.errors import InputError

CUBE_SUFFIX = ".cube"
MIN_CUBE_SIZE = 2
MAX_CUBE_SIZE = 129
# A 129^3 table written with generous precision stays far below this.
MAX_CUBE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, eq=False)
class CubeLut:
    """A 3D LUT: table[b, g, r] is the RGB for grid point (r, g, b), clipped to the domain."""

    name: str
    title: str
    size: int
    table: torch.Tensor  # (size, size, size, 3) float32 on the CPU, red varying fastest
    domain_min: tuple[float, float, float] = (0.0, 0.0, 0.0)
    domain_max: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def default_domain(self) -> bool:
        return self.domain_min == (0.0, 0.0, 0.0) and self.domain_max == (1.0, 1.0, 1.0)


class _ParsedTable:
    """What pillow_lut's parser hands its `cls`: the size and the flat table, kept as given."""

    def __init__(self, size: Any, table: list[float], **_: Any) -> None:
        self.size = size
        self.table = table


def list_luts(folders: list[Path]) -> dict[str, Path]:
    """Every .cube file directly inside the folders, by file name (the first folder wins)."""
    found: dict[str, Path] = {}
    for folder in folders:
        try:
            entries = sorted(folder.iterdir()) if folder.is_dir() else []
        except OSError:
            continue  # an unreadable folder lists nothing; resolving a name there still explains
        for entry in entries:
            if _is_plain_cube_name(entry.name) and entry.is_file():
                found.setdefault(entry.name, entry)
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def resolve_lut(name: str, folders: list[Path]) -> Path:
    """The file `name` from the first allowed folder that has it; refuses all but plain names."""
    allowed = ", ".join(str(folder) for folder in folders) or "(no LUT folder is configured)"
    if not _is_plain_cube_name(name):
        raise InputError(
            f"The LUT name {name!r} is not a plain .cube file name. Choose a LUT from the list; "
            f"LUTs are read only from these folders: {allowed}."
        )
    for folder in folders:
        candidate = folder / name
        # A symlink placed in a LUT folder is the operator's choice, so it is followed.
        if candidate.is_file():
            return candidate
    raise InputError(
        f"No LUT named {name!r} was found. Put the .cube file in one of these folders: "
        f"{allowed}, or choose a LUT from the list."
    )


def _is_plain_cube_name(name: str) -> bool:
    return (
        bool(name)
        and name == Path(name).name
        and not any(ch in name for ch in "/\\:\0")
        and not name.startswith(".")
        and name.lower().endswith(CUBE_SUFFIX)
    )


def load_cube(path: Path) -> CubeLut:
    """Parse a .cube file (pillow_lut's parser plus DOMAIN_MIN/MAX); InputError when broken."""
    name = path.name
    lines = _read_lines(path)
    size, domain_min, domain_max = _read_header(lines, name)
    title = _read_title(lines)
    # pillow_lut splits the first token on a space and reads TITLE between quotes: give it
    # single-spaced lines without TITLE (blanked, so its line numbers stay the file's).
    plain = ["" if line.startswith("TITLE") else " ".join(line.split()) for line in lines]
    try:
        parsed = load_cube_file(plain, cls=_ParsedTable)
    except ValueError as exc:
        problem = str(exc).rstrip(".")
        raise _broken(name, problem[:1].lower() + problem[1:]) from exc
    expected = 3 * size**3
    if len(parsed.table) != expected:
        raise _broken(
            name,
            f"it has {len(parsed.table) // 3} colour rows but LUT_3D_SIZE {size} needs {size**3}",
        )
    if not all(math.isfinite(v) for v in parsed.table):
        raise _broken(name, "it contains a value that is not a finite number")
    table = torch.tensor(parsed.table, dtype=torch.float32).view(size, size, size, 3)
    # LUT Apply clips the table to its domain before use (specs §9).
    table = table.clamp(torch.tensor(domain_min), torch.tensor(domain_max))
    return CubeLut(name, title or path.stem, size, table, domain_min, domain_max)


def _read_title(lines: list[str]) -> str:
    for line in lines:
        if line.startswith("TITLE"):
            return line[len("TITLE") :].strip().strip('"')
    return ""


def _read_lines(path: Path) -> list[str]:
    name = path.name
    try:
        if path.stat().st_size > MAX_CUBE_BYTES:
            raise _broken(name, f"it is larger than {MAX_CUBE_BYTES // 2**20} MB")
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"The LUT {name!r} cannot be read ({exc.strerror}). Check the file or choose another."
        ) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Titles and comments in older tools' files are often Latin-1; the numbers are ASCII.
        text = data.decode("latin-1")
    return [line.strip() for line in text.splitlines()]


def _read_header(
    lines: list[str], name: str
) -> tuple[int, tuple[float, float, float], tuple[float, float, float]]:
    """LUT_3D_SIZE and the domain, checked before pillow_lut reads a possibly huge table."""
    size: int | None = None
    low, high = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    for line in lines:
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        key, values = tokens[0], tokens[1:]
        if key == "LUT_1D_SIZE":
            raise _broken(name, "it is a 1D LUT; only 3D LUTs (LUT_3D_SIZE) are supported")
        if key == "LUT_3D_SIZE":
            size = _read_size(values, name)
        elif key in ("DOMAIN_MIN", "DOMAIN_MAX"):
            triple = _read_floats(values, 3, key, name)
            low, high = (triple, high) if key == "DOMAIN_MIN" else (low, triple)
        elif key == "LUT_3D_INPUT_RANGE":
            lo, hi = _read_floats(values, 2, key, name)
            low, high = (lo, lo, lo), (hi, hi, hi)
    if size is None:
        raise _broken(name, "it has no LUT_3D_SIZE line")
    if not all(h > lo for lo, h in zip(low, high, strict=True)):
        raise _broken(name, f"DOMAIN_MAX {high} must be above DOMAIN_MIN {low}")
    return size, low, high


def _read_size(values: list[str], name: str) -> int:
    if len(values) != 1 or not values[0].isdigit():
        raise _broken(name, f"LUT_3D_SIZE must be one whole number, not {' '.join(values)!r}")
    size = int(values[0])
    if not MIN_CUBE_SIZE <= size <= MAX_CUBE_SIZE:
        raise _broken(name, f"LUT_3D_SIZE {size} is outside {MIN_CUBE_SIZE}..{MAX_CUBE_SIZE}")
    return size


def _read_floats(values: list[str], count: int, key: str, name: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in values)
    except ValueError:
        numbers = ()
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        raise _broken(name, f"{key} needs {count} numbers, not {' '.join(values)!r}")
    return numbers


def _broken(name: str, problem: str) -> InputError:
    return InputError(
        f"The LUT {name!r} is not a usable .cube file: {problem}. "
        "Export it again as a 3D .cube LUT or choose another."
    )
