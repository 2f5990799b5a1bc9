"""Finding, loading and keeping warm the two Redux models: SigLIP and the Redux MLP.

Searched in order, per component: a ComfyUI models folder (clip_vision/ for SigLIP,
style_models/ for Redux), a diffusers FLUX.1-Redux-dev folder (image_encoder/,
image_embedder/), then black-forest-labs/FLUX.1-Redux-dev on the Hugging Face hub (its cache,
then a download while online). Tiny random models built in code from fixed seeds stand in
when the config says tiny. The engine holds one `ReduxModelManager` beside its ModelManager.
"""

from __future__ import annotations

import gc
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder
from transformers import SiglipVisionConfig, SiglipVisionModel

from engine.errors import ModelNotFoundError
from engine.models import loaders, locate
from engine.models.checkpoint import SUFFIXES, CheckpointError, Header, read_header, read_tensors
from engine.models.detect import Detected
from engine.models.precision import compute_dtype_for, pick_device
from engine.models.specs import Trail, WeightSpec, file_identity, folder_identity
from engine.models.tiny import TINY_TRANSFORMER, seeded

if TYPE_CHECKING:
    from engine.models.manager import ModelConfig

COMPONENTS = ("siglip", "redux")
NAMES = {"siglip": "SigLIP vision encoder", "redux": "Redux encoder"}
COMFY_FOLDERS = {"siglip": "clip_vision", "redux": "style_models"}
EXPECTED_FILES = {
    "siglip": "sigclip_vision_patch14_384.safetensors",
    "redux": "flux1-redux-dev.safetensors",
}
PREFERRED_NAMES = {"siglip": ("sigclip", "siglip"), "redux": ("flux1-redux", "redux")}
DIFFUSERS_SUBFOLDERS = {"siglip": "image_encoder", "redux": "image_embedder"}
REDUX_REPO = "black-forest-labs/FLUX.1-Redux-dev"
HOW_TO_GET_REDUX = (
    "To use Redux: put sigclip_vision_patch14_384.safetensors in the models folder's "
    "clip_vision/ and flux1-redux-dev.safetensors in its style_models/, or point the studio "
    f"at a diffusers {REDUX_REPO.split('/')[1]} folder (image_encoder/, image_embedder/), or "
    f"allow downloads of {REDUX_REPO} (a gated repo: accept its licence and log in)."
)

SIGLIP_ANCHOR = "vision_model.embeddings.patch_embedding.weight"
# width -> family; only so400m-patch14-384 feeds the real Redux MLP (1152 wide).
SIGLIP_WIDTHS = {1152: "so400m", 32: "tiny"}
# Known per family, since shapes cannot tell: the head count (q/k/v are square) and the input
# size (384 px gives 27 x 27 patches of 14 px, the last 6 px unread, as 378 px would).
SIGLIP_HEADS = {"so400m": 16, "tiny": 4}
SIGLIP_IMAGE_SIZES = {"so400m": 384, "tiny": 56}
# image 56 / patch 14 = 4 x 4 = 16 tokens; the Redux output is the tiny T5 width.
TINY_SIGLIP: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 56,
    "patch_size": 14,
}
TINY_REDUX: dict[str, Any] = {
    "redux_dim": TINY_SIGLIP["hidden_size"],
    "txt_in_features": TINY_TRANSFORMER["joint_attention_dim"],
}
TINY_SEEDS = {"siglip": 1011, "redux": 1012}
# Errors the libraries raise for weights that do not fit the architecture.
_LOAD_ERRORS = (KeyError, ValueError, RuntimeError, IndexError, TypeError, OSError)


