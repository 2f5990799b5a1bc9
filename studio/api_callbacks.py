"""The API for programs (gradio_client): render a recipe JSON, store an image.

Both answer a program with a message (gr.Error), never a bare "Error"; a cancelled render
job stops the engine between two steps before the next job starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from engine.errors import StudioError
from engine.recipe_json import recipe_from_json
from engine.runtypes import CancelToken
from studio.callbacks import MaybeRequest, failure_message, owner_of
from studio.cancels import run_cancellable
from studio.owners import owner_outputs
from studio.uploads import store_upload


class ApiCallbacks:
    """The endpoints' handlers over one engine."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    async def render_api(
        self, recipe_json: str, request: MaybeRequest = None
    ) -> tuple[list[str], dict[str, Any]]:
        """Render a recipe JSON (a partial one is laid over the default recipe).

        Returns the saved PNG paths (each carries its recipe) and the run report. A
        cancelled job stops the engine between two steps before the next job starts.
        """
        cancel = CancelToken()
        folder = owner_outputs(self.engine.config.outputs_dir, owner_of(request))
        try:
            return await run_cancellable(
                lambda: self._render_recipe_json(recipe_json, cancel, folder), cancel
            )
        except StudioError as exc:
            raise gr.Error(str(exc), print_exception=False) from exc
        except Exception as exc:  # a program gets a message, never a bare "Error"
            raise gr.Error(failure_message(exc), print_exception=False) from exc

    def _render_recipe_json(
        self, recipe_json: str, cancel: CancelToken, folder: Path
    ) -> tuple[list[str], dict[str, Any]]:
        recipe = recipe_from_json(recipe_json or "", base=self.engine.default_recipe())
        result = self.engine.run(recipe, save=True, cancel=cancel, outputs_dir=folder)
        report = dict(result.report.to_dict())
        report.setdefault("line", result.report.line())
        return [str(p) for p in result.saved], report

    def upload_api(self, path: str | None) -> str:
        """Validate and store an image; returns its digest for `source.image` or Redux."""
        if not path:
            raise gr.Error("No file was uploaded.", print_exception=False)
        try:
            return store_upload(self.engine, path)
        except StudioError as exc:
            raise gr.Error(str(exc), print_exception=False) from exc
