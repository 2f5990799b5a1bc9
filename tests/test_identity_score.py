"""The identity score on every render with references (seed 002): the largest face against
the references' mean embedding, on the Refine tab's scale, in the report and the PNG; no
reference, nothing computed; a reference without a face, a clear message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine.errors import InputError
from engine.faces.identity import similarity
from engine.recipe_json import recipe_from_json
from engine.stages.identity_score import largest_face
from photos import astronaut, six_people
from photos import png_bytes as png
from tests.conftest import fresh_tiny_engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return fresh_tiny_engine(tmp_path_factory.mktemp("identity"))


def scored(photo: str, *references: str, **color: Any):
    document = {
        "source": {"kind": "image", "image": photo},
        "identity": {"references": list(references)},
        "color": {"enabled": bool(color), "tone": color},
    }
    return recipe_from_json(json.dumps(document))


def test_a_photo_scores_high_against_itself_and_lower_against_another_person(engine: Any):
    me = engine.store_image(png(astronaut()))
    others = engine.store_image(png(six_people()))
    result = engine.run(scored(me, me), save=False)
    assert result.report.ran_names[-1] == "identity_score"
    (score,) = result.report.identity
    assert score == pytest.approx(1.0, abs=1e-5)
    assert result.report.identity_backend
    assert any(n.startswith("Identity vs reference (") and "image 1 1.000" in n
               for n in result.report.notes)  # fmt: skip
    other = engine.run(scored(me, others), save=False)
    assert any("Identity reference 1 has 6 faces; the largest is used" in n
               for n in other.report.notes)  # fmt: skip
    # the same code the report uses: the encoder on the largest face of each photo
    models = engine.refine_models
    encoder = models.identity_encoder()
    mine, theirs = np.asarray(astronaut()), np.asarray(six_people())
    expected = similarity(
        encoder.embed(mine, largest_face(models, mine)),
        encoder.embed(theirs, largest_face(models, theirs)),
    )
    (low,) = other.report.identity
    assert low == pytest.approx(expected, abs=1e-5)
    assert low < encoder.same_person < score
    print(f"identity score ({encoder.label}): self {score:.3f}, another person {low:.3f}")


def test_a_colour_change_never_re_scores_and_the_png_carries_the_score(engine: Any, tmp_path):
    me = engine.store_image(png(astronaut()))
    engine.run(scored(me, me), save=False)
    regraded = engine.run(scored(me, me, contrast=1.2), outputs_dir=tmp_path)
    assert regraded.report.ran_names == ["color"]
    assert regraded.report.identity == pytest.approx([1.0], abs=1e-5)
    parameters = Image.open(regraded.saved[0]).info["parameters"]
    assert "Identity: 1.000 (" in parameters


def test_without_references_nothing_is_computed_or_shown(engine: Any) -> None:
    me = engine.store_image(png(astronaut()))
    result = engine.run(scored(me), save=False)
    assert "identity_score" not in result.report.ran_names
    assert result.report.identity == []
    assert not any(n.startswith("Identity vs reference") for n in result.report.notes)


def test_a_reference_without_a_face_is_a_clear_message(engine: Any) -> None:
    me = engine.store_image(png(astronaut()))
    wall = engine.store_image(png(Image.new("RGB", (128, 128), (120, 120, 120))))
    with pytest.raises(InputError, match="Identity reference 1 has no face"):
        engine.run(scored(me, wall), save=False)
    assert engine.run(scored(me, me), save=False).report.identity  # the engine goes on


def test_a_render_without_a_face_is_scored_as_no_face(engine: Any) -> None:
    me = engine.store_image(png(astronaut()))
    wall = engine.store_image(png(Image.new("RGB", (128, 128), (120, 120, 120))))
    result = engine.run(scored(wall, me), save=False)
    assert result.report.identity == [None]
    assert any("image 1 no face" in n for n in result.report.notes)


def test_reference_names_are_checked_like_every_image_name(tmp_path: Path) -> None:
    from engine.errors import RecipeError

    with pytest.raises(RecipeError, match=r"identity.references\[0\]"):
        recipe_from_json(json.dumps({"identity": {"references": ["../x.png"]}}))
