"""One row of the bindings table (studio/bindings.py): a recipe field and how it is shown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Binding:
    """One row of the table: a recipe field, its label and help, and how it is shown.

    `widget` is "" (chosen from the field: slider for a bounded number, dropdown for a
    choice, checkbox for a bool, textbox for a string), or "number", "radio", "textbox",
    or "switch": a checkbox over a choice field, ticked for the id `on`, else `off`.
    """

    path: str
    label: str
    info: str = ""
    widget: str = ""
    lines: int = 1
    on: str = ""
    off: str = ""
    labels: tuple[tuple[str, str], ...] = ()  # (shown label, choice id) for radios/dropdowns

    def to_component(self, value: Any) -> Any:
        """The component value that shows a recipe value."""
        return value == self.on if self.widget == "switch" else value

    def from_component(self, value: Any) -> Any:
        """The recipe value for a component value."""
        if self.widget == "switch":
            return self.on if value else self.off
        return value
