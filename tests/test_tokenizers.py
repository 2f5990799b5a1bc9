"""Tokenizers for any models folder: <models>/tokenizers/, the ComfyUI install an
extra_model_paths.yaml names, Forge / SwarmUI / ComfyUI Desktop / Stability Matrix layouts,
a message naming each missing piece, and the one-time download against a local fake hub."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hashlib
import json
import logging
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from engine.models import tokenizer_places
from engine.models.manager import ModelConfig, ModelManager
from engine.models.shortfall import MissingPiecesError
from engine.models.tiny_export import save_clip_vocab, save_tiny_comfy
from engine.models.tiny_text import build_tiny_clip_tokenizer, build_tiny_t5_tokenizer
from engine.recipe import ModelParams

PROMPT = "close-up portrait photograph of a woman, natural window light"
CLIP_REPO, T5_REPO = "openai/clip-vit-large-patch14", "google/t5-v1_1-xxl"
WEIGHT_FILES = (
    "flux1-tiny.safetensors",
    "ae-tiny.safetensors",
    "clip_l-tiny.safetensors",
    "t5xxl-tiny.safetensors",
)


@pytest.fixture(autouse=True)
def no_desktop_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's own ComfyUI Desktop (if any) stays out of the tests."""
    monkeypatch.setattr(tokenizer_places, "MAC_APPS", tmp_path / "no-Applications")
    monkeypatch.delenv("LOCALAPPDATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "no-home"))


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ComfyUI install: models/ with the weights and comfy/ with the tokenizers."""
    root = tmp_path_factory.mktemp("tokenizers") / "ComfyUI"
    save_tiny_comfy(root / "models")
    return root


def far_models(install: Path, root: Path, relative: str = "drive/team/shared/models") -> Path:
    """The weight files alone, in a models folder with no ComfyUI install around it."""
    models = root / relative
    shutil.copytree(install / "models", models)
    return models


def copy_comfy(install: Path, target: Path) -> Path:
    """The install's comfy/ tokenizer folders under `target` (a ComfyUI install root)."""
    shutil.copytree(install / "comfy", target / "comfy")
    return target


def manager(models: Path, tmp_path: Path, **kwargs) -> ModelManager:
    cache = tmp_path / "hf-cache"  # empty: nothing from this machine's cache may leak in
    cache.mkdir(exist_ok=True)
    config = ModelConfig(models_dir=models, device="cpu", hub_cache_dir=cache, **kwargs)
    return ModelManager(config)


def tokenizer_folders(found: ModelManager) -> tuple[Path | None, Path | None]:
    files = found.resolve(ModelParams())
    return files.spec("clip_tokenizer").path, files.spec("t5_tokenizer").path


def test_extra_model_paths_yaml_names_the_comfy_install_that_holds_the_tokenizers(
    install: Path, tmp_path: Path
) -> None:
    models = far_models(install, tmp_path)
    comfy = copy_comfy(install, tmp_path / "apps" / "ComfyUI")
    with pytest.raises(MissingPiecesError):  # without the file: nothing around the folder
        manager(models, tmp_path).resolve(ModelParams())
    yaml_file = tmp_path / "settings" / "extra_model_paths.yaml"
    yaml_file.parent.mkdir()
    yaml_file.write_text(
        f"comfyui:\n    base_path: {comfy}/\n    is_default: true\n"
        "    checkpoints: models/checkpoints/\n"
        "    text_encoders: |\n        models/text_encoders/\n        models/clip/\n",
        encoding="utf-8",
    )
    found = manager(models, tmp_path, extra_model_paths=yaml_file)
    assert tokenizer_folders(found) == (
        comfy / "comfy" / "sd1_tokenizer",
        comfy / "comfy" / "text_encoders" / "t5_tokenizer",
    )
    bundle = found.flux(ModelParams())  # they load and tokenize like the tiny ones
    assert bundle.clip_tokenizer(PROMPT).input_ids == build_tiny_clip_tokenizer()(PROMPT).input_ids
    assert bundle.t5_tokenizer(PROMPT).input_ids == build_tiny_t5_tokenizer()(PROMPT).input_ids


def test_a_yaml_above_the_models_folder_is_read_without_a_flag(install: Path, tmp_path: Path):
    """A shared drive's root holding models/ and extra_model_paths.yaml whose relative
    base_path (read from the file's folder, as ComfyUI does) points at a ComfyUI install."""
    models = far_models(install, tmp_path)
    comfy = copy_comfy(install, tmp_path / "drive" / "programs" / "ComfyUI")
    (models.parent / "extra_model_paths.yaml").write_text(
        "comfyui:\n  base_path: ../../programs/ComfyUI\n  clip: models/clip\n", encoding="utf-8"
    )
    assert tokenizer_folders(manager(models, tmp_path))[0] == comfy / "comfy" / "sd1_tokenizer"


def test_an_unreadable_yaml_is_named_in_the_message(install: Path, tmp_path: Path) -> None:
    models = far_models(install, tmp_path)
    broken = tmp_path / "extra_model_paths.yaml"
    broken.write_text("comfyui: [unclosed\n", encoding="utf-8")
    with pytest.raises(MissingPiecesError) as error:
        manager(models, tmp_path, extra_model_paths=broken).resolve(ModelParams())
    assert f"{broken} (unreadable" in str(error.value)


def test_tokenizers_dropped_into_the_models_folder_come_first(install: Path, tmp_path: Path):
    models = install.parent / "copy" / "models"  # a ComfyUI install beside it as well
    shutil.copytree(install, models.parent)
    shutil.copytree(install / "comfy" / "sd1_tokenizer", models / "tokenizers" / "clip_l")
    dropped = models / "tokenizers" / "t5-v1_1-xxl"
    shutil.copytree(install / "comfy" / "text_encoders" / "t5_tokenizer", dropped)
    found = manager(models, tmp_path)
    assert tokenizer_folders(found) == (models / "tokenizers" / "clip_l", dropped)
    assert "t5-v1_1-xxl (the models folder's tokenizers/)" in found.describe()
    shutil.rmtree(models.parent)


def _forge(install: Path, root: Path) -> tuple[Path, Path, Path]:
    models = far_models(install, root, "stable-diffusion-webui-forge/models")
    flux = root / "stable-diffusion-webui-forge/backend/huggingface/black-forest-labs/FLUX.1-dev"
    shutil.copytree(install / "comfy" / "sd1_tokenizer", flux / "tokenizer")
    shutil.copytree(install / "comfy" / "text_encoders" / "t5_tokenizer", flux / "tokenizer_2")
    return models, flux / "tokenizer", flux / "tokenizer_2"


def _comfy_layout(models_at: str, install_at: str):
    def build(install: Path, root: Path) -> tuple[Path, Path, Path]:
        models = far_models(install, root, models_at)
        comfy = copy_comfy(install, root / install_at) / "comfy"
        return models, comfy / "sd1_tokenizer", comfy / "text_encoders" / "t5_tokenizer"

    return build


DESKTOP_APP = "AppData/Local/Programs/@comfyorgcomfyui-electron/resources/ComfyUI"
LAYOUTS = {
    "swarmui": _comfy_layout("SwarmUI/Models", "SwarmUI/dlbackend/comfy/ComfyUI"),
    "stability-matrix": _comfy_layout("Data/Models", "Data/Packages/ComfyUI"),
    "models-beside-a-checkout": _comfy_layout("work/models", "work/ComfyUI"),
    "comfyui-desktop": _comfy_layout("Documents/ComfyUI/models", DESKTOP_APP),
    "forge": _forge,
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_other_programs_layouts_are_found_by_structure(
    install: Path, tmp_path: Path, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "AppData" / "Local"))
    models, clip, t5 = LAYOUTS[layout](install, tmp_path)
    assert tokenizer_folders(manager(models, tmp_path)) == (clip, t5)


def test_without_downloads_the_message_names_each_missing_tokenizer_and_each_good_file(
    install: Path, tmp_path: Path, no_network: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    allow_downloads(monkeypatch)  # online as far as the hub knows: only --offline forbids
    models = far_models(install, tmp_path)
    found = manager(models, tmp_path, offline=True)
    with pytest.raises(MissingPiecesError) as error:
        found.resolve(ModelParams())
    assert error.value.missing == ("clip_tokenizer", "t5_tokenizer") and error.value.weights_ok
    lines = str(error.value).splitlines()
    assert lines[0] == (
        "The Flux weight files are fine, but the CLIP-L tokenizer and the T5 tokenizer are missing."
    )
    assert lines[1].startswith("No CLIP-L tokenizer found. Looked in: ")
    assert lines[2].startswith("No T5 tokenizer found. Looked in: ")
    assert f"{CLIP_REPO} (not downloaded: --offline is set)" in lines[1]
    assert str(models / "tokenizers" / "t5-v1_1-xxl") in lines[2]
    assert lines[3].startswith("Found and fine: Flux transformer flux1-tiny.safetensors; ")
    assert all(name in lines[3] for name in WEIGHT_FILES)
    assert str(models / "tokenizers" / "clip-vit-large-patch14") in lines[4]
    assert "No usable Flux weights" not in str(error.value)
    assert found.describe().startswith(lines[0])


def test_one_missing_tokenizer_is_named_alone_and_hf_hub_offline_also_forbids(
    install: Path, tmp_path: Path, no_network: None
) -> None:
    models = far_models(install, tmp_path)
    shutil.copytree(
        install / "comfy" / "sd1_tokenizer", models / "tokenizers" / "clip-vit-large-patch14"
    )
    with pytest.raises(MissingPiecesError) as error:
        manager(models, tmp_path).resolve(ModelParams())  # HF_HUB_OFFLINE=1 in tests
    message = str(error.value)
    assert message.startswith("The Flux weight files are fine, but the T5 tokenizer is missing.")
    assert "No CLIP-L tokenizer found" not in message
    assert f"{T5_REPO} (not downloaded: HF_HUB_OFFLINE is set)" in message
    assert "CLIP-L tokenizer clip-vit-large-patch14 (the models folder's tokenizers/)" in message


def test_a_missing_weight_file_leads_and_the_other_gaps_follow(install: Path, tmp_path: Path):
    models = far_models(install, tmp_path)
    (models / "vae" / "ae-tiny.safetensors").unlink()
    found = manager(models, tmp_path)
    with pytest.raises(MissingPiecesError) as error:
        found.resolve(ModelParams())
    lines = str(error.value).splitlines()
    assert lines[0].startswith("No Flux VAE found. Looked in: ") and not error.value.weights_ok
    assert lines[1].startswith("No CLIP-L tokenizer found.")
    assert lines[2].startswith("No T5 tokenizer found.")
    assert "flux1-tiny.safetensors" in lines[3] and "ae-tiny" not in lines[3]
    assert lines[4].startswith("To get weights:") and lines[5].startswith("To get the tokenizers")
    assert found.describe().startswith("No usable Flux weights yet. No Flux VAE found.")


# --- the one-time download, against a fake hub on 127.0.0.1 ----------------------------------

COMMIT = "1" * 40


class FakeHub(ThreadingHTTPServer):
    """The two endpoints huggingface_hub's snapshot_download calls: repo info (the file
    list) and /resolve/ (HEAD for metadata, GET for content). It records every path."""

    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        super().__init__(("127.0.0.1", 0), FakeHubHandler)
        self.repos = repos
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeHubHandler(BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, format: str, *args: object) -> None:  # keep the test output clean
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.server.requests.append(f"{self.command} {path}")
        info = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?", path)
        tree = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/[^/]+", path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", path)
        if info and info[1] in self.server.repos:
            files = self.server.repos[info[1]]
            siblings = [{"rfilename": name} for name in files]
            data = json.dumps({"id": info[1], "sha": COMMIT, "siblings": siblings}).encode()
            self._send(data, {"Content-Type": "application/json"}, body)
        elif tree and tree[1] in self.server.repos:
            entries = [
                {"type": "file", "path": name, "size": len(data), "oid": _git_oid(data)}
                for name, data in self.server.repos[tree[1]].items()
            ]
            self._send(json.dumps(entries).encode(), {"Content-Type": "application/json"}, body)
        elif resolve and resolve[2] in self.server.repos.get(resolve[1], {}):
            data = self.server.repos[resolve[1]][resolve[2]]
            etag = f'"{_git_oid(data)}"'
            self._send(data, {"X-Repo-Commit": COMMIT, "ETag": etag}, body)
        else:
            self._send(b"{}", {"X-Error-Code": "EntryNotFound"}, body, status=404)

    def _send(self, data: bytes, headers: dict, body: bool, status: int = 200) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)


