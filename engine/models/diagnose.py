"""What each Flux file is: the table `python -m engine models` prints and the studio shows.

For every file the models folder holds that is a Flux part (and for a diffusers folder in
use): what it is, key layout, stored dtype, variant, block / layer counts, fp8 scaling, and
any difference from the known FLUX.1 / T5-XXL / CLIP-L / AE shapes. Headers only.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from engine.models.checkpoint import SUFFIXES, CheckpointError, Header, read_header
from engine.models.detect import DETECTORS, Detected
from engine.models.shape_check import check_shapes
from engine.models.specs import WeightSpec

log = logging.getLogger(__name__)

# models/ subfolder -> the parts a file there can be (checkpoints/: all-in-one files).
SCANNED = (
    ("diffusion_models", ("transformer", "fill")),
    ("unet", ("transformer", "fill")),
    ("checkpoints", ("transformer", "vae", "clip", "t5")),
    ("vae", ("vae",)),
    ("text_encoders", ("clip", "t5")),
    ("clip", ("clip", "t5")),
)
PART_ORDER = ("transformer", "fill", "vae", "clip", "t5")
PART_LABELS = {
    "transformer": "transformer",
    "fill": "Fill",
    "vae": "VAE",
    "clip": "CLIP-L",
    "t5": "T5",
}
WHAT = {
    ("transformer", "flux1"): "FLUX.1 transformer",
    ("fill", "flux1"): "FLUX.1 Fill transformer",
    ("vae", "flux1"): "FLUX.1 AE (16-channel VAE)",
    ("clip", "flux1"): "CLIP-L text encoder",
    ("t5", "flux1"): "T5-XXL encoder",
}
DTYPE_NAMES = {
    "BF16": "bf16",
    "F16": "fp16",
    "F32": "fp32",
    "F8_E4M3": "fp8_e4m3fn",
    "F8_E5M2": "fp8_e5m2",
    "I8": "int8",
    "U8": "uint8",
}
_SCALE_KEYS = (".scale_weight", ".weight_scale", "scaled_fp8")
COLUMNS = ("part", "file", "what", "layout", "stored as", "variant", "blocks", "fp8", "check")


@dataclass(frozen=True)
class PartFacts:
    """One row of the diagnosis: one part of one file (an all-in-one file gives several)."""

    part: str
    name: str
    what: str
    layout: str
    dtype: str
    variant: str
    counts: str
    fp8: str
    warnings: tuple[str, ...] = ()
    path: Path | None = None
    in_use: bool = False

    def cells(self) -> tuple[str, ...]:
        part = PART_LABELS[self.part] + (" (in use)" if self.in_use else "")
        check = "; ".join(self.warnings) or "ok"
        row = (part, self.name, self.what, self.layout, self.dtype, self.variant, self.counts)
        return tuple(c.replace("|", "/") or "-" for c in (*row, self.fp8, check))


def header_facts(part: str, header: Header, found: Detected, name: str = "") -> PartFacts:
    """The facts of one detected part of a file, from its header."""
    shapes = check_shapes(header, found)
    layout = found.layout + (f", keys under {found.prefix}" if found.prefix else "")
    dtype = stored_dtype(header, found.prefix)
    scaled = any(k.startswith(found.prefix) and k.endswith(_SCALE_KEYS) for k in header.shapes)
    fp8 = "scaled" if scaled else ("plain" if dtype.startswith("fp8") else "no")
    what = WHAT.get((part, found.family), f"tiny test {PART_LABELS[part]}")
    name = name or header.path.name
    return PartFacts(
        part,
        name,
        what,
        layout,
        dtype,
        found.variant,
        shapes.counts,
        fp8,
        shapes.warnings,
        header.path,
    )


def stored_dtype(header: Header, prefix: str) -> str:
    """The dtype most weight matrices are stored in, with any others in brackets."""
    counts = Counter(
        header.dtypes[key]
        for key, shape in header.shapes.items()
        if key.startswith(prefix) and key.endswith(".weight") and len(shape) >= 2
    )
    names = [DTYPE_NAMES.get(d, d.lower()) for d, _ in counts.most_common()]
    if not names:
        return "-"
    return names[0] + (f" (+ {', '.join(names[1:])})" if len(names) > 1 else "")


def scan_models_folder(models_dir: Path) -> list[PartFacts]:
    """A row for every Flux part in the models folder's Flux subfolders."""
    rows: list[PartFacts] = []
    seen: set[Path] = set()
    for sub, parts in SCANNED:
        folder = models_dir / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in SUFFIXES or path in seen or not path.is_file():
                continue
            seen.add(path)
            try:
                header = read_header(path)
            except CheckpointError:
                continue  # "Skipped:" in the search summary says why
            rows += _detected_rows(header, parts, str(path.relative_to(models_dir)))
    return rows


