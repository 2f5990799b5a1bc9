"""The Engine: models kept warm, a shared artifact cache, and recipe -> RunResult."""

from __future__ import annotations

import atexit
import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from engine.budget import RunBudget, RunEstimate, Workload
from engine.cache import ArtifactCache
from engine.color.grader import ColorGrader
from engine.errors import InputError, StudioError
from engine.expression.models import ExpressionConfig, ExpressionModels
from engine.faces.find import list_detector_files
from engine.graph import StageContext, StageGraph
from engine.identity.controlnet import find_controlnets
from engine.identity.models import IdentityModels
from engine.identity.pose_json import POSE_JSON_NAME, pose_json_png
from engine.images import ImageStore, tensor_to_pil
from engine.lora import LORA_LIBRARY, TURBO_LORA, LoraStack
from engine.metadata import read_recipe_file
from engine.models.fill import HOW_TO_GET_FILL
from engine.models.manager import FluxBundle, FluxFiles, ModelConfig, ModelManager
from engine.models.memory import peak_gb, reset_peak
from engine.models.precision import pick_device
from engine.outputs import save_outputs, write_over
from engine.recipe import ModelParams, Recipe
from engine.redux.models import ReduxConfig, ReduxModelManager
from engine.refine.models import RefineModels
from engine.refine.result import RefinedImages, images_of
from engine.regions.preview import region_preview
from engine.run_guard import HEAVY_STAGES, RunGuard
from engine.runtypes import CancelToken, Progress, ProgressFn, RunReport
from engine.settled_writer import SettledWriter
from engine.sizes import render_size, size_notes
from engine.stage_images import StageImages
from engine.stage_list import FINAL_STAGE, IMAGE_STAGES, build_stages
from engine.stages.identity_score import STAGE as IDENTITY_STAGE
from engine.stages.identity_score import ScoredImages
from engine.stages.refine import REFINE_STAGES
from engine.stages.upscale_caption import CAPTION_STAGE, Captions
from engine.support import usage_notes
from engine.upscale.models import UpscaleModels, UpscaleModelsConfig
from engine.warmup import WarmUp

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LUTS = REPO_ROOT / "assets" / "luts"


@dataclass(frozen=True)
class EngineConfig:
    models: ModelConfig = field(default_factory=ModelConfig)
    outputs_dir: Path = Path("outputs")
    data_dir: Path = Path("data")
    lut_folders: tuple[Path, ...] = ()
    cache_bytes: int = 2 * 1024**3
    budget: RunBudget = RunBudget()  # max_gb None: what the device has


@dataclass
class RunResult:
    """What a run returns to the studio, the API and the CLI."""

    recipe: Recipe
    images: list[Image.Image]
    artifacts: StageImages  # stage name -> images, converted on first access
    report: RunReport
    saved: list[Path]
    model_label: str = ""  # the model file the PNG metadata names


class RunScope:
    """Per-run view of the engine for stages: model files resolved once, lazily."""

    def __init__(self, engine: Engine, model_params: ModelParams) -> None:
        self.engine = engine
        self.model_params = model_params
        self.images = engine.images
        self.grader = engine.grader
        self.device = engine.device
        self._files: FluxFiles | None = None

    def flux_files(self) -> FluxFiles:
        if self._files is None:
            self._files = self.engine.models.resolve(self.model_params)
        return self._files

    def flux_bundle(self) -> FluxBundle:
        return self.engine.models.flux(self.model_params)

    def loras(self) -> LoraStack:
        return self.engine.models.loras()

    def fill_identity(self) -> str:
        """The FLUX.1 Fill file's identity, or "" without one (it goes into cache keys)."""
        spec = self.engine.models.fill_spec()
        return spec.identity if spec is not None else ""

    def fill_transformer(self) -> Any:
        """The warm FLUX.1 Fill transformer, or None without one."""
        return self.engine.models.fill(self.model_params)

    def lut_identity(self, name: str) -> str:
        """Name, size and mtime of the LUT file, so editing the file re-runs the grade."""
        return self.engine.lut_identity(name)


