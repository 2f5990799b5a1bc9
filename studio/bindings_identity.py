"""The Identity accordion's bound fields (seed 002): PuLID-FLUX's switch, weight, window and
whether it also acts on the finishing passes, and the pose ControlNet's. The reference photos
are image digests with an upload box of their own (studio/panels/identity.py); the pose
picture has one too, and its digest rides in a hidden bound box so that Generate and a
restored recipe carry it like any other field."""

from __future__ import annotations

from studio.binding_row import Binding

PULID_BINDINGS: tuple[Binding, ...] = (
    Binding(
        "identity.pulid.enabled",
        "PuLID",
        "Pushes the render's face towards the reference photos with PuLID-FLUX "
        "(pulid_flux_v0.9.1.safetensors in the models folder's pulid/, with the antelopev2 "
        "pack and EVA02-CLIP-L). Acts from the next Generate.",
    ),
    Binding(
        "identity.pulid.weight",
        "PuLID weight",
        "How strongly the face is pushed (seed 002: 0.4; higher drowned the subject LoRA "
        "into plastic faces).",
    ),
    Binding(
        "identity.pulid.start",
        "Start",
        "Fraction of the sampling before PuLID acts (seed 002: 0.15, so the LoRA builds the "
        "composition first).",
    ),
    Binding(
        "identity.pulid.end",
        "End",
        "Fraction of the sampling after which PuLID lets go (seed 002: 0.9, so skin detail "
        "finishes naturally).",
    ),
    Binding(
        "identity.pulid.finishing",
        "PuLID on finishing passes",
        "Also on the latent pass, the Refine detailer and chin passes and the Upscale tile "
        "and seam passes, with the same weight and window, as a PuLID-patched model feeds "
        "every sampler in ComfyUI. Off: PuLID acts on the base pass only.",
    ),
)

POSE_BINDINGS: tuple[Binding, ...] = (
    Binding(
        "identity.pose.enabled",
        "Pose ControlNet",
        "Holds the body to the pose picture's OpenPose skeleton on the base pass (a union "
        "ControlNet in OpenPose mode: InstantX / Shakker Union Pro). Needs a pose picture. "
        "Acts from the next Generate.",
    ),
    Binding(
        "identity.pose.controlnet",
        "ControlNet file",
        "The ControlNet file in the models folder's controlnet/ (the first one found when "
        "none is picked).",
    ),
    Binding(
        "identity.pose.strength",
        "Pose strength",
        "How hard the skeleton holds (seed 002: 0.85, to force the pose against prompt cues).",
    ),
    Binding(
        "identity.pose.start",
        "Start",
        "Fraction of the sampling before the pose acts (seed 002: 0, active from step 0).",
    ),
    Binding(
        "identity.pose.end",
        "End",
        "Fraction of the sampling after which the pose lets go (seed 002: 0.8, released "
        "only at the tail).",
    ),
    Binding(
        "identity.pose.image",
        "Pose picture",
        "The stored pose picture's digest (set by the upload box).",
    ),
)

IDENTITY_BINDINGS: tuple[Binding, ...] = (*PULID_BINDINGS, *POSE_BINDINGS)
