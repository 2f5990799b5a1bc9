"""Errors whose message is written for the person using the studio."""

from __future__ import annotations


class StudioError(Exception):
    """A problem the person can fix: the message says what is wrong and what to do."""


class RecipeError(StudioError):
    """A recipe (JSON, preset or PNG metadata) that cannot be used as given."""


class InputError(StudioError):
    """An uploaded or referenced file (image, LUT, ...) that cannot be used."""


class ModelNotFoundError(StudioError):
    """Weights that could not be found or read; the message lists every place searched."""


class NotAvailableError(StudioError):
    """A recipe asks for a capability this build of the engine does not have."""


class Cancelled(Exception):
    """A run stopped by the person between two steps."""