class Engine:
    """One per process: owns the models, the cache, the stage graph and the image store."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.models = ModelManager(config.models)
        self.redux_models = ReduxModelManager(ReduxConfig.from_model_config(config.models))
        self.device = pick_device(config.models.device)
        self.cache = ArtifactCache(config.cache_bytes)
        self.images = ImageStore(config.data_dir / "images")
        self.grader = ColorGrader(list(self.lut_folders))
        self.expression_models = ExpressionModels(
            ExpressionConfig(config.models.models_dir, config.models.tiny, config.models.device)
        )
        self.refine_models = RefineModels(config.models.models_dir, str(self.device))
        self.upscale_models = UpscaleModels(
            UpscaleModelsConfig(
                config.models.models_dir, str(self.device), config.models.tiny, config.data_dir
            )
        )
        m = config.models
        self.identity_models = IdentityModels(m.models_dir, m.tiny, m.device, m.hub_cache_dir)
        self.graph = StageGraph(build_stages(), self.cache)
        self._diffusion: bool | None = None
        self._lock = threading.Lock()
        self.warmup = WarmUp()
        self.saves = SettledWriter()
        self.guard = RunGuard(config.budget, self.device)
        atexit.register(self.saves.flush, 10.0)  # the last grade reaches its PNG on exit

    @property
    def lut_folders(self) -> tuple[Path, ...]:
        folders = [DEFAULT_LUTS, *self.config.lut_folders]
        if self.config.models.models_dir:
            folders.append(self.config.models.models_dir / "luts")
        return tuple(folders)

    def run(
        self,
        recipe: Recipe,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
        save: bool = True,
        outputs_dir: Path | None = None,
    ) -> RunResult:
        """Render a recipe, re-running only the stages whose inputs changed; PNGs go to
        `outputs_dir` (default: the configured outputs folder)."""
        notes = size_notes(recipe.prompt) + self._prompt_notes(recipe) if _generates(recipe) else []
        report = RunReport(notes=notes + usage_notes(recipe))
        scope = RunScope(self, recipe.model)
        ctx = StageContext(scope, report, progress, cancel)
        reset_peak(self.device)
        loads = self.models.load_counts()
        with self.guard.out_of_memory_recovery(recipe):
            found = self._check_budget(recipe, scope)
            if found is not None and progress is not None:  # the bar shows it from the start
                progress(Progress("estimate", 0, 0, found.short()))
            artifacts = self.graph.run(recipe, scope, ctx, FINAL_STAGE)
        self.guard.observe(found, report, loaded=self.models.load_counts() != loads)
        if found is not None:
            report.notes.append(f"Estimated before the run: {found.short()}")
        self._note_peak(report)
        _collect_detections(report, artifacts)
        _collect_caption(report, artifacts)
        _collect_identity(report, artifacts)
        images = tensor_to_pil(images_of(artifacts["__final__"]))
        label = scope.flux_files().label if _generates(recipe) else ""
        folder = outputs_dir or self.config.outputs_dir
        extras = report.identity_fields()
        saved = save_outputs(images, recipe, folder, label, extras) if save else []
        stage_images = StageImages(
            {n: images_of(artifacts[n]) for n in IMAGE_STAGES if n in artifacts}, tensor_to_pil
        )
        stage_images.put(FINAL_STAGE, images)
        return RunResult(recipe, images, stage_images, report, saved, label)

    def _check_budget(self, recipe: Recipe, scope: RunScope) -> RunEstimate | None:
        """Refuse a render over the run budget before its heavy stages start."""
        if not (_generates(recipe) or _finishes_with_flux(recipe)):
            return None  # an upload's expression edit alone needs no Flux
        pending = self.graph.pending(recipe, scope, FINAL_STAGE)
        if not pending & set(HEAVY_STAGES):
            return None
        return self.guard.check(recipe, scope.flux_bundle(), pending)

    def estimate(self, recipe: Recipe) -> RunEstimate:
        """What the whole render of `recipe` would cost, cached stages or not."""
        bundle = RunScope(self, recipe.model).flux_bundle()
        return self.guard.estimate(recipe, bundle, Workload())

    def save_as_new(self, result: RunResult, outputs_dir: Path | None = None) -> list[Path]:
        """Write a result's images as new PNGs beside the earlier ones ("Keep as new")."""
        folder = outputs_dir or self.config.outputs_dir
        return save_outputs(
            result.images, result.recipe, folder, result.model_label,
            result.report.identity_fields(),
        )  # fmt: skip

    def save_settled(
        self,
        key: str,
        result: RunResult,
        paths: Sequence[Path | str],
        then: Callable[[], None] | None = None,
    ) -> None:
        """Rewrite `paths` with this result (then call `then`) once no newer result for
        `key` came for a moment: a re-grade updates its PNGs without waiting for the disk."""
        images, recipe, label = list(result.images), result.recipe, result.model_label
        files, extras = [Path(p) for p in paths], result.report.identity_fields()

        def job() -> None:
            write_over(images, recipe, files, label, extras)
            if then is not None:
                then()

        self.saves.submit(key, job)

    def _note_peak(self, report: RunReport) -> None:
        """The GPU's peak allocated memory, when this run used the diffusion models."""
        peak = peak_gb(self.device)
        stages = self.graph.stages
        used_models = any(stages[name].uses_models for name in report.ran_names)
        if peak is not None and used_models:
            report.notes.append(f"GPU memory peak during this run: {peak:.1f} GB")

    def start_warm_up(self) -> None:
        """Load, rank attention kernels and compile in the background (see engine/warmup.py)."""
        self.warmup.start(self)

    def _prompt_notes(self, recipe: Recipe) -> list[str]:
        slots = recipe.prompt.loras
        encoded = self.models.loras().prompt_with_triggers(recipe.prompt.prompt, slots)
        return [f"Prompt as encoded: {encoded}"] if encoded != recipe.prompt.prompt else []

    def store_image(self, data: bytes, name: str = "The image") -> str:
        """Check and store an uploaded image; returns its content digest."""
        return self.images.put(data, name)

    def store_pose_json(self, data: bytes, recipe: Recipe) -> str:
        """Draw an OpenPose keypoint JSON's skeleton at `recipe`'s render size and store the
        picture; returns its digest (InputError says what is wrong with the JSON)."""
        picture = pose_json_png(data, *render_size(recipe.prompt))
        return self.store_image(picture, POSE_JSON_NAME)

    def load_image(self, digest: str) -> Image.Image:
        """A stored upload by its digest (InputError when the store does not have it)."""
        return self.images.load(digest)

    def read_recipe_file(self, path: Path) -> Recipe:
        return read_recipe_file(path)

    def default_recipe(self) -> Recipe:
        """The studio's starting recipe; the tiny demo renders small and fast."""
        recipe = Recipe()
        if not self.config.models.tiny:
            return recipe
        prompt = dataclasses.replace(recipe.prompt, width=256, height=256)
        settings = dataclasses.replace(recipe.settings, steps=8)
        return dataclasses.replace(recipe, prompt=prompt, settings=settings)

    def has_diffusion(self) -> bool:
        """Whether Flux weights were found (cached after the first look)."""
        with self._lock:
            if self._diffusion is None:
                try:
                    self.models.resolve(ModelParams())
                    self._diffusion = True
                except StudioError:
                    self._diffusion = False
            return self._diffusion

    def models_status(self) -> str:
        parts = [
            self.models.describe(),
            self.redux_models.describe(),
            self.expression_models.describe(),
            self.refine_models.describe(),
            self.upscale_models.describe(),
            self.warmup.describe(),
        ]
        return "\n\n".join(part for part in parts if part)

    def expression_status(self) -> str:
        """Which LivePortrait networks and face detector the Expression tab uses."""
        return self.expression_models.describe()

    def refine_status(self) -> str:
        """Which detector each Refine region uses, SAM, the identity backend and Fill."""
        fill = self.models.fill_spec()
        found = f"FLUX.1 Fill: {fill.label}." if fill else f"No FLUX.1 Fill. {HOW_TO_GET_FILL}"
        return f"{self.refine_models.describe()} {found}"

    def upscale_status(self) -> str:
        """The upscale models found and the captioner found (or where to put it)."""
        return self.upscale_models.describe()

    def list_upscalers(self) -> list[str]:
        """Upscale model files under <models>/upscale_models/ (empty without a models folder)."""
        return self.upscale_models.list_upscalers()

    def region_preview(self, recipe: Recipe, picture: Image.Image | None = None) -> Image.Image:
        """The regions' masks over the render canvas (Regions panel), over `picture` or grey."""
        return region_preview(recipe, self.images.load, picture)

    def list_controlnets(self) -> list[str]:
        """FLUX.1 ControlNets under <models>/controlnet/ (names relative to it; empty without
        a models folder, and in demo mode, where a tiny one serves)."""
        models_dir = self.config.models.models_dir
        if self.config.models.tiny or models_dir is None:
            return []
        found, _ = find_controlnets(models_dir)
        root = models_dir / "controlnet"
        return [spec.path.relative_to(root).as_posix() for spec in found if spec.path]

    def list_detectors(self) -> list[str]:
        """Detector files under <models>/ultralytics/ (bbox/, segm/, the folder itself)."""
        return list_detector_files(self.config.models.models_dir)

    def demo_label(self) -> str | None:
        if self.config.models.tiny:
            return "Demo mode: tiny random models, not real Flux. Images are noise-like patterns."
        return None

    def list_loras(self) -> list[str]:
        """LoRA file names in <models>/loras (empty without a models folder)."""
        return self.models.loras().list_files()

    def lora_triggers(self, name: str) -> list[str]:
        """Trigger words of a LoRA file: its metadata, else the LoRA library's entry."""
        return self.models.loras().trigger_words(name)

    def lora_library(self) -> list[dict]:
        """The suite's recommended LoRAs (seed 000 §4.4 and the Turbo LoRA) as plain dicts."""
        return [dataclasses.asdict(item) for item in (*LORA_LIBRARY, TURBO_LORA)]

    def list_luts(self) -> list[str]:
        return self.grader.list_luts()

    def lut_identity(self, name: str) -> str:
        path = self.grader.resolve_lut(name)
        try:
            stat = path.stat()
        except OSError as exc:
            raise InputError(f"The LUT {name!r} cannot be read: {exc.strerror}.") from exc
        return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def _collect_detections(report: RunReport, artifacts: dict) -> None:
    """What every Refine stage of the run found, whether it ran now or came from the cache."""
    for name in (*REFINE_STAGES, "refine_chin"):
        value = artifacts.get(name)
        if isinstance(value, RefinedImages):
            report.detections[name] = value.detections


def _collect_identity(report: RunReport, artifacts: dict) -> None:
    """Each image's identity score and its report line, whether scored now or cached."""
    value = artifacts.get(IDENTITY_STAGE)
    if isinstance(value, ScoredImages):
        report.identity = list(value.scores)
        report.identity_backend = value.backend
        report.notes.append(value.note())


def _collect_caption(report: RunReport, artifacts: dict) -> None:
    """The captioner's text (one paragraph per batch image), whether it ran now or came from
    the cache."""
    value = artifacts.get(CAPTION_STAGE)
    if isinstance(value, Captions):
        report.caption = value.text()


def _finishes_with_flux(recipe: Recipe) -> bool:
    """Whether a Refine pass (detailer or chin) or an Upscale pass will sample with Flux."""
    refine = recipe.refine
    chin = refine.enabled and refine.chin.enabled
    return bool(refine.active_regions()) or chin or bool(recipe.upscale.active_passes())


def _generates(recipe: Recipe) -> bool:
    """Whether Flux renders this recipe (text-to-image or img2img)."""
    return recipe.source.kind != "image"
