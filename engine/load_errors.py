"""Reading the errors torch and the model libraries raise while loading a file, for messages
that say what is wrong in one line."""

from __future__ import annotations

import re


def refused_by_unpickler(error: BaseException) -> str | None:
    """What torch's weights-only unpickler refused ("Unsupported global: GLOBAL io.open ...",
    or for a blocked module "Trying to load unsupported GLOBAL posix.system whose module posix
    is blocked"), or None when the error is of another kind (a damaged file)."""
    text = str(error)
    detail = text.partition("WeightsUnpickler error:")[2].strip()
    if detail.startswith("Unsupported"):
        return detail.split(" Please use")[0][:200]
    blocked = re.search(r"unsupported GLOBAL (\S+)", text, flags=re.IGNORECASE)
    return f"Unsupported global: GLOBAL {blocked.group(1)}" if blocked else None


def first_line(error: BaseException) -> str:
    """The error's message on one line (load_state_dict puts the useful part on line two)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (" ".join(lines[:2]) if lines else type(error).__name__)[:400]
