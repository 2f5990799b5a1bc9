"""The Identity section of the recipe (seed 002): reference photos of the person, and, on
every render with a face, the similarity of that face to them; PuLID-FLUX pushing the render
towards that face."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.fields import bounded, file_ref, file_refs
from engine.input_limits import DIGEST, RELATIVE_NAME

MAX_REFERENCES = 4


@dataclass(frozen=True, kw_only=True)
class PulidParams:
    """PuLID-FLUX on the base pass (ComfyUI-PuLID-Flux's weight, start_at, end_at). The
    defaults are seed 002's tuned v3: weight 0.4 ("high weight drowned the LoRA"), start
    0.15 (the LoRA builds the composition first), end 0.9 (skin detail finishes freely).
    `finishing`: also on the latent, Refine and Upscale passes, as a PuLID-patched model
    feeds every sampler in ComfyUI (each pass with the same weight and window)."""

    enabled: bool = False
    weight: float = bounded(0.4, 0.0, 5.0, 0.05)
    start: float = bounded(0.15, 0.0, 1.0, 0.01)
    end: float = bounded(0.9, 0.0, 1.0, 0.01)
    finishing: bool = True


@dataclass(frozen=True, kw_only=True)
class PoseParams:
    """A pose ControlNet on the base pass (InstantX / Shakker union models in pose mode):
    the pose picture (an OpenPose skeleton image), strength and window. Defaults are seed
    002's: strength 0.85, from the first step to 80 % of them."""

    enabled: bool = False
    controlnet: str = file_ref(RELATIVE_NAME)  # under <models>/controlnet/; "" = the first
    image: str = file_ref(DIGEST)  # the pose picture
    strength: float = bounded(0.85, 0.0, 2.0, 0.05)
    start: float = bounded(0.0, 0.0, 1.0, 0.01)
    end: float = bounded(0.8, 0.0, 1.0, 0.01)


@dataclass(frozen=True, kw_only=True)
class IdentityParams:
    """Reference photos (stored image digests). With none, nothing is computed or shown;
    with some, each image's largest face is scored against their mean embedding."""

    references: tuple[str, ...] = file_refs(DIGEST, MAX_REFERENCES)
    pulid: PulidParams = field(default_factory=PulidParams)
    pose: PoseParams = field(default_factory=PoseParams)

    def pulid_active(self) -> bool:
        """PuLID acts when it is on and there is a reference to take the face from."""
        return self.pulid.enabled and bool(self.references) and self.pulid.weight > 0

    def pulid_finishing(self) -> bool:
        """PuLID also acts on the latent, Refine and Upscale passes."""
        return self.pulid_active() and self.pulid.finishing

    def pose_active(self) -> bool:
        """The ControlNet acts when it is on, has a pose picture and a strength."""
        return self.pose.enabled and bool(self.pose.image) and self.pose.strength > 0
