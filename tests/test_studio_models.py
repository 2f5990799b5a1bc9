"""The Settings tab's "Model files" panel shows what `engine models` prints."""

from __future__ import annotations

from typing import Any

import studio


def test_the_model_files_panel_shows_the_engines_diagnosis(tiny_engine: Any) -> None:
    demo = studio.build_ui(tiny_engine)
    blocks = list(demo.blocks.values())
    (panel,) = [b for b in blocks if getattr(b, "elem_id", None) == "ps-model-files"]
    texts = [b.value for b in blocks if isinstance(getattr(b, "value", None), str)]
    assert panel.label == "Model files"
    assert any(tiny_engine.models_status() == text for text in texts)
    assert any("Demo mode" in text for text in texts)
