"""What a studio with logins shows before login, and whose files a login may fetch.

Gradio keeps /config, /gradio_api/info and the file routes behind its login, but its page
template embeds the whole API description (endpoint names, parameter labels, descriptions)
in the login page itself. And any logged-in person may fetch any file under
`allowed_paths` by its path. This ASGI middleware, handed to Gradio's FastAPI app through
`launch(app_kwargs=...)`, closes both gaps while logins are on (it does nothing without):

- an HTML page served to a client that is not logged in carries an empty API description;
- `/gradio_api/file=PATH` inside the outputs folder is served only from the login's own
  subfolder (studio/owners.py), and never from the private folders (the data folder).
  The copies Gradio makes in its upload cache (hashed, unguessable names) stay served.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from studio.owners import owner_folder_name

EMPTY_API_INFO = b'{"named_endpoints": {}, "unnamed_endpoints": {}}'
_API_INFO = re.compile(rb"(window\.gradio_api_info = )(.*?)(;</script>)", re.DOTALL)
_FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")
NOT_YOURS = "This file belongs to another login (or to the studio's data); it is not served."
UNSAFE_PAGE = (
    "The login page could not be served without the studio's API description, so it is "
    "not served at all. Gradio's page template changed: update studio/auth_guard.py."
)


def guard_app_kwargs(outputs_dir: Path, private_dirs: Sequence[Path] = ()) -> dict[str, Any]:
    """`app_kwargs` for demo.launch() that install the guard on Gradio's app."""
    guard = Middleware(
        AuthGuard, outputs_dir=Path(outputs_dir), private_dirs=[Path(p) for p in private_dirs]
    )
    return {"middleware": [guard]}


def inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def may_fetch(
    path: str, user: str | None, outputs_dir: Path, private_dirs: Sequence[Path], cache_dir: str
) -> bool:
    """Whether `user` may fetch `path` (as Gradio's file route resolves it) while logins
    are on: the upload cache, the user's own outputs subfolder, and whatever else Gradio's
    own allowed_paths allow; never another login's folder or a private folder."""
    cache = {os.path.abspath(cache_dir), os.path.realpath(cache_dir)}
    outputs = {os.path.abspath(outputs_dir), os.path.realpath(outputs_dir)}
    private = {f(p) for p in private_dirs for f in (os.path.abspath, os.path.realpath)}
    own = {os.path.join(o, owner_folder_name(user)) for o in outputs} if user else set()
    for candidate in {os.path.abspath(path), os.path.realpath(path)}:
        if any(inside(candidate, c) for c in cache):
            continue
        if any(inside(candidate, o) for o in outputs):
            if not any(inside(candidate, mine) for mine in own):
                return False
        elif any(inside(candidate, p) for p in private):
            return False
    return True


def strip_api_info(html: bytes) -> bytes | None:
    """The page with an empty API description; None when the template was not recognised
    but still looks like it carries one."""
    stripped, count = _API_INFO.subn(lambda m: m[1] + EMPTY_API_INFO + m[3], html)
    if count == 0 and b"named_endpoints" in html:
        return None
    return stripped


def current_user(gradio_app: Any, scope: Scope) -> str | None:
    """The login behind a request, read as Gradio's own get_current_user reads it."""
    cookies = HTTPConnection(scope).cookies
    cookie_id = getattr(gradio_app, "cookie_id", "")
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(
        f"access-token-unsecure-{cookie_id}"
    )
    return getattr(gradio_app, "tokens", {}).get(token) if token else None


def file_route_path(path: str) -> str | None:
    """The file path a Gradio file route is asked for, or None for other routes."""
    for route in _FILE_ROUTES:
        at = path.find(route)
        if at != -1:
            return path[at + len(route) :]
    return None


class AuthGuard:
    """The ASGI middleware (see the module docstring)."""

    def __init__(
        self, app: ASGIApp, *, outputs_dir: Path, private_dirs: Sequence[Path] = ()
    ) -> None:
        self.app = app
        self.outputs_dir = outputs_dir
        self.private_dirs = list(private_dirs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gradio_app = scope.get("app")
        if scope["type"] != "http" or getattr(gradio_app, "auth", None) is None:
            await self.app(scope, receive, send)
            return
        user = current_user(gradio_app, scope)
        wanted = file_route_path(scope["path"])
        if wanted is not None and not self._may_fetch(wanted, user, gradio_app):
            await _send_text(send, 403, NOT_YOURS)
            return
        if user is None and scope["method"] == "GET":
            # Uncompressed from the inside, so the page can be read; Gradio's compression
            # sits outside this middleware and still applies.
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"]
            await self.app({**scope, "headers": headers}, receive, _LoginPageSend(send))
            return
        await self.app(scope, receive, send)

    def _may_fetch(self, wanted: str, user: str | None, gradio_app: Any) -> bool:
        if wanted.startswith(("http://", "https://")):
            return True  # Gradio's own URL checks apply; no local file is read
        cache = getattr(gradio_app, "uploaded_file_dir", None) or _upload_folder()
        return may_fetch(wanted, user, self.outputs_dir, self.private_dirs, cache)


class _LoginPageSend:
    """Wraps `send` for a client that is not logged in: an HTML body is held until it is
    complete, then sent without the API description (and with its new length)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.body = bytearray()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers", []))
            if headers.get(b"content-type", b"").startswith(b"text/html"):
                self.start = message
                return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.body += message.get("body", b"")
        if message.get("more_body", False):
            return
        encoded = any(k.lower() == b"content-encoding" for k, _ in self.start["headers"])
        page = None if encoded else strip_api_info(bytes(self.body))
        if page is None:
            await _send_text(self.send, 503, UNSAFE_PAGE)
            return
        headers = [(k, v) for k, v in self.start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(page)).encode()))
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": page})


async def _send_text(send: Send, status: int, text: str) -> None:
    body = json.dumps({"detail": text}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _upload_folder() -> str:
    from gradio.utils import get_upload_folder

    return get_upload_folder()
