"""A quiet console: library messages that do not concern the person, filtered once at start.

Filtered: diffusers' "There are modules in … that should be kept in float32" (logged on
every dtype cast of a loaded model, although the list is empty for Flux and the cast is
ours on purpose) and transformers' "Loading weights" bars (one per text encoder load, which
takes a moment). Nothing else: other warnings and errors of the same loggers still reach the
log, and huggingface_hub's download bars stay, so a first download still shows progress.
"""

from __future__ import annotations

import logging

# (logger name, a fragment of the message to drop)
NOISE: tuple[tuple[str, str], ...] = (
    ("diffusers.models.modeling_utils", "that should be kept in float32"),
)


class DropNoise(logging.Filter):
    """Drops records whose message holds one of `fragments`; passes every other record."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def quiet_console() -> None:
    """Filter the known noise; calling it again changes nothing. Imports no torch."""
    for name, fragment in NOISE:
        logger = logging.getLogger(name)  # the same object the library gets later
        if not any(isinstance(f, DropNoise) and fragment in f.fragments for f in logger.filters):
            logger.addFilter(DropNoise((fragment,)))
    _no_loading_bars()


def _no_loading_bars() -> None:
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    hub_bars_were_off = are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()  # this also turns huggingface_hub's bars off,
    if not hub_bars_were_off:
        enable_progress_bars()  # which downloads need: turn them back on
