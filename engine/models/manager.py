"""ModelManager: find the Flux weights, load them once, keep them warm, report what it did."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from transformers import CLIPTextModel, T5EncoderModel

from engine.errors import ModelNotFoundError, StudioError
from engine.lora.stack import LoraStack
from engine.models import loaders
from engine.models.attention import choose_attention
from engine.models.checkpoint import CheckpointError
from engine.models.diagnose import diagnosis_text, log_unusual
from engine.models.fill import HOW_TO_GET_FILL, find_fill, load_fill
from engine.models.memory import home_device, plan_memory
from engine.models.precision import (
    DeviceFacts,
    apply_t5_fp8_storage,
    apply_weight_storage,
    compute_dtype_for,
    keeps_t5_fp8,
    pick_device,
    precision_path,
    storage_dtype,
)
from engine.models.resolve import TEXT_PARTS, Resolution, resolve_specs, tiny_specs
from engine.models.runtime import COMPILE_MODE, Runtime, resolve_compile
from engine.models.shortfall import MissingPiecesError
from engine.models.specs import COMPONENT_NAMES, HOW_TO_GET_WEIGHTS, WeightSpec
from engine.models.tiny import TINY_T5_MAX_LENGTH
from engine.recipe import ModelParams
from engine.speed_options import FP8_COMPUTE_MODES, check_choice

TINY_LABEL = "tiny random demo models (not real Flux)"
COMPONENTS = ("transformer", "vae", "clip", "t5", "clip_tokenizer", "t5_tokenizer")
# Real Flux was trained with these T5 lengths (dev 512, schnell 256).
T5_MAX_LENGTH = {"dev": 512, "schnell": 256}

TransformerHook = Callable[[FluxTransformer2DModel, "FluxFiles"], None]


@dataclass(frozen=True)
class ModelConfig:
    """Where to look for weights, and on which device to run them."""

    models_dir: Path | None = None
    diffusers_dir: Path | None = None
    repo_id: str | None = None
    tiny: bool = False
    device: str = "auto"
    hub_cache_dir: Path | None = None  # None: huggingface_hub's own cache
    extra_model_paths: Path | None = None  # a ComfyUI extra_model_paths.yaml (tokenizers)
    offline: bool = False  # never download (tokenizers, repos), even when online
    fp8_compute: str = "auto"  # engine/speed_options.py says what each choice does
    compile: str = "auto"
    memory: str = "auto"


@dataclass(frozen=True)
class FluxFiles:
    """What resolve() found (cheap: no weights read). The identities go into cache keys."""

    transformer: str
    vae: str
    text: str
    weight_dtype: str
    label: str
    specs: tuple[WeightSpec, ...] = field(default=(), repr=False)
    precision: str = "full"  # FULL, FP8_STORAGE or FP8_COMPUTE (precision.py)

    def spec(self, component: str) -> WeightSpec:
        return next(s for s in self.specs if s.component == component)


@dataclass
class FluxBundle:
    """The loaded, warm components of one Flux setup."""

    transformer: FluxTransformer2DModel
    vae: AutoencoderKL
    clip_tokenizer: Any
    clip: CLIPTextModel
    t5_tokenizer: Any
    t5: T5EncoderModel
    files: FluxFiles
    device: torch.device
    compute_dtype: torch.dtype
    t5_max_length: int
    runtime: Runtime

    def describe_runtime(self) -> str:
        return self.runtime.describe(self.files.precision)


class ModelManager:
    """Owns every set of Flux weights: one warm copy of each component, reused across runs."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.device = pick_device(config.device)
        # Called on the transformer after loading and before fp8 casting: LoRA goes here,
        # because layers added after casting are not cast (and fp8 LoRA math fails on CPU).
        self.before_casting: list[TransformerHook] = []
        self._warm: dict[str, tuple[tuple, Any]] = {}
        self._counts = dict.fromkeys((*COMPONENTS, "fill"), 0)
        self._lock = threading.RLock()
        self._loras: LoraStack | None = None
        self.facts = DeviceFacts.of(self.device)
        self.memory = plan_memory(config.memory, self.device)
        self.compiles = resolve_compile(config.compile, self.device)
        check_choice("fp8 compute", config.fp8_compute, FP8_COMPUTE_MODES)
        self._runtime: Runtime | None = None

    def runtime(self) -> Runtime:
        """The device-level choices; the attention kernels are ranked on first use."""
        with self._lock:
            if self._runtime is None:
                attention = choose_attention(self.device)
                self._runtime = Runtime(self.facts, self.compiles, self.memory, attention)
            return self._runtime

    def resolve(self, params: ModelParams) -> FluxFiles:
        """Find the files for `params`; raises ModelNotFoundError listing every place searched."""
        return self._resolve(params)[0]

    def _resolve(self, params: ModelParams) -> tuple[FluxFiles, Resolution]:
        found = tiny_specs() if self.config.tiny else resolve_specs(self.config, params)
        weight_dtype = found.weight_dtype(params.weight_dtype, self.device)
        specs = found.specs
        text = "|".join(f"{part}={specs[part].identity}" for part in TEXT_PARTS)
        label = TINY_LABEL if self.config.tiny else found.label()
        files = FluxFiles(
            transformer=specs["transformer"].identity,
            vae=specs["vae"].identity,
            text=text,
            weight_dtype=weight_dtype,
            label=label,
            specs=tuple(specs[c] for c in COMPONENTS),
            precision=precision_path(weight_dtype, self.facts, self.config.fp8_compute),
        )
        return files, found

    def flux(self, params: ModelParams) -> FluxBundle:
        """The warm bundle for `params`, loading only the components that changed."""
        with self._lock:
            files, found = self._resolve(params)
            compute = compute_dtype_for(self.device, files.weight_dtype)
            parts = {c: self._warm_component(c, files, compute, found) for c in COMPONENTS}
            return FluxBundle(
                transformer=parts["transformer"],
                vae=parts["vae"],
                clip_tokenizer=parts["clip_tokenizer"],
                clip=parts["clip"],
                t5_tokenizer=parts["t5_tokenizer"],
                t5=parts["t5"],
                files=files,
                device=self.device,
                compute_dtype=compute,
                t5_max_length=self._t5_max_length(files, parts["transformer"]),
                runtime=self.runtime(),
            )

    def _warm_component(
        self, component: str, files: FluxFiles, compute: torch.dtype, found: Resolution
    ) -> Any:
        spec = files.spec(component)
        key = (spec.identity, str(self.device), compute)
        if component == "transformer":
            key += (files.weight_dtype, files.precision)
        cached = self._warm.get(component)
        if cached is not None and cached[0] == key:
            return cached[1]
        self._forget(component)  # free the old copy before loading a new one
        try:
            value = self._load(component, spec, files, compute)
        except CheckpointError as exc:
            raise self._load_error(spec, str(exc), found) from exc
        self._warm[component] = (key, value)
        self._counts[component] += 1
        return value

    def _load(self, component: str, spec: WeightSpec, files: FluxFiles, dtype: torch.dtype) -> Any:
        if spec.source == "hub":
            spec = loaders.download(spec, self.config.hub_cache_dir)
        if component.endswith("_tokenizer"):
            return loaders.load_tokenizer(spec)
        log_unusual(spec)  # a block missing or an odd count: a warning, not a refusal
        if component == "transformer":
            return self._load_transformer(spec, files, dtype)
        load = {"vae": loaders.load_vae, "clip": loaders.load_clip, "t5": loaders.load_t5}
        model = load[component](spec, dtype)
        if component == "t5" and self._keeps_fp8(spec):
            apply_t5_fp8_storage(model, dtype)  # a plain fp8 T5 file stays fp8, as in ComfyUI
        if component == "vae" and self.memory.tiled_vae:
            model.enable_tiling()
        return model.to(home_device(self.memory, self.device, component))

    def _keeps_fp8(self, spec: WeightSpec) -> bool:
        """A plain fp8 T5 file on a GPU: its weights stay fp8 (a CPU computes in fp32 anyway)."""
        found = spec.detected
        return found is not None and keeps_t5_fp8(found.file_fp8, found.fp8_scaled, self.device)

    def fill_spec(self) -> WeightSpec | None:
        """The FLUX.1 Fill file the models folder has (the tiny one in demo mode), or None."""
        return find_fill(self.config.models_dir, self.config.tiny)

    def fill(self, params: ModelParams) -> FluxTransformer2DModel | None:
        """The warm FLUX.1 Fill transformer, or None without one. It follows the base
        transformer's precision path (fp8 storage or compute, compile) on the same device,
        and carries no LoRAs: the stack follows the base transformer."""
        spec = self.fill_spec()
        if spec is None:
            return None
        with self._lock:
            files = self.resolve(params)
            compute = compute_dtype_for(self.device, files.weight_dtype)
            key = (spec.identity, str(self.device), compute, files.weight_dtype, files.precision)
            cached = self._warm.get("fill")
            if cached is not None and cached[0] == key:
                return cached[1]
            self._forget("fill")
            log_unusual(spec)
            try:
                model = self._load_transformer(spec, files, compute, load=load_fill)
            except CheckpointError as exc:
                raise ModelNotFoundError(
                    f"The {COMPONENT_NAMES['fill']} {spec.label!r} ({spec.path}) {exc}. "
                    f"{HOW_TO_GET_FILL}"
                ) from exc
            self._warm["fill"] = (key, model)
            self._counts["fill"] += 1
            return model

    def _load_transformer(
        self,
        spec: WeightSpec,
        files: FluxFiles,
        compute: torch.dtype,
        load: Callable[[WeightSpec, torch.dtype], FluxTransformer2DModel] | None = None,
    ) -> FluxTransformer2DModel:
        """The base transformer with the LoRA hooks, or (`load` given) another transformer
        loaded by it on the same precision path without them."""
        model = (load or loaders.load_transformer)(spec, compute)
        for hook in self.before_casting if load is None else ():
            hook(model, files)
        apply_weight_storage(model, storage_dtype(files.weight_dtype), compute, files.precision)
        model = model.to(self.device)
        if self.compiles:
            # Regional: the blocks repeat, and the first-block cache calls them one by one.
            model.compile_repeated_blocks(mode=COMPILE_MODE)
        return model

    def _forget(self, component: str) -> None:
        if self._warm.pop(component, None) is not None:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _load_error(self, spec: WeightSpec, reason: str, found: Resolution) -> ModelNotFoundError:
        what = COMPONENT_NAMES[spec.component]
        where = f"{spec.label!r} ({spec.path})" if spec.path else repr(spec.label)
        return ModelNotFoundError(
            f"The {what} {where} {reason}. {found.summary(spec.component)} {HOW_TO_GET_WEIGHTS}"
        )

    def _t5_max_length(self, files: FluxFiles, transformer: FluxTransformer2DModel) -> int:
        spec = files.spec("transformer")
        if spec.source == "tiny" or (spec.detected and spec.detected.family == "tiny"):
            return TINY_T5_MAX_LENGTH
        return T5_MAX_LENGTH["dev" if transformer.config.guidance_embeds else "schnell"]

    def loras(self) -> LoraStack:
        """The LoRA stack over the warm transformer and CLIP (files from <models>/loras).

        One per manager: it follows whichever transformer is warm, loading files again into
        a newly loaded one.
        """
        with self._lock:
            if self._loras is None:
                folder = self.config.models_dir / "loras" if self.config.models_dir else None
                self._loras = LoraStack(folder)
            return self._loras

    def describe(self) -> str:
        """One paragraph for the UI: what was found, or where we looked and how to get weights."""
        if self.config.tiny:
            return (
                f"Demo mode: {TINY_LABEL}, built in code from fixed seeds; images are "
                f"noise-like patterns. Device: {self.device.type}."
            )
        models_dir = Path(self.config.models_dir) if self.config.models_dir else None
        try:
            files, found = self._resolve(ModelParams())
        except MissingPiecesError as exc:  # the message starts by saying what is missing
            head = str(exc) if exc.weights_ok else f"No usable Flux weights yet. {exc}"
            return head + diagnosis_text(models_dir)
        except StudioError as exc:
            return f"No usable Flux weights yet. {exc}" + diagnosis_text(models_dir)
        return (
            f"Flux weights found: {files.label}. Transformer precision {files.weight_dtype} "
            f"({files.precision}) on {self.device.type}.{self._t5_precision(files)} "
            f"{found.summary()}"
        ) + diagnosis_text(models_dir, files.specs)

    def _t5_precision(self, files: FluxFiles) -> str:
        """' T5-XXL file in fp8_e4m3fn (scaled), ...' for an fp8 T5 file, else ''."""
        found = files.spec("t5").detected
        if found is None or not found.file_fp8:
            return ""
        if keeps_t5_fp8(found.file_fp8, found.fp8_scaled, self.device):
            kept = "kept in fp8"
        else:
            compute = compute_dtype_for(self.device, files.weight_dtype)
            kept = f"dequantised to {str(compute).removeprefix('torch.')}"
        scaled = " (scaled)" if found.fp8_scaled else ""
        return f" T5-XXL file in {found.file_fp8}{scaled}, {kept}."

    def load_counts(self) -> dict[str, int]:
        """How many times each component was actually loaded (not served warm)."""
        with self._lock:
            return dict(self._counts)