@dataclass(frozen=True)
class ReduxConfig:
    """Where to look for the Redux models, and on which device to run them."""

    models_dir: Path | None = None
    redux_dir: Path | None = None  # a diffusers FLUX.1-Redux-dev folder
    repo_id: str | None = None
    tiny: bool = False
    device: str = "auto"
    hub_cache_dir: Path | None = None
    offline: bool = False  # --offline: never download

    @classmethod
    def from_model_config(
        cls, models: ModelConfig, redux_dir: Path | None = None, repo_id: str | None = None
    ) -> ReduxConfig:
        """The Flux config's folders; the Redux repo only when hub downloads are configured."""
        repo = repo_id if repo_id is not None else (REDUX_REPO if models.repo_id else None)
        return cls(
            models_dir=models.models_dir,
            redux_dir=redux_dir,
            repo_id=repo,
            tiny=models.tiny,
            device=models.device,
            hub_cache_dir=models.hub_cache_dir,
            offline=models.offline,
        )


def build_tiny_siglip() -> SiglipVisionModel:
    with seeded(TINY_SEEDS["siglip"]):
        return SiglipVisionModel(SiglipVisionConfig(**TINY_SIGLIP)).eval()


def build_tiny_redux() -> ReduxImageEncoder:
    with seeded(TINY_SEEDS["redux"]):
        return ReduxImageEncoder(**TINY_REDUX).eval()


def redux_models(env: Any) -> ReduxModelManager:
    """The engine's Redux model manager, from a stage's env / services (a RunScope)."""
    return env.engine.redux_models


class ReduxModelManager:
    """One warm copy of SigLIP and of the Redux MLP, reloaded only when the file changes."""

    def __init__(self, config: ReduxConfig) -> None:
        self.config = config
        self.device = pick_device(config.device)
        # fp32 on CPU, bf16 (or fp16) on CUDA: the activation dtype Flux uses by default.
        self.dtype = compute_dtype_for(self.device, "default")
        self._warm: dict[str, tuple[tuple, Any]] = {}
        self._counts = dict.fromkeys(COMPONENTS, 0)
        self._lock = threading.RLock()

    def spec(self, component: str) -> WeightSpec:
        """Where `component` is (headers only); ModelNotFoundError lists every place searched."""
        if self.config.tiny:
            return WeightSpec(component, "tiny", f"tiny:{component}:v1", label=f"tiny {component}")
        trail = Trail()
        spec = find_component(self.config, component, trail)
        if spec is None:
            raise ModelNotFoundError(
                f"No {NAMES[component]} found (e.g. {COMFY_FOLDERS[component]}/"
                f"{EXPECTED_FILES[component]}). {trail.summary()} {HOW_TO_GET_REDUX}"
            )
        return spec

    def identity(self, component: str) -> str:
        """A string that changes when the component's weights do (for cache keys)."""
        return self.spec(component).identity

    def siglip(self) -> SiglipVisionModel:
        return self._warm_component("siglip")

    def redux_encoder(self) -> ReduxImageEncoder:
        return self._warm_component("redux")

    def describe(self) -> str:
        """One line for the UI: which Redux models were found, or where we looked."""
        try:
            labels = [f"{NAMES[c]} {self.spec(c).label}" for c in COMPONENTS]
        except ModelNotFoundError as exc:
            return f"Redux unavailable. {exc}"
        return "Redux models found: " + "; ".join(labels) + "."

    def load_counts(self) -> dict[str, int]:
        """How many times each component was actually loaded (not served warm)."""
        with self._lock:
            return dict(self._counts)

    def _warm_component(self, component: str) -> Any:
        with self._lock:
            spec = self.spec(component)
            key = (spec.identity, str(self.device), self.dtype)
            cached = self._warm.get(component)
            if cached is not None and cached[0] == key:
                return cached[1]
            if self._warm.pop(component, None) is not None:
                gc.collect()  # free the old copy before loading the new one
            try:
                model = load_component(spec, self.dtype, self.config.hub_cache_dir)
            except CheckpointError as exc:
                where = f"{spec.label!r} ({spec.path})" if spec.path else repr(spec.label)
                raise ModelNotFoundError(
                    f"The {NAMES[component]} {where} {exc}. {HOW_TO_GET_REDUX}"
                ) from exc
            model = model.to(self.device)
            self._warm[component] = (key, model)
            self._counts[component] += 1
            return model


# Finding ----------------------------------------------------------------------------------


