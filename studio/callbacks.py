"""Event handlers: build a recipe through the bound controls, call the engine, return updates.

Handlers take Gradio input dicts and return output dicts ({component: value}); anything
not in the returned dict stays on screen as it was, so a failed run never clears the
earlier results.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import gradio as gr

from engine.errors import Cancelled, InputError, StudioError
from engine.recipe import Recipe
from engine.recipe_json import set_path
from engine.runtypes import CancelToken
from studio.cancels import RunningRenders
from studio.controls import Controls
from studio.kept import KeptResults
from studio.lora_rules import report_markdown
from studio.owners import owner_outputs
from studio.panels import results as res
from studio.panels.color import PREFIX as COLOR
from studio.panels.loras import LoraCallbacks
from studio.panels.prompt import PromptPanel
from studio.panels.redux import ReduxCallbacks, ReduxPanel
from studio.panels.settings import FIXED, seed_for_run
from studio.progress import idle_html
from studio.render_stream import Done, Failed, Step, stream_render
from studio.session import RunView, Session
from studio.toasts import warn
from studio.uploads import store_upload, stored_image

log = logging.getLogger(__name__)

Updates = dict[gr.Component, Any]
MaybeRequest = gr.Request | None  # Gradio passes the request to a parameter typed so
STOPPED = "Stopped. The earlier results are kept."
NO_START_IMAGE = (
    "'Start from this image' is on, but no start image was uploaded. Upload one under "
    "Size / LoRA / Prompt > Start image, or switch it off."
)


def new_cancel_token(engine: Any) -> CancelToken:
    """A token the Stop button sets; the engine checks it between steps."""
    return CancelToken()


def failure_message(exc: BaseException) -> str:
    """What to tell the person about a failed run."""
    if isinstance(exc, StudioError):
        return str(exc)
    if isinstance(exc, Cancelled):
        return STOPPED
    log.error("render failed", exc_info=exc)
    return (
        f"Unexpected error ({type(exc).__name__}: {exc}). The studio keeps running; "
        "the server log has the details."
    )


def run_view(requested: Recipe, result: Any) -> RunView:
    """What the results panel needs from a RunResult (its stage images stay lazy)."""
    images = list(result.images)
    return RunView(
        requested=requested,
        rendered=result.recipe,
        finals=images,
        stages=result.artifacts if result.artifacts else {res.FINAL: images},
        report_line=result.report.line(),
        notes=list(result.report.notes),
        files=[str(p) for p in result.saved],
        result=result,
    )


def owner_of(request: MaybeRequest) -> str:
    """The login name whose history this is ("" for a studio without logins)."""
    return str(getattr(request, "username", None) or "")


def with_source(recipe: Recipe) -> Recipe:
    """The recipe as Generate renders it: img2img from the stored start image, or from noise."""
    if recipe.source.kind == "img2img":
        if not recipe.source.image:
            raise InputError(NO_START_IMAGE)
        return recipe
    return set_path(set_path(recipe, "source.kind", "generate"), "source.image", "")


class StudioCallbacks:
    """The handlers of one page; they hold no per-session data (that is in `state`).

    The Redux tab's and the LoRA stack's own handlers are in `redux` and `loras` (None when
    the page has no such panel).
    """

    def __init__(
        self,
        engine: Any,
        controls: Controls,
        panel: res.ResultsPanel,
        state: gr.State,
        upload: gr.File,
        *,
        seed_mode: gr.Radio | None = None,
        source: PromptPanel | None = None,
        redux: ReduxPanel | None = None,
        generate_button: gr.Button | None = None,
    ) -> None:
        self.engine = engine
        self.generate_button = generate_button or gr.Button(visible=False)
        self.kept = KeptResults(engine)
        self.running = RunningRenders()
        self.controls = controls
        self.panel = panel
        self.state = state
        self.upload = upload
        self.seed_mode = seed_mode
        self.source = source
        # Tabs with components that show what a restored recipe holds besides the bound
        # fields (the Expression tab's driving photo): restored(recipe), restore_outputs().
        self.restore_listeners: list[Any] = []
        preview = source.source_preview if source else None
        self.redux = (
            ReduxCallbacks(engine, controls, redux, state, panel, self._not_stored, preview)
            if redux is not None
            else None
        )
        self.loras = (
            LoraCallbacks(
                engine,
                controls,
                source.loras,
                state,
                controls["prompt.prompt"],
                source.effective_prompt,
            )
            if source is not None
            else None
        )

    def run_outputs(self) -> list[gr.Component]:
        """What Generate updates: the results column, the seed, the button, the LoRA report."""
        out = [*res.run_outputs(self.panel), self.controls["settings.seed"], self.generate_button]
        return out + ([self.loras.panel.report] if self.loras else [])

    # -- rendering -------------------------------------------------------------------

    def generate(
        self, data: Mapping[gr.Component, Any], request: MaybeRequest = None
    ) -> Iterator[Updates]:
        """Render the recipe on the tabs: the bar and step previews where the result goes."""
        session: Session = data[self.state]
        try:
            recipe = with_source(self.controls.recipe(session.base, data))
            mode = data.get(self.seed_mode, FIXED) if self.seed_mode else FIXED
            seed = seed_for_run(mode, recipe.settings.seed, session.last_seed)
            recipe = set_path(recipe, "settings.seed", seed)
        except StudioError as exc:
            yield self.fail(exc)
            return
        session.last_seed = seed
        cancel = new_cancel_token(self.engine)
        session.cancel = cancel
        browser = getattr(request, "session_hash", None) or ""
        self.running.start(browser, cancel)
        starting = {
            **res.show_notice(self.panel, f"Rendering with seed {seed}…"),
            self.panel.progress: idle_html("starting…"),
            self.generate_button: gr.update(value="Rendering…", interactive=False),
        }
        if "settings.seed" in self.controls.by_path:
            starting[self.controls["settings.seed"]] = seed  # show the seed this run uses
        yield starting
        try:
            yield from self._render_streaming(session, recipe, cancel, owner_of(request))
        finally:  # also when Gradio closes this generator (a cancel): the engine stops too
            cancel.cancel()
            self.running.finish(browser, cancel)
            if session.cancel is cancel:
                session.cancel = None

    def _render_streaming(
        self, session: Session, recipe: Recipe, cancel: Any, owner: str
    ) -> Iterator[Updates]:
        ready = {self.generate_button: gr.update(value="Generate", interactive=True)}
        folder = owner_outputs(self.engine.config.outputs_dir, owner)
        run = lambda progress: self.engine.run(
            recipe, progress=progress, cancel=cancel, outputs_dir=folder
        )
        for event in stream_render(run):
            if isinstance(event, Step):
                yield res.show_progress(self.panel, event.view, event.preview)
            elif isinstance(event, Done):
                updates = self._show_new(session, run_view(recipe, event.result), owner)
                updates.update(res.show_finished(self.panel, event.seconds))
                if self.loras is not None:  # the match report under the LoRA stack
                    updates[self.loras.panel.report] = report_markdown(event.result.report.notes)
                yield {**updates, **ready}
            elif isinstance(event, Failed):
                yield {**self.fail(event.error), self.panel.progress: "", **ready}

    def _show_new(self, session: Session, view: RunView, owner: str) -> Updates:
        """Keep a new result in the history and show it everywhere."""
        try:
            self.kept.add(view, owner)
        except StudioError as exc:  # the result is still shown; the history says why not
            warn(f"Not added to the history: {exc}")
        session.remember(view)
        history = {self.panel.history: self.kept.show(session, owner)}
        return res.show_run(self.panel, session, history)

    def stop(self, session: Session) -> Updates:
        """Ask the render in progress to stop between two steps."""
        ready = {self.generate_button: gr.update(value="Generate", interactive=True)}
        if session.cancel is not None:
            session.cancel.cancel()
            return {**res.show_status(self.panel, STOPPED), self.panel.progress: "", **ready}
        return {**res.show_status(self.panel, "Nothing is rendering."), **ready}

    def disconnected(self, request: MaybeRequest = None) -> None:
        """The browser went away (Gradio's unload): stop its render."""
        session = getattr(request, "session_hash", None)
        if session and self.running.cancel(session):
            log.info("render stopped: its browser session %s went away", session)

    def regrade(self, data: Mapping[gr.Component, Any], request: MaybeRequest = None) -> Updates:
        """Re-grade the result on screen in place (only the colour stage runs); its PNGs
        and history entry follow once the grade settles."""
        return self.rerun(data, request, COLOR, "Colour settings apply to the next image.")

    def rerun(
        self,
        data: Mapping[gr.Component, Any],
        request: MaybeRequest,
        prefix: str,
        idle: str,
        base: Recipe | None = None,
        notice: str = "Re-graded · grade {n}",
    ) -> Updates:
        """The result on screen with the controls under `prefix` (over `base`, default the
        result's own recipe) re-applied in place: only the stages they touch run."""
        session: Session = data[self.state]
        if session.last is None:
            return res.show_status(self.panel, idle)
        try:
            recipe = self.controls.recipe(base or session.last.requested, data, prefix=prefix)
        except StudioError as exc:
            return self.fail(exc, "Not changed.")
        if recipe == session.last.requested:
            return {self.panel.status: gr.skip()}  # a blur or repeat that changed nothing
        try:
            result = self.engine.run(recipe, save=False)
        except Exception as exc:  # every failure becomes a message; the image stays
            return self.fail(exc, "Not changed.")
        session.regraded(run_view(recipe, result))
        self.kept.regraded(session.last, owner_of(request))
        return res.show_regrade(self.panel, session, notice)

    def store_photo(self, path: str | None, name: str) -> str:
        """Check and store an optional photo; "" for none (StudioError says what is wrong)."""
        return store_upload(self.engine, path, name) if path else ""

    def use_photo(
        self,
        data: Mapping[gr.Component, Any],
        request: MaybeRequest,
        field: str,
        digest: str,
        prefix: str,
        idle: str,
        notice: str,
        stored: str,
    ) -> Updates:
        """Keep a tab's photo (a digest, "" for none) at `field` of the session's base recipe
        and re-run the result on screen with it; `stored` is said when none is on screen."""
        session: Session = data[self.state]
        session.base = set_path(session.base, field, digest)
        if session.last is None:
            return res.show_notice(self.panel, stored if digest else "Removed.")
        base = set_path(session.last.requested, field, digest)
        return self.rerun(data, request, prefix, idle, base=base, notice=notice)

    def upload_post(
        self,
        data: Mapping[gr.Component, Any],
        path: str | None,
        prefix: str,
        request: Any,
        failed: str = "Not graded.",
    ) -> Updates:
        """Store an uploaded picture and run the post stages under `prefix` on it (no
        diffusion): the Color tab grades it, the Expression tab edits (and grades) it."""
        session: Session = data[self.state]
        if not path:
            return res.show_status(self.panel, "No picture was uploaded.")
        try:
            digest = store_upload(self.engine, path)
            recipe = self.controls.recipe(session.base, data, prefix=prefix)
            recipe = set_path(set_path(recipe, "source.kind", "image"), "source.image", digest)
            owner = owner_of(request)
            folder = owner_outputs(self.engine.config.outputs_dir, owner)
            result = self.engine.run(recipe, outputs_dir=folder)
        except Exception as exc:  # every failure becomes a message
            return self.fail(exc, failed)
        return self._show_new(session, run_view(recipe, result), owner)

    def grade_upload(
        self, data: Mapping[gr.Component, Any], request: MaybeRequest = None
    ) -> Updates:
        """Store an uploaded picture and grade it with the Color tab (no diffusion)."""
        return self.upload_post(data, data[self.upload], COLOR, request)

    def upload_source(self, session: Session, path: str | None, denoise: float | None) -> Updates:
        """Check and store a start image for img2img, and switch img2img on."""
        if not path or self.source is None:
            return res.show_status(self.panel, "No start image was uploaded.")
        try:
            digest = store_upload(self.engine, path, "The start image")
        except StudioError as exc:
            return self.fail(exc, "Start image not stored.")
        session.base = set_path(session.base, "source.image", digest)
        text = "Start image stored; Generate starts from it."
        if denoise is not None and denoise >= 0.9:
            text += " Lower Settings > Denoise to 0.45-0.60 to keep the face (1.0 repaints it all)."
        return {
            **res.show_notice(self.panel, text),
            self.controls["source.kind"]: True,
            self.source.source_preview: path,
        }

    def clear_source(self, session: Session) -> Updates:
        """Forget the start image and go back to text-to-image."""
        session.base = set_path(session.base, "source.image", "")
        updates = res.show_status(self.panel, "Start image removed: Generate starts from noise.")
        updates[self.controls["source.kind"]] = False
        if self.source is not None:
            updates[self.source.source_preview] = None
        return updates

    def _not_stored(self, exc: BaseException) -> Updates:
        return self.fail(exc, "Not stored.")

    def fail(self, exc: BaseException, what: str = "Could not render.") -> Updates:
        """A failure as a message above the image (a toast too); nothing else changes."""
        message = failure_message(exc)
        if isinstance(exc, Cancelled):
            return res.show_status(self.panel, message)
        warn(f"{what} {message}")
        return res.show_error(self.panel, message, what)

    # -- restore ---------------------------------------------------------------------

    def restore(self, session: Session, path: str | None) -> Updates:
        """Set every tab from a PNG made by the studio or a recipe .json."""
        if not path:
            return res.show_status(self.panel, "No file to restore from.")
        try:
            recipe = self.engine.read_recipe_file(Path(path))
        except StudioError as exc:
            return self.fail(exc, "Not restored.")
        return self.restored(session, recipe, f"Restored the recipe of {Path(path).name}.")

    def restored(self, session: Session, recipe: Recipe, notice: str) -> Updates:
        """Every tab set from `recipe` (the person's next Generate renders it)."""
        session.base = recipe
        updates: Updates = self.controls.updates(recipe)
        updates.update(res.show_notice(self.panel, notice))
        if self.seed_mode is not None:
            updates[self.seed_mode] = FIXED  # the restored seed is the point of restoring
        if self.source is not None:
            updates[self.source.source_preview] = stored_image(self.engine, recipe.source.image)
        if self.redux is not None:
            updates.update(self.redux.restored(recipe))
        if self.loras is not None:
            updates.update(self.loras.restored(session, recipe))
        for listener in self.restore_listeners:
            updates.update(listener.restored(recipe))
        return updates

    def restore_outputs(self) -> list[gr.Component]:
        """What `restored` updates besides the bound controls and the status."""
        out: list[gr.Component] = [self.panel.error]
        if self.seed_mode is not None:
            out.append(self.seed_mode)
        if self.source is not None:
            out.append(self.source.source_preview)
        if self.redux is not None:
            out += self.redux.outputs()
        if self.loras is not None:
            out += [*self.loras.panel.rows, self.loras.panel.add]
        for listener in self.restore_listeners:
            out += listener.restore_outputs()
        return out
