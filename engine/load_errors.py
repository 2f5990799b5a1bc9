"""Reading the errors torch and the model libraries raise while loading a file, for messages
that say what is wrong in one line."""

from __future__ import annotations


def refused_by_unpickler(error: BaseException) -> str | None:
    """What torch's weights-only unpickler refused ("Unsupported global: GLOBAL io.open ..."),
    or None when the error is of another kind (a damaged file)."""
    detail = str(error).partition("WeightsUnpickler error:")[2].strip()
    return detail.split(" Please use")[0][:200] if detail.startswith("Unsupported") else None


def first_line(error: BaseException) -> str:
    """The error's message on one line (load_state_dict puts the useful part on line two)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (" ".join(lines[:2]) if lines else type(error).__name__)[:400]