def _detected_rows(header: Header, parts: Iterable[str], name: str) -> list[PartFacts]:
    rows = []
    for part in parts:
        found = DETECTORS[part](header)
        if isinstance(found, Detected):
            rows.append(header_facts(part, header, found, name))
    return rows


def folder_header(folder: Path) -> Header | None:
    """The merged header of a diffusers component folder's .safetensors shards."""
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    for path in sorted(folder.glob("*.safetensors")):
        try:
            header = read_header(path)
        except CheckpointError:
            return None
        shapes.update(header.shapes)
        dtypes.update(header.dtypes)
    return Header(folder, shapes, dtypes) if shapes else None


def spec_rows(spec: WeightSpec) -> list[PartFacts]:
    """Rows for a part that is not a file of the models folder: a diffusers folder (read from
    its headers) or a repo downloaded on first use."""
    if spec.source == "hub":
        return [PartFacts(spec.component, spec.label, "downloaded on first use", *["-"] * 5)]
    if spec.source != "diffusers" or spec.path is None:
        return []
    header = folder_header(spec.path / spec.subfolder)
    if header is None:
        return []
    return _detected_rows(header, (spec.component,), spec.label)


def diagnosis(models_dir: Path | None, specs: Iterable[WeightSpec] = ()) -> list[PartFacts]:
    """Every row, the parts in use marked, sorted by part (in use first) then name."""
    used = {(s.component, s.path) for s in specs if s.source == "file"}
    rows = scan_models_folder(models_dir) if models_dir is not None else []
    rows = [replace(r, in_use=(r.part, r.path) in used) for r in rows]
    for spec in specs:
        if spec.source in ("diffusers", "hub") and spec.component in PART_ORDER:
            rows += [replace(r, in_use=True) for r in spec_rows(spec)]
    return sorted(rows, key=lambda r: (PART_ORDER.index(r.part), not r.in_use, r.name))


def diagnosis_table(rows: list[PartFacts]) -> str:
    """A Markdown table (readable in a terminal, rendered in the studio)."""
    if not rows:
        return ""
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(row.cells()) + " |" for row in rows),
    ]
    return "\n".join(lines)


def diagnosis_text(models_dir: Path | None, specs: Iterable[WeightSpec] = ()) -> str:
    """The table after a blank line, with a line per file that differs from the known shapes;
    "" when no Flux file was found."""
    specs = list(specs)
    rows = diagnosis(models_dir, specs)
    text = diagnosis_table(rows)
    if not text:
        return ""
    odd = [f"{row.name}: {'; '.join(row.warnings)}" for row in rows if row.warnings]
    if odd:
        text += "\n\nUnusual files (they load, but differ from the known shapes): "
        text += " | ".join(odd) + "."
    tokenizers = [s for s in specs if s.component.endswith("_tokenizer")]
    if tokenizers:
        where = "; ".join(f"{s.label}" + (f" at {s.path}" if s.path else "") for s in tokenizers)
        text += f"\n\nTokenizers: {where}."
    return "\n\n" + text


def log_unusual(spec: WeightSpec) -> None:
    """Log how a single file about to load differs from the known shapes (never raises)."""
    if spec.source != "file" or spec.path is None or spec.detected is None:
        return
    try:
        header = read_header(spec.path)
    except CheckpointError:
        return  # the load itself reports it
    report = check_shapes(header, spec.detected)
    if report.warnings:
        warnings = "; ".join(report.warnings)
        log.warning("%s: %s (it loads, but differs from the known shapes)", spec.path, warnings)
