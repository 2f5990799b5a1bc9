"""Shared fixtures: offline settings, a tiny-model Engine and an in-process studio server."""

from __future__ import annotations

import os

# Before gradio or huggingface_hub are imported anywhere: nothing may call outside.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


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


@pytest.fixture(scope="session")
def tiny_engine(studio_dir: Path) -> Any:
    """An Engine over tiny random models (built in code, no files, no network)."""
    from engine.engine import Engine, EngineConfig
    from engine.models.manager import ModelConfig

    models = ModelConfig(models_dir=None, diffusers_dir=None, repo_id=None, tiny=True)
    config = EngineConfig(
        models=models, outputs_dir=studio_dir / "outputs", data_dir=studio_dir / "data"
    )
    return Engine(config)


@pytest.fixture(scope="session")
def studio_server(tiny_engine: Any, studio_dir: Path) -> Iterator[StudioServer]:
    """The studio page served in this process on a free port."""
    import studio

    demo = studio.build_ui(tiny_engine)
    port = free_port()
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        allowed_paths=[str(studio_dir)],
        **studio.launch_options(),
    )
    try:
        yield StudioServer(url=f"http://127.0.0.1:{port}/", engine=tiny_engine, demo=demo)
    finally:
        demo.close()
