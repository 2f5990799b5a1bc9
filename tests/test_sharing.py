"""Safe sharing: no open studio unasked, nothing but the login page before login, each login
sees only its own files, and start-up clears Gradio's upload cache and half-written files."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from gradio_client import Client

import app
from app_sharing import is_loopback, sharing_refusal
from conftest import build_studio_page, serving
from studio.owners import owner_folder_name, owner_outputs

LOGINS = [("alice", "alice-pw"), ("bob", "bob-pw")]
API_WORDS = ("render", "upload_image", "recipe_json", "Render a recipe", "Portrait Studio")


# -- refusing an open studio ---------------------------------------------------------


@pytest.mark.parametrize("argv", [["--share"], ["--listen", "0.0.0.0"]])
def test_an_open_studio_is_refused_with_both_ways_out(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPACE_ID", raising=False)
    with pytest.raises(SystemExit) as exited:
        app.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--auth USER:PASSWORD" in err and "--open-studio" in err, err
    assert ("--share" if "--share" in argv else "0.0.0.0") in err


def test_a_login_or_open_studio_passes_the_check() -> None:
    for listen, share in [("0.0.0.0", False), ("127.0.0.1", True), ("192.168.1.5", True)]:
        assert sharing_refusal(listen=listen, share=share, logins=1, open_studio=False) is None
        assert sharing_refusal(listen=listen, share=share, logins=0, open_studio=True) is None
        assert sharing_refusal(listen=listen, share=share, logins=0, open_studio=False)
    assert sharing_refusal(listen="localhost", share=False, logins=0, open_studio=False) is None
    assert app.parse_args(["--open-studio"]).open_studio


def test_only_loopback_addresses_count_as_private() -> None:
    for address in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert is_loopback(address), address
    for address in ("0.0.0.0", "::", "192.168.1.5", "studio.local", ""):
        assert not is_loopback(address), address


# -- per-login folders ---------------------------------------------------------------


def test_each_login_gets_its_own_folder_and_no_login_stays_flat(tmp_path: Path) -> None:
    assert owner_outputs(tmp_path, "") == tmp_path
    assert owner_outputs(tmp_path, "alice") == tmp_path / "alice"
    names = {owner_folder_name(n) for n in ("Ann", "ann", "a/nn", "../ann", "ann ", "..")}
    assert len(names) == 6 and "ann" in names
    assert all("/" not in n and not n.startswith(".") for n in names), names


# -- a server with logins, as app.py starts one --------------------------------------


@pytest.fixture(scope="module")
def guarded(tiny_engine: Any) -> Iterator[str]:
    """The studio over the tiny engine with two logins and the guard, as app.py serves it."""
    from studio.auth_guard import guard_app_kwargs

    outputs, data = tiny_engine.config.outputs_dir, tiny_engine.config.data_dir
    guard = guard_app_kwargs(outputs, private_dirs=[data])
    folders = app.served_folders(outputs, data)
    with serving(tiny_engine, folders, auth=LOGINS, app_kwargs=guard) as server:
        yield server.url.rstrip("/")


@contextmanager
def logged_in(url: str, user: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        password = dict(LOGINS)[user]
        response = client.post("/login", data={"username": user, "password": password})
        assert response.status_code == 200, response.text
        yield client


def test_before_login_only_the_login_page_is_served(guarded: str) -> None:
    compressed = {"accept-encoding": "br, gzip"}
    for path in ("/", "/?all_endpoints=true", "/gradio_api/runs"):
        page = httpx.get(guarded + path, headers=compressed, timeout=30)
        assert page.status_code == 200, path
        assert '"auth_required":true' in page.text, path
        assert not [w for w in API_WORDS if w in page.text], (path, page.text[:2000])
    for path in ("/config", "/gradio_api/info", "/gradio_api/openapi.json"):
        assert httpx.get(guarded + path, timeout=30).status_code == 401, path


def test_after_login_the_page_works(guarded: str) -> None:
    with logged_in(guarded, "alice") as alice:
        page = alice.get("/")
        assert page.status_code == 200 and "upload_image" in page.text
        assert alice.get("/config").status_code == 200
        assert alice.get("/gradio_api/info").json()["named_endpoints"]["/render"]


def test_a_login_never_fetches_another_logins_files(
    guarded: str, tiny_engine: Any, tmp_path: Path
) -> None:
    client = Client(guarded, auth=LOGINS[0], verbose=False, download_files=str(tmp_path))
    files, _ = client.predict('{"settings": {"steps": 2}}', api_name="/render")
    assert files and Path(files[0]["path"] if isinstance(files[0], dict) else files[0]).exists()
    outputs = tiny_engine.config.outputs_dir
    (png,) = [p for p in (outputs / "alice").glob("*.png") if p.name == Path(files[0]).name]
    sideways = outputs / "bob" / ".." / "alice" / png.name
    flat = outputs / "flat-from-before-logins.png"
    flat.write_bytes(png.read_bytes())
    with logged_in(guarded, "alice") as alice, logged_in(guarded, "bob") as bob:
        assert alice.get(f"/gradio_api/file={png}").status_code == 200
        for path in (png, sideways, flat):
            for route in ("/gradio_api/file=", "/gradio_api/file/"):
                assert bob.get(f"{route}{path}").status_code == 403, (route, path)
        assert alice.get(f"/gradio_api/file={flat}").status_code == 403
    assert httpx.get(f"{guarded}/gradio_api/file={png}", timeout=30).status_code in (401, 403)


def test_history_and_its_thumbnails_stay_with_their_login(
    guarded: str, tiny_engine: Any, tmp_path: Path
) -> None:
    page = build_studio_page(tiny_engine, tmp_path / "golden_seeds.json")
    alice = SimpleNamespace(username="alice")
    data = page.values(tiny_engine.default_recipe())
    list(page.studio.generate(data, request=alice))
    kept, mine = page.studio.kept, tiny_engine.config.outputs_dir / "alice"
    (entry,) = kept.entries("alice")[:1]
    assert all(Path(f).parent == mine for f in entry.files)
    fork = kept.keep_as_new(data[page.state].last, "alice")  # Keep as new stays hers too
    assert fork.files and all(Path(f).parent == mine for f in fork.files)
    assert not {entry.id, fork.entry_id} & {e.id for e in kept.entries("bob")}
    with logged_in(guarded, "bob") as bob, logged_in(guarded, "alice") as owner:
        for client in (bob, owner):  # thumbnails reach the page only as cached copies
            assert client.get(f"/gradio_api/file={entry.thumbnail}").status_code == 403
            assert client.get(f"/gradio_api/file={entry.files[0]}").status_code == (
                200 if client is owner else 403
            )


# -- start-up cleaning ---------------------------------------------------------------


def aged(path: Path, data: bytes = b"half a png", age_s: float = 3600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_start_up_removes_half_written_files_and_keeps_real_ones(tmp_path: Path) -> None:
    outputs, data = tmp_path / "outputs", tmp_path / "data"
    stale = [
        aged(outputs / ".tmp-x.png"),
        aged(outputs / "alice" / ".tmp-y.png"),
        aged(data / "history" / ".tmp-z.json"),
        aged(data / "history" / "thumbs" / ".tmp-t.webp"),
        aged(data / "images" / ".tmp-u.png"),
    ]
    kept = [aged(outputs / "portrait-1.png"), aged(outputs / "alice" / "portrait-2.png")]
    in_progress = aged(outputs / ".tmp-now.png", age_s=0)
    assert app.clean_at_start(outputs, data) == len(stale)
    assert not [p for p in stale if p.exists()]
    assert all(p.exists() for p in [*kept, in_progress])
    assert app.clean_at_start(tmp_path / "missing", tmp_path / "missing") == 0


def test_gradio_upload_cache_lives_in_the_data_folder_emptied_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", "")
    leftover = aged(tmp_path / "data" / app.GRADIO_TEMP / "0123abcd" / "upload.png")
    app.use_gradio_temp(tmp_path / "data")
    assert os.environ["GRADIO_TEMP_DIR"] == str(tmp_path / "data" / app.GRADIO_TEMP)
    assert not leftover.exists() and leftover.parent.parent.is_dir()
    mine = aged(tmp_path / "mine" / "keep.png")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(mine.parent))
    app.use_gradio_temp(tmp_path / "data")  # a folder the person chose is never emptied
    assert mine.exists() and os.environ["GRADIO_TEMP_DIR"] == str(mine.parent)