def _git_oid(data: bytes) -> str:
    """The blob id git (and the hub, as the ETag of a small file) gives these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def folder_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


def allow_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A fake hub with the two tokenizer repos (and weights that must not be fetched); the
    hub client points at it, and any connection elsewhere fails the test."""
    import huggingface_hub.constants as hub

    save_clip_vocab(tmp_path / "clip")
    build_tiny_t5_tokenizer().save_pretrained(str(tmp_path / "t5"))
    weights = {"pytorch_model.bin": b"\0" * 4096, "config.json": b"{}"}
    server = FakeHub(
        {
            CLIP_REPO: {**folder_files(tmp_path / "clip"), **weights},
            T5_REPO: {**folder_files(tmp_path / "t5"), **weights},
        }
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    allow_downloads(monkeypatch)
    monkeypatch.setattr(hub, "ENDPOINT", server.url)
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(hub, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setenv("HF_TOKEN", "test-token-for-the-fake-hub")  # no stored login read
    elsewhere = local_only(monkeypatch)
    yield server
    server.shutdown()
    server.server_close()
    assert not elsewhere, f"tried to reach beyond the fake hub: {elsewhere}"


def local_only(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Name lookups of anything but 127.0.0.1 fail (and are recorded)."""
    attempts: list[object] = []
    real = socket.getaddrinfo

    def lookup(host: object, *args: object, **kwargs: object) -> object:
        if host not in ("127.0.0.1", b"127.0.0.1"):
            attempts.append(host)
            raise OSError("only the fake hub is reachable in this test")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    return attempts


def test_online_the_tokenizer_files_alone_are_downloaded_once(
    install: Path, tmp_path: Path, fake_hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    models = far_models(install, tmp_path)
    found = manager(models, tmp_path)
    before = found.resolve(ModelParams())
    spec = before.spec("clip_tokenizer")
    assert (spec.source, spec.repo_id) == ("hub", CLIP_REPO)
    assert fake_hub.requests == []  # resolving never goes online; the first load does
    with caplog.at_level(logging.INFO, logger="engine.models.loaders"):
        bundle = found.flux(ModelParams())
    assert f"Downloading the tokenizer files of {CLIP_REPO} once" in caplog.text
    assert bundle.clip_tokenizer(PROMPT).input_ids == build_tiny_clip_tokenizer()(PROMPT).input_ids
    assert bundle.t5_tokenizer(PROMPT).input_ids == build_tiny_t5_tokenizer()(PROMPT).input_ids
    fetched = {
        r.split("/resolve/")[1].split("/", 1)[1] for r in fake_hub.requests if "/resolve/" in r
    }
    assert fetched == {"vocab.json", "merges.txt", "tokenizer_config.json", "tokenizer.json"}
    # Later, offline: both come from the cache under the identities they had before, so
    # nothing that was cached (prompt encodings) is recomputed for the download.
    fake_hub.requests.clear()
    after = manager(models, tmp_path, offline=True).resolve(ModelParams())
    assert after.text == before.text and fake_hub.requests == []
    assert (tmp_path / "hf-cache") in after.spec("t5_tokenizer").path.parents


def test_offline_also_keeps_redux_from_downloading(tmp_path: Path, no_network: None) -> None:
    from engine.models.specs import Trail
    from engine.redux.models import ReduxConfig, find_in_hub

    config = ReduxConfig.from_model_config(
        ModelConfig(repo_id="black-forest-labs/FLUX.1-dev", offline=True, hub_cache_dir=tmp_path)
    )
    assert config.offline
    trail = Trail()
    spec = find_in_hub(config.repo_id, "redux", tmp_path, trail, offline=config.offline)
    assert spec is None
    assert any("offline" in place for place in trail.places)
