"""Resolution order for each component: ModelParams names -> ComfyUI models folder ->
diffusers folder -> Hugging Face repo (cache, then download when online). Tiny is chosen
by the config's `tiny` flag alone, never as a silent fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from engine.errors import ModelNotFoundError
from engine.models.gguf import gguf_message
from engine.models.locate import comfy_gguf_files, find_in_comfy, find_in_diffusers, find_in_hub
from engine.models.locate_text import find_tokenizer
from engine.models.precision import resolve_weight_dtype
from engine.models.shortfall import missing_pieces, without_advice
from engine.models.specs import COMPONENT_NAMES, Trail, WeightSpec
from engine.recipe import ModelParams

if TYPE_CHECKING:
    from engine.models.manager import ModelConfig

WEIGHT_FIELDS = (("transformer", "transformer"), ("vae", "vae"), ("clip", "clip_l"), ("t5", "t5"))
TOKENIZER_OF = {"clip_tokenizer": "clip", "t5_tokenizer": "t5"}
TEXT_PARTS = ("clip", "t5", "clip_tokenizer", "t5_tokenizer")
# (transformer dimension, other component, its dimension) that must agree.
INTERFACES = (
    ("joint_attention_dim", "t5", "d_model"),
    ("pooled_projection_dim", "clip", "hidden_size"),
)


@dataclass
class Resolution:
    """The spec chosen for every component and the trail of where each was searched."""

    specs: dict[str, WeightSpec]
    trails: dict[str, Trail]

    def weight_dtype(self, requested: str, device: torch.device) -> str:
        detected = self.specs["transformer"].detected
        return resolve_weight_dtype(requested, device, detected.file_fp8 if detected else "")

    def label(self) -> str:
        return ", ".join(self.specs[c].label for c in ("transformer", "vae", "clip", "t5"))

    def summary(self, component: str | None = None) -> str:
        if component is not None:
            return self.trails[component].summary()
        merged = Trail()
        for trail in self.trails.values():
            for place in trail.places:
                merged.place(place)
            merged.rejected += [r for r in trail.rejected if r not in merged.rejected]
        return merged.summary()


def tiny_specs() -> Resolution:
    """Every component from the tiny builders."""
    names = ("transformer", "vae", "clip", "t5", "clip_tokenizer", "t5_tokenizer")
    specs = {
        name: WeightSpec(name, "tiny", f"tiny:{name}:v1", label=f"tiny {name}") for name in names
    }
    specs["transformer"] = WeightSpec("transformer", "tiny", "tiny:flux:v1", label="tiny flux")
    return Resolution(specs, {name: Trail() for name in names})


def resolve_specs(config: ModelConfig, params: ModelParams) -> Resolution:
    """Find every component for `params`, or raise ModelNotFoundError (MissingPiecesError)
    naming each missing piece, where it was looked for, and the pieces found."""
    trails = {name: Trail() for name in COMPONENT_NAMES}
    specs: dict[str, WeightSpec] = {}
    problems: dict[str, str] = {}
    for component, field_name in WEIGHT_FIELDS:
        name = getattr(params, field_name)
        try:
            specs[component] = _find_weights(config, component, name, trails[component])
        except ModelNotFoundError as exc:
            problems[component] = without_advice(str(exc))
    for component, encoder in TOKENIZER_OF.items():
        spec = find_tokenizer(
            component,
            diffusers_dir=_path(config.diffusers_dir),
            encoder=specs.get(encoder),
            models_dir=_path(config.models_dir),
            repo_id=config.repo_id,
            cache_dir=config.hub_cache_dir,
            trail=trails[component],
            extra_paths=_path(config.extra_model_paths),
            offline=config.offline,
        )
        if spec is None:
            summary = trails[component].summary()
            problems[component] = f"No {COMPONENT_NAMES[component]} found. {summary}"
        else:
            specs[component] = spec
    if problems:
        raise missing_pieces(problems, specs, _path(config.models_dir))
    check_compatible(specs)
    return Resolution(specs, trails)


def _find_weights(config: ModelConfig, component: str, name: str, trail: Trail) -> WeightSpec:
    what = COMPONENT_NAMES[component]
    models_dir = _path(config.models_dir)
    if models_dir is not None:
        spec = find_in_comfy(models_dir, component, name, trail)
        if spec is not None:
            return spec
    if name:  # a named file comes from the models folder only: never substitute another
        raise trail.error(f"The {what} file {name!r} was not found.")
    if config.diffusers_dir is not None:
        spec = find_in_diffusers(Path(config.diffusers_dir), component, trail)
        if spec is not None:
            return spec
    if config.repo_id:
        spec = find_in_hub(
            config.repo_id, component, config.hub_cache_dir, trail, offline=config.offline
        )
        if spec is not None:
            return spec
    gguf = comfy_gguf_files(models_dir, component) if models_dir is not None else []
    if gguf:  # say plainly why the file the person put there is not used
        names = [path.name for path in gguf]
        raise trail.error(f"No {what} found. {gguf_message(names, component)}")
    raise trail.error(f"No {what} found.")


def check_compatible(specs: dict[str, WeightSpec]) -> None:
    """Refuse components whose interfaces differ (e.g. a tiny T5 with a real transformer)."""
    transformer = specs["transformer"].detected
    if transformer is None:
        return
    dims = transformer.dims()
    for key, other, other_key in INTERFACES:
        detected = specs[other].detected
        if detected is None or key not in dims:
            continue
        theirs = detected.dims().get(other_key)
        if theirs is not None and dims[key] is not None and theirs != dims[key]:
            raise ModelNotFoundError(
                f"These files do not belong together: the transformer "
                f"{specs['transformer'].label!r} expects a {COMPONENT_NAMES[other]} of width "
                f"{dims[key]}, but {specs[other].label!r} has width {theirs}."
            )


def _path(value: Path | str | None) -> Path | None:
    return None if value is None else Path(value)