def find_component(config: ReduxConfig, component: str, trail: Trail) -> WeightSpec | None:
    """ComfyUI folder, then diffusers folder, then the hub (cache, then download when online)."""
    if config.models_dir is not None:
        spec = find_in_comfy(Path(config.models_dir), component, trail)
        if spec is not None:
            return spec
    if config.redux_dir is not None:
        spec = find_in_diffusers(Path(config.redux_dir), component, trail)
        if spec is not None:
            return spec
    if config.repo_id:
        return find_in_hub(
            config.repo_id, component, config.hub_cache_dir, trail, offline=config.offline
        )
    return None


def find_in_comfy(models_dir: Path, component: str, trail: Trail) -> WeightSpec | None:
    folder = models_dir / COMFY_FOLDERS[component]
    trail.place(str(folder) + ("" if folder.is_dir() else " (missing)"))
    if not folder.is_dir():
        return None
    for path in _candidates(folder, PREFERRED_NAMES[component]):
        try:
            header = read_header(path)
        except CheckpointError as exc:
            trail.reject(path, str(exc))
            continue
        found = DETECTORS[component](header)
        if isinstance(found, str):
            trail.reject(path, f"is {found}")
            continue
        identity = file_identity("comfy", models_dir, path)
        return WeightSpec(component, "file", identity, path=path, detected=found, label=path.name)
    return None


def _candidates(folder: Path, preferred: tuple[str, ...]) -> list[Path]:
    """Weight files, those whose name starts with a preferred stem first, then by path."""
    files = [p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()]

    def rank(path: Path) -> tuple[int, str]:
        lower = path.name.lower()
        hit = next((i for i, s in enumerate(preferred) if lower.startswith(s)), len(preferred))
        return hit, str(path)

    return sorted(files, key=rank)


def find_in_diffusers(root: Path, component: str, trail: Trail) -> WeightSpec | None:
    sub = DIFFUSERS_SUBFOLDERS[component]
    folder = root / sub
    trail.place(f"{folder} (diffusers folder)")
    config_file = folder / "config.json"
    if not config_file.is_file() or not any(p.suffix == ".safetensors" for p in folder.iterdir()):
        return None
    try:
        json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        trail.reject(config_file, f"is unreadable ({exc})")
        return None
    identity = folder_identity("diffusers", folder, sub)
    label = f"{root.name}/{sub}"
    return WeightSpec(component, "diffusers", identity, path=root, subfolder=sub, label=label)


def find_in_hub(
    repo_id: str, component: str, cache_dir: Path | None, trail: Trail, offline: bool = False
) -> WeightSpec | None:
    """The Redux repo's subfolder from the HF cache, or a download spec when online (and not
    `offline`)."""
    return locate.find_in_hub(
        repo_id, component, cache_dir, trail, DIFFUSERS_SUBFOLDERS, find_in_diffusers, offline
    )


