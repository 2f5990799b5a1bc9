"""The variants bench/flux_speed.py measures, "<precision>[+fuse][+compile|+compile-max]
[+fbcache]", parsed into what the transformer is built with (flux_speed.py's docstring says
what each part means)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.models.precision import FP8_COMPUTE, FP8_STORAGE

PRECISIONS = {"bf16": None, "fp8": FP8_STORAGE, "fp8c": FP8_COMPUTE}  # -> precision path
COMPILE_MODES = {"compile": "default", "compile-max": "max-autotune-no-cudagraphs"}
ALIASES = {  # the names of the first version of this benchmark
    "compile": "bf16+compile",
    "compile-max": "bf16+compile-max",
    "fbcache": "bf16+fbcache",
    "compile+fbcache": "bf16+compile+fbcache",
}
EXAMPLES = "bf16, fp8c+compile, fp8+fbcache, fp8c+compile-max+fbcache, vae"
# On CUDA the groups run in this order, the most telling first, so a time budget that runs
# out (--budget-s) skips the least telling ones.
DEFAULT_VARIANTS = {
    "cuda": ",".join(
        f"{kind}{cache}"
        for kind in ("bf16", "fp8c", "fp8c+compile", "bf16+compile", "fp8", "fp8+compile")
        for cache in ("", "+fbcache")
    )
    + ",vae",
    "cpu": "bf16,fp8,fp8c,bf16+compile,bf16+fbcache,vae",
}


@dataclass(frozen=True)
class Variant:
    """One parsed variant name."""

    precision: str
    compile: str  # "" | "compile" | "compile-max"
    fbcache: bool
    fuse: bool = False  # q, k, v projections fused into one Linear (diffusers)

    @classmethod
    def parse(cls, name: str) -> Variant:
        parts = ALIASES.get(name, name).split("+")
        precision = parts.pop(0) if parts[0] in PRECISIONS else "bf16"
        flags = {flag: flag in parts for flag in ("fbcache", "fuse")}
        rest = [p for p in parts if p not in flags]
        if len(rest) > 1 or (rest and rest[0] not in COMPILE_MODES):
            raise ValueError(name)
        return cls(precision, rest[0] if rest else "", **flags)

    @property
    def kind(self) -> str:
        """The transformer it runs on: the cache variants share their plain one's."""
        fuse = "+fuse" if self.fuse else ""
        return self.precision + fuse + (f"+{self.compile}" if self.compile else "")
