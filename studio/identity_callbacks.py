"""The Identity accordion's handlers: photos dropped on its box are checked, stored and added to
the references (up to four), "Clear references" forgets them; either way the result on
screen is re-run in place (only the identity score and what follows it run), and the
references stay in the session's base recipe for the next Generate. A reference the engine
cannot use (no face in it) leaves the references and the result on screen as they were.
The pose picture dropped on its own box is checked, stored and kept (with its preview) in the
base recipe's `identity.pose.image`; it acts from the next Generate, so nothing re-runs. An
OpenPose keypoint JSON dropped on its box is drawn by the engine at the render size on the page
and kept the same way; a JSON it cannot use leaves the pose picture as it was."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gradio as gr

from engine.errors import InputError, StudioError
from engine.recipe import Recipe
from engine.recipe_identity import MAX_REFERENCES
from engine.recipe_json import set_path
from engine.sizes import render_size
from studio.callbacks import MaybeRequest, StudioCallbacks, Updates
from studio.panels import results as res
from studio.panels.identity import (
    FIELD,
    POSE_FIELD,
    IdentityPanel,
    gallery_update,
    pose_preview_update,
)
from studio.session import Session
from studio.tab_events import on_in_place
from studio.uploads import store_pose_json

QUEUE = "identity"  # the accordion's own queue (studio/tab_events.py)
PREFIX = "identity."  # a re-run keeps the result's own recipe but for these fields
STORED = "{k} stored: the next image's face is scored (the figure shows under the report)."
REMOVED = "Identity references removed: nothing is scored."
RESCORED = "Scored against {k} · change {{n}}"
UNSCORED = "Identity references removed · change {n}"
ALREADY = "That photo is already an identity reference."
TOO_MANY = (
    "At most {max} identity references: {k} stored and {new} more dropped. Press "
    '"Clear references" first, or drop fewer photos.'
)
POSE_STORED = "Pose picture stored: the pose ControlNet uses it from the next Generate."
POSE_REMOVED = "Pose picture removed: the pose ControlNet stays off from the next Generate."
POSE_DRAWN = (
    "Pose drawn from the JSON at {w}×{h} px and stored: the pose ControlNet uses it from the "
    "next Generate."
)
SIZE_FIELDS = ("prompt.width", "prompt.height", "prompt.resolution")  # the render size


class IdentityCallbacks:
    """Handlers of the Identity accordion; per-session data stays in the studio's state."""

    def __init__(self, studio: StudioCallbacks, panel: IdentityPanel) -> None:
        self.studio = studio
        self.panel = panel
        studio.restore_listeners.append(self)

    def restored(self, recipe: Recipe) -> Updates:
        """A restored recipe's references in the gallery and its pose picture (or none)."""
        engine = self.studio.engine
        return {
            self.panel.gallery: gallery_update(engine, recipe.identity.references),
            self.panel.pose_preview: pose_preview_update(engine, recipe.identity.pose.image),
        }

    def restore_outputs(self) -> list[gr.Component]:
        return [self.panel.gallery, self.panel.pose_preview]

    def pose_outputs(self) -> list[gr.Component]:
        panel = self.panel
        shown = [panel.pose_preview, panel.pose_digest, panel.pose_upload, panel.pose_json]
        return [*shown, self.studio.panel.status, self.studio.panel.error]

    def outputs(self) -> list[gr.Component]:
        return [*res.regrade_outputs(self.studio.panel), self.panel.gallery, self.panel.upload]

    def add_references(
        self, data: Mapping[gr.Component, Any], request: MaybeRequest = None
    ) -> Updates:
        """Check and store the dropped photos, add them to the references, re-run in place;
        the box empties for the next photo."""
        session: Session = data[self.studio.state]
        emptied = {self.panel.upload: None}
        current = session.base.identity.references
        try:
            references = self._with_new(current, data[self.panel.upload] or [])
        except StudioError as exc:
            return {**self.studio.fail(exc, "Reference not added."), **emptied}
        if references == current:
            return {**res.show_notice(self.studio.panel, ALREADY), **emptied}
        return {**self._use(data, references, request), **emptied}

    def clear_references(
        self, data: Mapping[gr.Component, Any], request: MaybeRequest = None
    ) -> Updates:
        """Forget every reference: nothing is scored, and the report line goes."""
        return self._use(data, (), request)

    def _with_new(self, current: tuple[str, ...], paths: list[str]) -> tuple[str, ...]:
        """`current` and the photos at `paths`, each checked and stored once."""
        if len(current) + len(paths) > MAX_REFERENCES:
            raise InputError(TOO_MANY.format(max=MAX_REFERENCES, k=len(current), new=len(paths)))
        references = list(current)
        for path in paths:
            name = f"Identity reference {len(references) + 1}"
            digest = self.studio.store_photo(path, name)
            if digest not in references:
                references.append(digest)
        return tuple(references)

    def _use(
        self, data: Mapping[gr.Component, Any], references: tuple[str, ...], request: Any
    ) -> Updates:
        """Keep `references` in the session's base recipe and re-run the result on screen
        with them; when the engine cannot use them, nothing changes and it says why."""
        session: Session = data[self.studio.state]
        shown = {self.panel.gallery: gallery_update(self.studio.engine, references)}
        if session.last is None:
            session.base = set_path(session.base, FIELD, list(references))
            notice = STORED.format(k=counted(references)) if references else REMOVED
            return {**res.show_notice(self.studio.panel, notice), **shown}
        base = set_path(session.last.requested, FIELD, list(references))
        notice = RESCORED.format(k=counted(references)) if references else UNSCORED
        updates = self.studio.rerun(data, request, PREFIX, "", base=base, notice=notice)
        if session.last.requested.identity.references != references:
            return updates  # the engine said no: the message shows, the references stay
        session.base = set_path(session.base, FIELD, list(references))
        return {**updates, **shown}

    def add_pose(self, data: Mapping[gr.Component, Any]) -> Updates:
        """Check and store the dropped pose picture as `identity.pose.image`; the box
        empties for the next one."""
        emptied = {self.panel.pose_upload: None}
        try:
            digest = self.studio.store_photo(data[self.panel.pose_upload], "The pose picture")
        except StudioError as exc:
            return {**self.studio.fail(exc, "Pose picture not stored."), **emptied}
        if not digest:
            return emptied
        return {**self._use_pose(data[self.studio.state], digest), **emptied}

    def add_pose_json(self, data: Mapping[gr.Component, Any]) -> Updates:
        """Draw the dropped OpenPose keypoint JSON at the render size set on the page and keep
        the picture as `identity.pose.image`; the box empties for the next one."""
        emptied = {self.panel.pose_json: None}
        path, session = data[self.panel.pose_json], data[self.studio.state]
        if not path:
            return emptied
        try:
            recipe = self.studio.controls.recipe(session.base, data, "prompt.")
            digest = store_pose_json(self.studio.engine, path, recipe)
        except StudioError as exc:
            return {**self.studio.fail(exc, "Pose JSON not used."), **emptied}
        width, height = render_size(recipe.prompt)
        drawn = POSE_DRAWN.format(w=width, h=height)
        return {**self._use_pose(session, digest, drawn), **emptied}

    def clear_pose(self, data: Mapping[gr.Component, Any]) -> Updates:
        """Forget the pose picture: the ControlNet has nothing to follow."""
        return self._use_pose(data[self.studio.state], "")

    def _use_pose(self, session: Session, digest: str, notice: str = "") -> Updates:
        """Keep `digest` in the session's base recipe and show it (the hidden bound box too,
        so that the next Generate reads it)."""
        session.base = set_path(session.base, POSE_FIELD, digest)
        notice = notice or (POSE_STORED if digest else POSE_REMOVED)
        return {
            **res.show_notice(self.studio.panel, notice),
            self.panel.pose_preview: pose_preview_update(self.studio.engine, digest),
            self.panel.pose_digest: digest,
        }

    def wire(self) -> None:
        """Connect the accordion's events (inside the Blocks context)."""
        inputs = {self.studio.state, self.panel.upload}
        on_in_place(QUEUE, [self.panel.upload.upload], self.add_references, inputs, self.outputs())
        on_in_place(QUEUE, [self.panel.clear.click], self.clear_references, inputs, self.outputs())
        pose = {self.studio.state, self.panel.pose_upload}
        out = self.pose_outputs()
        on_in_place(QUEUE, [self.panel.pose_upload.upload], self.add_pose, pose, out)
        on_in_place(QUEUE, [self.panel.pose_clear.click], self.clear_pose, pose, out)
        sizes = {c for path, c in self.studio.controls.by_path.items() if path in SIZE_FIELDS}
        keypoints = {self.studio.state, self.panel.pose_json, *sizes}
        on_in_place(QUEUE, [self.panel.pose_json.upload], self.add_pose_json, keypoints, out)


def counted(references: tuple[str, ...]) -> str:
    """How many references, in words: "1 identity reference", "3 identity references"."""
    count = len(references)
    return f"{count} identity reference" + ("" if count == 1 else "s")
