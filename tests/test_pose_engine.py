"""The pose ControlNet on the base pass, on the tiny Flux and the tiny union ControlNet: a
pose picture changes the render, strength 0 or an empty window is the plain render, and the
pose settings are in the base pass's key only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.errors import InputError
from engine.identity.control_image import PosePerson, draw_pose
from engine.recipe_json import recipe_from_json
from photos import png_bytes as png
from tests.conftest import fresh_tiny_engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return fresh_tiny_engine(tmp_path_factory.mktemp("pose"))


@pytest.fixture(scope="module")
def pose(engine: Any) -> str:
    points = [(32.0, 10.0 + 4 * i) if i < 14 else None for i in range(18)]
    return engine.store_image(png(draw_pose([PosePerson(tuple(points))], 64, 64)))


def render(**pose: Any):
    document = {
        "prompt": {"width": 64, "height": 64},
        "settings": {"steps": 4},
        "identity": {"pose": pose},
        "color": {"enabled": False},
    }
    return recipe_from_json(json.dumps(document))


def test_a_pose_changes_the_render_and_strength_zero_does_not(engine: Any, pose: str) -> None:
    plain = engine.run(render(), save=False)
    posed = engine.run(render(enabled=True, image=pose, strength=1.0, end=1.0), save=False)
    assert "base" in posed.report.ran_names
    assert posed.images[0].tobytes() != plain.images[0].tobytes()
    zero = engine.run(render(enabled=True, image=pose, strength=0.0), save=False)
    assert zero.images[0].tobytes() == plain.images[0].tobytes()
    assert "base" in zero.report.cached  # strength 0: the plain render's key


def test_outside_its_window_the_controlnet_is_never_called(engine: Any, pose: str) -> None:
    plain = engine.run(render(), save=False)
    calls = []
    controlnet = engine.identity_models.controlnet()
    hook = controlnet.register_forward_hook(lambda *args: calls.append(1))
    try:
        late = engine.run(
            render(enabled=True, image=pose, strength=1.0, start=1.0, end=1.0), save=False
        )
        assert calls == []
        assert late.images[0].tobytes() == plain.images[0].tobytes()
        engine.run(render(enabled=True, image=pose, strength=1.0, start=0.0, end=0.5), save=False)
        assert len(calls) == 2  # steps 0 and 1 of 4 (diffusers' window rule)
    finally:
        hook.remove()


def test_a_pose_picture_that_is_not_stored_is_a_clear_message(engine: Any) -> None:
    with pytest.raises(InputError, match="not in this studio's image store"):
        engine.run(render(enabled=True, image="sha256:" + "0" * 64), save=False)
