"""Shared fixtures: offline settings, a tiny-model Engine with two tiny LoRA files, an
in-process studio server, and the studio's tabs built for calling handlers directly."""

from __future__ import annotations

import os

# Before gradio or huggingface_hub are imported anywhere: nothing may call outside.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import gradio as gr

    from engine.recipe import Recipe
    from studio.callbacks import StudioCallbacks
    from studio.controls import Controls
    from studio.panels.loras import LoraCallbacks
    from studio.panels.prompt import PromptPanel
    from studio.panels.redux import ReduxCallbacks
    from studio.panels.results import ResultsPanel
    from studio.panels.settings import SettingsCallbacks, SettingsPanel
    from studio.session import Session

SKIN, FRECKLES = "skin_detail.safetensors", "freckles.safetensors"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class StudioServer:
    url: str
    engine: Any
    demo: Any


@pytest.fixture(scope="session")
def studio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("studio")


def tiny_lora(path: Path, metadata: dict[str, str], seed: int) -> Path:
    """A peft-layout LoRA on the tiny transformer's single block (rank 4, width 32)."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    module = "transformer.single_transformer_blocks.0.attn.to_q"
    tensors = {
        f"{module}.lora_A.weight": torch.randn(4, 32, generator=generator) * 0.2,
        f"{module}.lora_B.weight": torch.randn(32, 4, generator=generator) * 0.2,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def make_lora_folder(models: Path) -> Path:
    """<models>/loras with two tiny LoRAs: one with a trigger phrase, one with Kohya tags."""
    tiny_lora(models / "loras" / SKIN, {"modelspec.trigger_phrase": "ohwx skin"}, 1)
    tags = {"10_frckls": {"frckls": 12, "woman": 5}}
    tiny_lora(models / "loras" / FRECKLES, {"ss_tag_frequency": json.dumps(tags)}, 2)
    return models


@pytest.fixture(scope="session")
def tiny_engine(studio_dir: Path) -> Any:
    """An Engine over tiny random models (built in code, no network) on the CPU, with a
    models folder whose loras/ holds the two tiny LoRA files (the Flux models still come
    from the tiny builders)."""
    from engine.engine import Engine, EngineConfig
    from engine.models.manager import ModelConfig

    models = ModelConfig(
        models_dir=make_lora_folder(studio_dir / "models"), tiny=True, device="cpu"
    )
    config = EngineConfig(
        models=models, outputs_dir=studio_dir / "outputs", data_dir=studio_dir / "data"
    )
    return Engine(config)


def fresh_tiny_engine(folder: Path) -> Any:
    """An Engine of its own over the tiny models on the CPU, with folders under `folder`."""
    from engine.engine import Engine, EngineConfig
    from engine.models.manager import ModelConfig

    config = EngineConfig(
        models=ModelConfig(tiny=True, device="cpu"),
        outputs_dir=folder / "outputs",
        data_dir=folder / "data",
    )
    return Engine(config)


@contextmanager
def serving(engine: Any, allowed: Path | list[str], **launch: Any) -> Iterator[StudioServer]:
    """The studio page over `engine` served in this process on a free port (`launch`: more
    demo.launch options, e.g. auth)."""
    import studio

    demo = studio.build_ui(engine)
    port = free_port()
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        allowed_paths=allowed if isinstance(allowed, list) else [str(allowed)],
        **studio.launch_options(),
        **launch,
    )
    try:
        yield StudioServer(url=f"http://127.0.0.1:{port}/", engine=engine, demo=demo)
    finally:
        demo.close()


@pytest.fixture(scope="session")
def studio_server(tiny_engine: Any, studio_dir: Path) -> Iterator[StudioServer]:
    """The studio page served in this process on a free port."""
    with serving(tiny_engine, studio_dir) as server:
        yield server


@dataclass
class StudioPage:
    """The studio's tabs and results column built without a server, with their handlers."""

    controls: Controls
    state: gr.State
    tab: SettingsPanel
    source: PromptPanel
    panel: ResultsPanel
    studio: StudioCallbacks
    settings: SettingsCallbacks

    @property
    def redux(self) -> ReduxCallbacks:
        assert self.studio.redux is not None
        return self.studio.redux

    @property
    def loras(self) -> LoraCallbacks:
        assert self.studio.loras is not None
        return self.studio.loras

    def values(
        self, recipe: Recipe, extra: dict[Any, Any] | None = None, session: Session | None = None
    ) -> dict[Any, Any]:
        """Component values as Gradio hands them to a handler (`extra` overrides some)."""
        from studio.session import Session

        state = session or Session(base=recipe)
        return {self.state: state, **self.controls.updates(recipe), **(extra or {})}


def build_studio_page(engine: Any, golden_seeds: Path) -> StudioPage:
    """The Redux, Size / LoRA / Prompt, Settings and Color tabs and the results column over
    `engine`, as build_ui lays them out; golden seeds are kept in `golden_seeds`."""
    import gradio as gr

    from studio.callbacks import StudioCallbacks
    from studio.controls import Controls
    from studio.golden_seeds import GoldenSeeds
    from studio.panels import color, prompt, redux, results, settings
    from studio.presets import load_presets

    recipe = engine.default_recipe()
    library = load_presets()
    with gr.Blocks():
        controls = Controls()
        state = gr.State()
        references = redux.build_redux_tab(controls, recipe)
        source = prompt.build_prompt_tab(controls, recipe, engine)
        tab = settings.build_settings_tab(controls, recipe, library)
        upload = color.build_color_tab(controls, recipe, engine.list_luts())
        panel = results.build_results()
    studio = StudioCallbacks(
        engine,
        controls,
        panel,
        state,
        upload,
        seed_mode=tab.seed_mode,
        source=source,
        redux=references,
    )
    handlers = settings.SettingsCallbacks(
        controls, tab, state, library, GoldenSeeds(golden_seeds), lora_files=engine.list_loras
    )
    return StudioPage(controls, state, tab, source, panel, studio, handlers)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any name lookup or connection fails the test (ultralytics, insightface and timm like to
    download); modules that load model files use it for every test."""
    attempts: list[tuple[Any, ...]] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("the network is off in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield
    assert not attempts, f"tried to reach the network: {attempts}"
