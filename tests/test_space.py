"""`app.py --space`: the Space's settings from its environment, the optional ZeroGPU adapter,
the Space card, and the studio starting with `--space --tiny` on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path
from typing import Any

import gradio
import pytest

import app
import app_space
import app_zerogpu
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
SPACE_CARD = ROOT / "docs" / "space" / "README.md"


def plan(argv: list[str], env: dict[str, str], persistent: Path) -> app_space.SpacePlan:
    return app_space.space_plan(app.parse_args(argv), env, persistent)


def test_on_a_space_it_listens_everywhere_and_takes_the_space_settings(tmp_path: Path) -> None:
    env = {"SPACE_ID": "me/studio", "STUDIO_AUTH": "ann:pw:x, bob:pw2,", "STUDIO_OPEN": "0"}
    got = plan([], env, tmp_path / "absent")
    args = got.args
    assert (args.listen, args.port) == ("0.0.0.0", 7860)
    assert args.repo == app_space.DEFAULT_REPO and not args.tiny
    assert app.parse_auth(args.auth) == [("ann", "pw:x"), ("bob", "pw2")]
    assert not args.open_studio and got.env == {}
    assert (args.outputs, args.data) == (Path("outputs"), Path("data"))


def test_space_variables_choose_the_weights_and_an_open_studio(tmp_path: Path) -> None:
    env = {"SPACE_ID": "me/studio", "STUDIO_TINY": "1", "STUDIO_OPEN": "1"}
    args = plan([], env, tmp_path).args
    assert args.tiny and args.repo is None and args.open_studio
    args = plan([], {"SPACE_ID": "x", "STUDIO_REPO": "me/flux-krea"}, tmp_path).args
    assert args.repo == "me/flux-krea"
    mine = tmp_path / "models"
    args = plan(["--models", str(mine)], {"SPACE_ID": "x"}, tmp_path).args
    assert args.models == mine and args.repo is None  # flags win over the environment


def test_persistent_storage_holds_outputs_data_and_the_hub_cache(tmp_path: Path) -> None:
    got = plan([], {"SPACE_ID": "x", "STUDIO_GPU_SECONDS": "90"}, tmp_path)
    assert (got.args.outputs, got.args.data) == (tmp_path / "outputs", tmp_path / "studio")
    assert got.env == {"HF_HOME": str(tmp_path / ".huggingface")} and got.gpu_seconds == 90
    mine = tmp_path / "elsewhere"
    assert plan(["--outputs", str(mine)], {}, tmp_path).args.outputs == mine


def test_off_a_space_the_space_mode_stays_on_this_machine(tmp_path: Path) -> None:
    args = plan(["--space", "--tiny"], {}, tmp_path / "absent").args
    assert args.listen == "127.0.0.1" and args.tiny


def test_a_space_without_logins_or_studio_open_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("STUDIO_AUTH", "STUDIO_OPEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPACE_ID", "me/studio")
    with pytest.raises(SystemExit) as exited:
        app.main([])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "STUDIO_AUTH" in err and "STUDIO_OPEN=1" in err, err


def test_zero_gpu_wraps_only_the_render_when_spaces_is_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = types.SimpleNamespace(run=lambda recipe, **kw: ("ran", recipe, kw), config="cfg")
    monkeypatch.setitem(sys.modules, "spaces", None)  # not installed: nothing changes
    assert app_zerogpu.zero_gpu(60) is None
    assert app_zerogpu.on_zero_gpu(engine, None) is engine

    calls: list[int] = []

    def gpu(duration: int) -> Any:
        def wrap(fn: Any) -> Any:
            def on_gpu(*args: Any, **kwargs: Any) -> Any:
                calls.append(duration)
                return fn(*args, **kwargs)

            return on_gpu

        return wrap

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    wrapped = app_zerogpu.on_zero_gpu(engine, app_zerogpu.zero_gpu(60))
    assert wrapped.run("r", save=False) == ("ran", "r", {"save": False})
    assert calls == [60] and wrapped.config == "cfg"


def front_matter(path: Path) -> dict[str, str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), path
    block = text.split("---\n")[1]
    pairs = (line.split(":", 1) for line in block.splitlines() if ":" in line)
    return {k.strip(): v.strip().strip('"') for k, v in pairs}


def test_the_space_card_matches_this_gradio_and_app() -> None:
    card = front_matter(SPACE_CARD)
    assert card["sdk"] == "gradio" and card["app_file"] == "app.py"
    assert card["sdk_version"] == gradio.__version__
    assert card["pinned"] == "false" and card["title"] and card["emoji"]
    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert f"gradio=={gradio.__version__}" in requirements


def test_space_mode_starts_the_tiny_studio_here(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACE_", "STUDIO_"))}
    env.pop("GRADIO_TEMP_DIR", None)
    env["HF_HUB_OFFLINE"] = "1"
    command = [sys.executable, "app.py", "--space", "--tiny", "--port", str(port)]
    command += ["--outputs", str(tmp_path / "out"), "--data", str(tmp_path / "data")]
    log = tmp_path / "studio.log"
    with open(log, "wb") as out:
        studio = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        page = wait_for(f"http://127.0.0.1:{port}/", studio, 60)
        assert page is not None, log.read_text(errors="replace")[-3000:]
        assert "Portrait Studio" in page
        assert (tmp_path / "data" / app.GRADIO_TEMP).is_dir()
    finally:
        studio.terminate()
        try:
            studio.wait(10)
        except subprocess.TimeoutExpired:
            studio.kill()
            studio.wait(10)


def wait_for(url: str, process: subprocess.Popen, seconds: float) -> str | None:
    """The page at `url` once it answers, or None after `seconds` or when `process` ends."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode("utf-8", errors="replace")
        except OSError:
            time.sleep(0.5)
    return None
