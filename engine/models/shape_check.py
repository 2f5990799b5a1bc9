"""Block and layer counts read from a checkpoint's header, checked against what the file
claims to be: FLUX.1 (19 double + 38 single blocks, width 3072), T5-XXL (24 layers of
4096), CLIP-L (12 layers of 768), the FLUX.1 AE (4 encoder and 4 decoder levels), or the
tiny test models' own counts. A difference is a warning, not a refusal: a file with another
block count loads (its header sets the config), but it is rarely what the person wanted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from engine.models.checkpoint import Header
from engine.models.detect import CLIP_WIDTHS, T5_WIDTHS, TRANSFORMER_WIDTHS, VAE_WIDTHS, Detected
from engine.models.loaders import base_config

MODEL_NAMES = {
    ("transformer", "flux1"): "FLUX.1",
    ("fill", "flux1"): "FLUX.1 Fill",
    ("vae", "flux1"): "the FLUX.1 AE",
    ("clip", "flux1"): "CLIP-L",
    ("t5", "flux1"): "T5-XXL",
}
WIDTHS = {
    "transformer": TRANSFORMER_WIDTHS,
    "fill": TRANSFORMER_WIDTHS,
    "vae": VAE_WIDTHS,
    "clip": CLIP_WIDTHS,
    "t5": T5_WIDTHS,
}
MAX_WARNINGS_PER_GROUP = 3


@dataclass(frozen=True)
class BlockGroup:
    """One run of numbered blocks: keys `<stem><n>.…`, and how many the model has."""

    label: str  # "double blocks"
    singular: str  # "double block"
    stem: str
    expected: int
    uniform: bool = True  # every block holds the same tensors (not so for VAE levels)


@dataclass(frozen=True)
class ShapeReport:
    """ "19 double + 38 single blocks, width 3072" and the differences from the known shape."""

    counts: str
    warnings: tuple[str, ...]


def model_name(component: str, family: str) -> str:
    return MODEL_NAMES.get((component, family), "the tiny test model")


def block_groups(header: Header, found: Detected) -> list[BlockGroup]:
    """The numbered block runs of a detected component, with the counts its family has."""
    component, p = found.component, found.prefix
    config = base_config("transformer" if component == "fill" else component, found.family)
    if component in ("transformer", "fill"):
        bfl = found.layout == "bfl"
        double = f"{p}double_blocks." if bfl else f"{p}transformer_blocks."
        single = f"{p}single_blocks." if bfl else f"{p}single_transformer_blocks."
        return [
            BlockGroup("double blocks", "double block", double, config["num_layers"]),
            BlockGroup("single blocks", "single block", single, config["num_single_layers"]),
        ]
    if component == "vae":
        levels = len(config["block_out_channels"])
        ldm = found.layout == "ldm"
        down = f"{p}encoder.down." if ldm else f"{p}encoder.down_blocks."
        up = f"{p}decoder.up." if ldm else f"{p}decoder.up_blocks."
        return [
            BlockGroup("encoder levels", "encoder level", down, levels, uniform=False),
            BlockGroup("decoder levels", "decoder level", up, levels, uniform=False),
        ]
    if component == "clip":
        full = header.prefix_of("embeddings.token_embedding.weight") or p
        return [
            BlockGroup("layers", "layer", f"{full}encoder.layers.", config["num_hidden_layers"])
        ]
    return [BlockGroup("layers", "layer", f"{p}encoder.block.", config["num_layers"])]


def check_shapes(header: Header, found: Detected) -> ShapeReport:
    """The counts of every block run and how they differ from the family's architecture."""
    name = model_name(found.component, found.family)
    counts, warnings = [], []
    for group in block_groups(header, found):
        present, problems = _check_group(header, group, name)
        counts.append((present, group.label))
        warnings += problems
    width = {v: k for k, v in WIDTHS[found.component].items()}.get(found.family)
    if len(counts) == 2:
        text = f"{counts[0][0]} {counts[0][1].split()[0]} + {counts[1][0]} {counts[1][1]}"
    else:
        text = f"{counts[0][0]} {counts[0][1]}"
    if width is not None:
        text += f", width {width}"
    return ShapeReport(text, tuple(warnings))


def _check_group(header: Header, group: BlockGroup, name: str) -> tuple[int, list[str]]:
    numbers = header.block_numbers(group.stem)
    span = numbers[-1] + 1 if numbers else 0
    warnings = []
    missing = sorted(set(range(span)) - set(numbers))
    if missing:
        listed = ", ".join(str(n) for n in missing[:8]) + (", ..." if len(missing) > 8 else "")
        verb = "is" if len(missing) == 1 else "are"
        warnings.append(f"{group.singular} {listed} {verb} missing")
    if span != group.expected:
        warnings.append(f"{span} {group.label} where {name} has {group.expected}")
    if group.uniform:
        warnings += _incomplete_blocks(header, group)
    return len(numbers), warnings


def _incomplete_blocks(header: Header, group: BlockGroup) -> list[str]:
    """Blocks lacking a tensor that most blocks of the run hold (T5's relative attention
    bias lives in its first block only, so a tensor must be in over half to count)."""
    by_block: dict[int, set[str]] = {}
    for key in header.shapes:
        if key.startswith(group.stem):
            number, _, rest = key[len(group.stem) :].partition(".")
            if number.isdigit():
                by_block.setdefault(int(number), set()).add(rest)
    seen = Counter(rest for rests in by_block.values() for rest in rests)
    usual = {rest for rest, n in seen.items() if n * 2 > len(by_block)}
    out = []
    for number, rests in sorted(by_block.items()):
        lacking = sorted(usual - rests)
        if lacking:
            out.append(
                f"{group.singular} {number} lacks {len(lacking)} of its {len(usual)} tensors "
                f"(e.g. {lacking[0]})"
            )
    if len(out) > MAX_WARNINGS_PER_GROUP:
        more = len(out) - MAX_WARNINGS_PER_GROUP
        out = [*out[:MAX_WARNINGS_PER_GROUP], f"and {more} more incomplete {group.label}"]
    return out
