"""The message for a Flux setup with pieces missing: each missing piece on its own line,
then the pieces that were found and are fine, then what to do for each kind of gap."""

from __future__ import annotations

from pathlib import Path

from engine.errors import ModelNotFoundError
from engine.models.specs import COMPONENT_NAMES, HOW_TO_GET_WEIGHTS, WeightSpec
from engine.models.tokenizer_places import dropped_in

WEIGHT_PARTS = ("transformer", "vae", "clip", "t5")
TOKENIZER_PARTS = ("clip_tokenizer", "t5_tokenizer")
TOKENIZER_SOURCES = {
    "clip_tokenizer": ("openai/clip-vit-large-patch14", "vocab.json, merges.txt", "sd1_tokenizer"),
    "t5_tokenizer": ("google/t5-v1_1-xxl", "spiece.model", "text_encoders/t5_tokenizer"),
}


class MissingPiecesError(ModelNotFoundError):
    """Some components were not found; `weights_ok` when only tokenizers are missing."""

    def __init__(self, message: str, missing: tuple[str, ...]) -> None:
        super().__init__(message)
        self.missing = missing
        self.weights_ok = not any(part in WEIGHT_PARTS for part in missing)


def without_advice(text: str) -> str:
    """A weight error's own text, without the general advice (said once at the end)."""
    return text.replace(HOW_TO_GET_WEIGHTS, "").strip()


def missing_pieces(
    problems: dict[str, str], found: dict[str, WeightSpec], models_dir: Path | None
) -> MissingPiecesError:
    """One error naming every missing piece and every piece found."""
    weights = [part for part in WEIGHT_PARTS if part in problems]
    tokenizers = [part for part in TOKENIZER_PARTS if part in problems]
    lines = [problems[part] for part in weights]
    if not weights:
        names = " and the ".join(COMPONENT_NAMES[part] for part in tokenizers)
        verb = "is" if len(tokenizers) == 1 else "are"
        lines.append(f"The Flux weight files are fine, but the {names} {verb} missing.")
    lines += [problems[part] for part in tokenizers]
    good = [
        f"{COMPONENT_NAMES[part]} {found[part].label}"
        for part in (*WEIGHT_PARTS, *TOKENIZER_PARTS)
        if part in found
    ]
    if good:
        lines.append("Found and fine: " + "; ".join(good) + ".")
    if weights:
        lines.append(HOW_TO_GET_WEIGHTS)
    if tokenizers:
        lines.append(how_to_get_tokenizers(tokenizers, models_dir))
    return MissingPiecesError("\n".join(lines), (*weights, *tokenizers))


def how_to_get_tokenizers(parts: list[str], models_dir: Path | None) -> str:
    """What a person can do about missing tokenizers (small public files)."""
    repos = " and ".join(f"{TOKENIZER_SOURCES[p][0]} ({TOKENIZER_SOURCES[p][1]})" for p in parts)
    drops = " and ".join(
        str(dropped_in(p, models_dir)) if models_dir else f"<models>/{dropped_in(p, Path())}"
        for p in parts
    )
    comfy = " and ".join(f"comfy/{TOKENIZER_SOURCES[p][2]}" for p in parts)
    return (
        f"To get the tokenizers (small public files): start once while online, without "
        f"--offline or HF_HUB_OFFLINE=1, and the studio downloads just the tokenizer files of "
        f"{repos} into the Hugging Face cache; or copy them into {drops} (a ComfyUI install's "
        f"{comfy} will do); or pass --extra-model-paths with the extra_model_paths.yaml of a "
        f"ComfyUI install that has them."
    )
