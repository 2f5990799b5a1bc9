"""The Identity accordion's bound fields (seed 002): PuLID-FLUX's switch, weight and window.
The reference photos themselves are image digests with an upload box of their own
(studio/panels/identity.py)."""

from __future__ import annotations

from studio.binding_row import Binding

IDENTITY_BINDINGS: tuple[Binding, ...] = (
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
)
