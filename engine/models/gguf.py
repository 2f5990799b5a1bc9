"""GGUF files (llama.cpp-style quantisation, e.g. flux1-dev-Q8_0.gguf): recognised and refused.

Portrait Studio reads only .safetensors / .sft. A GGUF file is recognised by its name or by
its first four bytes (b"GGUF", also when it was renamed to .safetensors), and the message
names it and says which file to use instead, rather than failing later in a parser or, as
through ComfyUI-GGUF's loader, in the middle of sampling.
"""

from __future__ import annotations

from pathlib import Path

GGUF_MAGIC = b"GGUF"
GGUF_SUFFIX = ".gguf"
WHAT_IT_IS = "llama.cpp-style quantisation"
# component -> (what Portrait Studio loads it as, the files to use instead)
INSTEAD = {
    "transformer": (
        "FLUX.1 as .safetensors (bf16, fp8 e4m3fn or fp8 scaled)",
        "flux1-dev-fp8 / flux1-schnell-fp8",
    ),
    "fill": (
        "FLUX.1 Fill as .safetensors (bf16, fp8 e4m3fn or fp8 scaled)",
        "flux1-fill-dev or an fp8 copy of it",
    ),
    "t5": (
        "the T5-XXL text encoder as .safetensors (fp16, fp8 e4m3fn or fp8 scaled)",
        "t5xxl_fp8_e4m3fn / t5xxl_fp8_e4m3fn_scaled / t5xxl_fp16",
    ),
    "clip": ("the CLIP-L text encoder as .safetensors", "clip_l.safetensors"),
    "vae": ("the Flux VAE as .safetensors", "ae.safetensors"),
}


def has_gguf_magic(path: Path) -> bool:
    """Whether the file starts with the GGUF magic bytes (False when it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(GGUF_MAGIC)) == GGUF_MAGIC
    except OSError:
        return False


def is_gguf(path: Path) -> bool:
    """A .gguf name, or GGUF content under any other name."""
    return path.suffix.lower() == GGUF_SUFFIX or (path.is_file() and has_gguf_magic(path))


def gguf_message(names: list[str], component: str) -> str:
    """'<name> is a GGUF file (...). Portrait Studio loads ...; use e.g. ... instead.'"""
    loads, use = INSTEAD.get(component, INSTEAD["transformer"])
    if len(names) == 1:
        subject = f"{names[0]} is a GGUF file"
    else:
        subject = f"{', '.join(names[:-1])} and {names[-1]} are GGUF files"
    return f"{subject} ({WHAT_IT_IS}). Portrait Studio loads {loads}; use e.g. {use} instead."


# The reason a CheckpointError or a search trail gives for a GGUF file (after its name).
GGUF_REASON = f"is a GGUF file ({WHAT_IT_IS}), which Portrait Studio does not support"
