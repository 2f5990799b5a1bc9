"""The Upscale tab's helpers kept warm: the trained upscale models (one per file version) and
the JoyCaption captioner (Flux itself is the engine's ModelManager's). Each is loaded on
first use and loaded again when its file changes; a file that fails to load is not kept,
so the next run tries it afresh."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelNotFoundError
from engine.upscale.caption import (
    Captioner,
    CaptionModelFiles,
    caption_model_files,
    find_caption_model,
    folder_problem,
    where_to_put_it,
)
from engine.upscale.upscalers import (
    LoadedUpscaler,
    list_upscaler_files,
    load_upscaler,
    resolve_upscaler_file,
    upscale_folder,
    upscaler_identity,
)

KEPT_UPSCALERS = 2  # Upscale 1 and Upscale final may each use their own model
TINY_CAPTIONER = Path("tiny_models") / "tiny-joycaption-llava"


def upscale_models(env: Any) -> UpscaleModels:
    """The engine's Upscale models, from a stage's env / services (a RunScope)."""
    return env.engine.upscale_models


@dataclass(frozen=True)
class UpscaleModelsConfig:
    models_dir: Path | None
    device: str
    tiny: bool = False  # demo / tests: a tiny random LLaVA stands in for JoyCaption
    data_dir: Path = Path("data")  # where the tiny LLaVA is written once


class UpscaleModels:
    """Upscale models by file version and the captioner, held between runs."""

    def __init__(self, config: UpscaleModelsConfig) -> None:
        self.config = config
        self._upscalers: OrderedDict[str, LoadedUpscaler] = OrderedDict()
        self._captioner: Captioner | None = None
        self._lock = threading.RLock()

    # Upscale models ---------------------------------------------------------------------

    def list_upscalers(self) -> list[str]:
        """Model files under <models>/upscale_models/, as the recipe names them."""
        return list_upscaler_files(self.config.models_dir)

    def upscaler_identity(self, name: str) -> str:
        """The named file's version for cache keys; "" for no model (LANCZOS only)."""
        if not name:
            return ""
        return upscaler_identity(resolve_upscaler_file(self.config.models_dir, name))

    def upscaler(self, name: str) -> LoadedUpscaler:
        """The named upscale model, loaded once per file version (ModelNotFoundError naming
        the file when it is not a usable upscaler; nothing is kept then)."""
        path = resolve_upscaler_file(self.config.models_dir, name)
        identity = upscaler_identity(path)
        with self._lock:
            held = self._upscalers.get(identity)
            if held is None:
                held = load_upscaler(path, self.config.device)
                self._upscalers[identity] = held
                while len(self._upscalers) > KEPT_UPSCALERS:
                    self._upscalers.popitem(last=False)
            self._upscalers.move_to_end(identity)
            return held

    # The captioner ----------------------------------------------------------------------

    def caption_files(self) -> CaptionModelFiles:
        """The captioner's checked folder: the tiny LLaVA (written once) in tiny mode, else
        JoyCaption found in the models folder or the HF cache (ModelNotFoundError saying
        where it looked and where to put it)."""
        if self.config.tiny:
            return self._tiny_caption_files()
        return find_caption_model(self.config.models_dir)

    def _tiny_caption_files(self) -> CaptionModelFiles:
        from engine.upscale.tiny_llava import build_tiny_llava

        folder = self.config.data_dir / TINY_CAPTIONER
        with self._lock:
            if folder_problem(folder) is not None:
                build_tiny_llava(folder)
            return caption_model_files(folder, "tiny random LLaVA (demo)")

    def captioner(self, files: CaptionModelFiles) -> Captioner:
        """The captioner of `files`, loaded once and kept while its files stay the same."""
        with self._lock:
            held = self._captioner
            if held is None or held.files.identity != files.identity:
                self._captioner = None  # the old one goes before the new one loads
                held = self._captioner = Captioner.load(files, self.config.device)
            return held

    # Status -----------------------------------------------------------------------------

    def describe(self) -> str:
        """Which upscale models and which captioner the Upscale tab has, for the UI."""
        return f"{self._describe_upscalers()} {self._describe_captioner()}"

    def _describe_upscalers(self) -> str:
        names = self.list_upscalers()
        if names:
            shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            return f"Upscale models: {shown}."
        where = (
            f"{upscale_folder(self.config.models_dir)}/"
            if self.config.models_dir is not None
            else "the models folder's upscale_models/ (no models folder is set)"
        )
        return (
            f"No upscale models in {where}: the Upscale passes enlarge with LANCZOS only. "
            "Put an upscale model (such as 4xFaceUpsharpDAT.pth) there to use one."
        )

    def _describe_captioner(self) -> str:
        if self.config.tiny:
            return "Captioner: a tiny random LLaVA (demo mode), built on first use."
        try:
            files = find_caption_model(self.config.models_dir)
        except ModelNotFoundError:
            return f"No JoyCaption captioner found. {where_to_put_it(self.config.models_dir)}"
        return f"Captioner: JoyCaption from {files.label}."
