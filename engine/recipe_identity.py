"""The Identity section of the recipe (seed 002): reference photos of the person, and, on
every render with a face, the similarity of that face to them."""

from __future__ import annotations

from dataclasses import dataclass

from engine.fields import file_refs
from engine.input_limits import DIGEST

MAX_REFERENCES = 4


@dataclass(frozen=True, kw_only=True)
class IdentityParams:
    """Reference photos (stored image digests). With none, nothing is computed or shown;
    with some, each image's largest face is scored against their mean embedding."""

    references: tuple[str, ...] = file_refs(DIGEST, MAX_REFERENCES)
