"""PuLID on the base pass, on the tiny Flux with tiny random PuLID and face models: the ID
tokens computed once per reference set, the hooks on only while the base pass samples, the
weight and window in the base key only."""

from __future__ import annotations

import json
from typing import Any

import pytest
from PIL import Image

from engine.errors import InputError
from engine.recipe_json import recipe_from_json
from photos import astronaut
from photos import png_bytes as png
from tests.conftest import fresh_tiny_engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return fresh_tiny_engine(tmp_path_factory.mktemp("pulid"))


def render(references: list[str], **pulid: Any):
    document = {
        "prompt": {"width": 64, "height": 64},
        "settings": {"steps": 3},
        "identity": {"references": references, "pulid": pulid},
        "color": {"enabled": False},
    }
    return recipe_from_json(json.dumps(document))


def test_pulid_changes_the_render_and_its_tokens_stay_cached(engine: Any) -> None:
    me = engine.store_image(png(astronaut()))
    plain = engine.run(render([me]), save=False)
    assert "identity_embed" not in plain.report.ran_names
    on = engine.run(render([me], enabled=True, weight=1.0, start=0.0, end=1.0), save=False)
    assert on.report.ran_names[:2] == ["identity_embed", "base"]
    assert on.images[0].tobytes() != plain.images[0].tobytes()
    lighter = engine.run(render([me], enabled=True, weight=0.5, start=0.0, end=1.0), save=False)
    assert "identity_embed" in lighter.report.cached and "base" in lighter.report.ran_names
    transformer = engine.models.flux(render([]).model).transformer
    assert not transformer._forward_pre_hooks  # the hooks are off after the pass
    assert all(not block._forward_hooks for block in transformer.transformer_blocks)


def test_weight_zero_or_an_empty_window_is_the_plain_render(engine: Any) -> None:
    me = engine.store_image(png(astronaut()))
    plain = engine.run(render([me]), save=False)
    zero = engine.run(render([me], enabled=True, weight=0.0), save=False)
    assert zero.images[0].tobytes() == plain.images[0].tobytes()
    closed = engine.run(render([me], enabled=True, weight=1.0, start=1.0, end=1.0), save=False)
    assert closed.images[0].tobytes() == plain.images[0].tobytes()


def test_a_reference_without_a_face_is_a_clear_message(engine: Any) -> None:
    wall = engine.store_image(png(Image.new("RGB", (128, 128), (120, 120, 120))))
    with pytest.raises(InputError):
        engine.run(render([wall], enabled=True, weight=1.0), save=False)
    me = engine.store_image(png(astronaut()))
    assert engine.run(render([me], enabled=True, weight=1.0), save=False).images
