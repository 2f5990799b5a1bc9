"""The "Identity" accordion on the "Size / LoRA / Prompt" tab (seed 002): reference photos of
the person, against which every render's largest face is scored (the figure shows under the
run report). The photos are image digests kept in the session's base recipe
(`identity.references`); the upload box only takes them in, one or several at a time, and
the gallery shows what is stored. Under PuLID, the pose ControlNet's group: its switch, file,
strength and window, and one pose picture (an OpenPose skeleton image) taken in the same way
into `identity.pose.image`, with a small preview; an OpenPose keypoint JSON dropped on its own
box is drawn by the engine at the render size and taken in as that picture.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine.recipe import Recipe
from engine.recipe_identity import MAX_REFERENCES
from studio.controls import Controls
from studio.uploads import stored_image

TITLE = "Identity"
FIELD = "identity.references"
HINT = (
    f"Photos of the person (up to {MAX_REFERENCES}; a clear face, roughly facing the camera). "
    "Each image's largest face is compared with them: the score appears under the run report; "
    "with no reference nothing is computed."
)
POSE_FIELD = "identity.pose.image"
POSE_TITLE = "Pose (ControlNet)"
FIRST_CONTROLNET = ("(the first one found)", "")
POSE_HINT = (
    "An OpenPose skeleton picture holds the body's pose on the base pass (a union ControlNet "
    "in OpenPose mode: InstantX / Shakker Union Pro, under the models folder's controlnet/). "
    "An OpenPose or DWPose keypoint JSON is drawn as that picture at the render size. "
    "These settings act from the next Generate."
)


@dataclass
class IdentityPanel:
    """The accordion's components that are not bound recipe fields."""

    upload: gr.File
    gallery: gr.Gallery
    clear: gr.Button
    pose_upload: gr.File
    pose_preview: gr.Image
    pose_clear: gr.Button
    pose_digest: gr.Textbox  # the hidden bound box holding identity.pose.image
    pose_json: gr.File  # an OpenPose keypoint JSON, drawn into the pose picture


def build_identity_accordion(
    controls: Controls, recipe: Recipe, controlnets: list[str] | None = None
) -> IdentityPanel:
    """Lay out the accordion (inside the current Tab context): the references, then PuLID."""
    with gr.Accordion(TITLE, open=False, elem_id="ps-identity"):
        gr.Markdown(HINT, elem_classes=["ps-hint"], elem_id="ps-identity-hint")
        with gr.Row(equal_height=False):
            # A file box, not gr.Image: the engine checks each photo and names it in its message.
            upload = gr.File(
                label="Add reference photos", file_types=["image"], file_count="multiple",
                height=130, elem_id="ps-identity-upload",
            )  # fmt: skip
            gallery = gr.Gallery(
                label=gallery_label(0), columns=MAX_REFERENCES, height=160, preview=False,
                allow_preview=False, interactive=False, elem_id="ps-identity-references",
            )  # fmt: skip
        clear = gr.Button("Clear references", size="sm", elem_id="ps-identity-clear")
        controls.add_in_row(recipe, "identity.pulid.enabled", "identity.pulid.weight")
        controls.add_in_row(recipe, "identity.pulid.start", "identity.pulid.end")
        controls.add("identity.pulid.finishing", recipe)
        pose = _build_pose_group(controls, recipe, controlnets or [])
    return IdentityPanel(upload, gallery, clear, *pose)


def _build_pose_group(
    controls: Controls, recipe: Recipe, controlnets: list[str]
) -> tuple[gr.File, gr.Image, gr.Button, gr.Textbox, gr.File]:
    """The pose ControlNet's group: bound settings, then the pose picture's box and preview."""
    with gr.Group(elem_id="ps-identity-pose"):
        gr.Markdown(f"**{POSE_TITLE}**  \n{POSE_HINT}", elem_classes=["ps-hint"])
        with gr.Row():
            controls.add("identity.pose.enabled", recipe)
            files = [FIRST_CONTROLNET, *((name, name) for name in controlnets)]
            controls.add("identity.pose.controlnet", recipe, choices=files)
        controls.add_in_row(
            recipe, "identity.pose.strength", "identity.pose.start", "identity.pose.end"
        )
        with gr.Row(equal_height=False):
            upload = gr.File(
                label="Pose picture", file_types=["image"], file_count="single", height=130,
                elem_id="ps-identity-pose-upload",
            )  # fmt: skip
            keypoints = gr.File(
                label="Or an OpenPose keypoint JSON", file_types=[".json"], file_count="single",
                height=130, elem_id="ps-identity-pose-json",
            )  # fmt: skip
            preview = gr.Image(
                value=None, label="Stored pose picture", height=160, interactive=False,
                elem_id="ps-identity-pose-preview",
            )  # fmt: skip
        clear = gr.Button("Clear pose picture", size="sm", elem_id="ps-identity-pose-clear")
        digest = controls.add(POSE_FIELD, recipe, visible=False)
    return upload, preview, clear, digest, keypoints


def gallery_label(count: int) -> str:
    return f"Stored references ({count} of {MAX_REFERENCES})"


def gallery_update(engine: Any, digests: Iterable[str]) -> Any:
    """The gallery showing the stored photos `digests` (one missing from the store is left
    out), its label counting them."""
    shown = [(image, f"Reference {n}") for n, image in _images(engine, digests)]
    return gr.update(value=shown, label=gallery_label(len(shown)))


def _images(engine: Any, digests: Iterable[str]) -> list[tuple[int, Any]]:
    images = ((n, stored_image(engine, digest)) for n, digest in enumerate(digests, 1))
    return [(n, image) for n, image in images if image is not None]


def pose_preview_update(engine: Any, digest: str) -> Any:
    """The preview of the stored pose picture `digest` (empty for none or a missing one)."""
    return gr.update(value=stored_image(engine, digest))
