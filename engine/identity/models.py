"""The identity tab's models kept warm: PuLID's modules (the person's pulid_flux file, or
tiny random ones in demo mode) and the ID embedder (antelopev2, BiSeNet, EVA02-CLIP)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from engine.errors import ModelNotFoundError
from engine.identity.controlnet import (
    ControlNetSpec,
    find_controlnet,
    load_controlnet,
    tiny_controlnet_spec,
)
from engine.identity.id_embedding import IdEmbedder, IdEmbedderConfig
from engine.identity.pulid_networks import REAL_PULID, TINY_PULID, PulidModules, build_pulid_modules
from engine.identity.pulid_weights import find_pulid_file, load_pulid, pulid_dtype, pulid_folders
from engine.models.precision import pick_device

TINY_PULID_SEED = 1031


def identity_models(env: Any) -> IdentityModels:
    """The engine's identity models, from a stage's env / services (a RunScope)."""
    return env.engine.identity_models


class IdentityModels:
    def __init__(
        self, models_dir: Path | None, tiny: bool, device: str, hub_cache: Path | None = None
    ) -> None:
        self.models_dir, self.tiny = models_dir, tiny
        self.device = pick_device(device)
        self.embedder = IdEmbedder(IdEmbedderConfig(models_dir, hub_cache, tiny, device))
        self._pulid: tuple[tuple, PulidModules] | None = None
        self._controlnet: tuple[str, Any] | None = None
        self._lock = threading.Lock()

    def pulid_identity(self) -> str:
        """The PuLID file's identity (ModelNotFoundError saying where to put one)."""
        if self.tiny:
            return f"tiny-pulid:{TINY_PULID_SEED}"
        return find_pulid_file(pulid_folders(self.models_dir)).identity

    def pulid(self, transformer: torch.nn.Module) -> PulidModules:
        """PuLID's modules for `transformer`'s block counts, on its device."""
        double = len(transformer.transformer_blocks)
        single = len(transformer.single_transformer_blocks)
        key = (self.pulid_identity(), double, single)
        with self._lock:
            if self._pulid is not None and self._pulid[0] == key:
                return self._pulid[1]
            self._pulid = None
            modules = self._build(double, single)
            self._pulid = (key, modules)
            return modules

    def controlnet_spec(self, name: str = "") -> ControlNetSpec:
        """The ControlNet file (the tiny one in demo mode); ModelNotFoundError says where."""
        if self.tiny:
            return tiny_controlnet_spec()
        if self.models_dir is None:
            raise ModelNotFoundError(
                "The pose ControlNet needs a models folder (start the studio with --models): "
                "put a FLUX.1 union ControlNet in its controlnet/ folder."
            )
        return find_controlnet(self.models_dir, name)

    def controlnet(self, name: str = "") -> Any:
        """The warm ControlNet, in the compute dtype of the device."""
        spec = self.controlnet_spec(name)
        with self._lock:
            if self._controlnet is None or self._controlnet[0] != spec.identity:
                self._controlnet = None
                dtype = pulid_dtype(self.device)
                model = load_controlnet(spec, dtype).to(self.device).eval()
                self._controlnet = (spec.identity, model)
            return self._controlnet[1]

    def _build(self, double: int, single: int) -> PulidModules:
        if self.tiny:
            config = TINY_PULID.with_blocks(double, single)
            return build_pulid_modules(config, seed=TINY_PULID_SEED).to(self.device)
        if (double, single) != (REAL_PULID.double_blocks, REAL_PULID.single_blocks):
            raise ModelNotFoundError(
                f"PuLID-FLUX is made for FLUX.1's 19 double and 38 single blocks; the Flux "
                f"transformer in use has {double} and {single}. Use a FLUX.1 [dev] file."
            )
        file = find_pulid_file(pulid_folders(self.models_dir))
        return load_pulid(file, self.device, pulid_dtype(self.device))