def detect_siglip(header: Header) -> Detected | str:
    """A SigLIP vision tower in transformers layout (`vision_model.*`), or why not."""
    prefix = header.prefix_of(SIGLIP_ANCHOR)
    if prefix is None:
        return "not a SigLIP vision model"
    p = f"{prefix}vision_model."
    if header.has(f"{p}embeddings.class_embedding"):
        return "a CLIP vision model, not SigLIP (Redux needs SigLIP so400m-patch14-384)"
    hidden, _, patch, _ = header.shapes[f"{p}embeddings.patch_embedding.weight"]
    family = SIGLIP_WIDTHS.get(hidden)
    if family is None:
        return f"a SigLIP vision model of width {hidden}, not so400m (1152)"
    positions = header.shapes[f"{p}embeddings.position_embedding.weight"][0]
    image_size = SIGLIP_IMAGE_SIZES[family]
    if (image_size // patch) ** 2 != positions:
        return f"a SigLIP vision model with {positions} patches, not {image_size} px / {patch}"
    config = {
        "hidden_size": hidden,
        "intermediate_size": header.shapes[f"{p}encoder.layers.0.mlp.fc1.weight"][0],
        "num_hidden_layers": header.count_blocks(f"{p}encoder.layers."),
        "num_attention_heads": SIGLIP_HEADS[family],
        "image_size": image_size,
        "patch_size": patch,
        "vision_use_head": header.has(f"{p}head.probe"),
    }
    return Detected("siglip", family, prefix, "transformers", tuple(sorted(config.items())))


def detect_redux(header: Header) -> Detected | str:
    """A Redux MLP (`redux_up.*`, `redux_down.*`), or why not."""
    prefix = header.prefix_of("redux_up.weight")
    if prefix is None or not header.has(f"{prefix}redux_down.weight"):
        return "not a Redux style model (no redux_up / redux_down weights)"
    hidden, redux_dim = header.shapes[f"{prefix}redux_up.weight"]
    out, inner = header.shapes[f"{prefix}redux_down.weight"]
    if inner != hidden or hidden != 3 * out:
        return f"not a Redux encoder (redux_up {hidden}x{redux_dim}, redux_down {out}x{inner})"
    config = {"redux_dim": redux_dim, "txt_in_features": out}
    return Detected("redux", "redux", prefix, "bfl", tuple(sorted(config.items())))


DETECTORS = {"siglip": detect_siglip, "redux": detect_redux}


# Loading ----------------------------------------------------------------------------------


def load_component(spec: WeightSpec, dtype: torch.dtype, cache_dir: Path | None) -> Any:
    """The model for a spec, in `dtype` on the CPU; CheckpointError when it cannot be read."""
    if spec.source == "hub":
        spec = loaders.download(spec, cache_dir)
    if spec.source == "tiny":
        build = build_tiny_siglip if spec.component == "siglip" else build_tiny_redux
        return loaders.cast(build(), dtype)
    if spec.source == "diffusers":
        return _from_diffusers(spec, dtype)
    if spec.component == "siglip":
        return _siglip_from_file(spec, dtype)
    return _redux_from_file(spec, dtype)


def _from_diffusers(spec: WeightSpec, dtype: torch.dtype) -> Any:
    assert spec.path is not None
    try:
        if spec.component == "siglip":
            model = SiglipVisionModel.from_pretrained(
                str(spec.path / spec.subfolder), local_files_only=True, dtype=dtype
            )
        else:
            model = ReduxImageEncoder.from_pretrained(
                str(spec.path), subfolder=spec.subfolder, local_files_only=True
            )
    except _LOAD_ERRORS as exc:
        raise CheckpointError(f"cannot be loaded ({_brief(exc)})") from exc
    return loaders.cast(model, dtype).eval()


def _siglip_from_file(spec: WeightSpec, dtype: torch.dtype) -> SiglipVisionModel:
    assert spec.path is not None and spec.detected is not None
    state = read_tensors(read_header(spec.path), spec.detected.prefix, dtype=dtype)
    # The vision tower only: full SigLIP files also hold the text tower and logit scales.
    state = {
        k: v
        for k, v in state.items()
        if k.startswith("vision_model.") and not k.endswith("position_ids")
    }
    config = SiglipVisionConfig(**spec.detected.dims())
    try:
        model, info = SiglipVisionModel.from_pretrained(
            None, config=config, state_dict=state, dtype=dtype, output_loading_info=True
        )
    except _LOAD_ERRORS as exc:
        raise CheckpointError(f"does not fit the SigLIP layout ({_brief(exc)})") from exc
    problems = sorted(info.get("missing_keys") or ()) + sorted(info.get("mismatched_keys") or ())
    if problems:
        raise CheckpointError(f"is incomplete or of another size (e.g. {problems[0]})")
    return model.eval()


def _redux_from_file(spec: WeightSpec, dtype: torch.dtype) -> ReduxImageEncoder:
    assert spec.path is not None and spec.detected is not None
    state = read_tensors(read_header(spec.path), spec.detected.prefix, dtype=dtype)
    with torch.device("meta"):  # no random init of ~64 M parameters about to be replaced
        model = ReduxImageEncoder(**spec.detected.dims())
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"does not fit the Redux layout ({_brief(exc)})") from exc
    return model.eval()


def _brief(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
