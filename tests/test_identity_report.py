"""`identity-report` (seed 002): the four configurations on the tiny engine, their figures
equal to numpy's on the engine's own scores, skipped configurations saying why, and the JSON
line at the end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.cli import build_parser
from engine.identity.control_image import PosePerson, draw_pose
from engine.identity_report import (
    CONFIGS,
    DEFAULT_PROMPTS,
    Outcome,
    parse_lora,
    read_prompts,
    summarize,
    table,
)
from engine.identity_report import main as identity_report
from photos import astronaut
from tests.conftest import SKIN

SCORES = (0.61, None, 0.72, 0.35, 0.9, None, 0.55)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("identity_report")
    face, pose, prompts = folder / "face.png", folder / "pose.png", folder / "prompts.txt"
    astronaut().save(face)
    points = [(32.0, 10.0 + 4 * i) if i < 14 else None for i in range(18)]
    draw_pose([PosePerson(tuple(points))], 64, 64).save(pose)
    prompts.write_text("# two of seed 002's kind\nportrait of a man\nfull-body: a man on a hill\n")
    return {"face": face, "pose": pose, "prompts": prompts, "out": folder / "out"}


def report(engine: Any, capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    args = build_parser().parse_args(["identity-report", "--tiny", *argv])
    code = identity_report(engine, args)
    return code, capsys.readouterr().out


def expected(scores: list[float | None]) -> tuple[float, float, float] | None:
    found = np.array([s for s in scores if s is not None], dtype=float)
    return (found.mean(), np.median(found), found.std()) if found.size else None


def table_rows(text: str) -> dict[str, list[str]]:
    """The table's rows by configuration name (names are the text before two spaces)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Configuration"))
    rows = {}
    for line in lines[start + 1 : -1]:
        name, _, figures = line.partition("  ")
        rows[name.strip()] = figures.split()
    return rows


def test_the_statistics_are_numpys_and_the_std_is_the_population_one() -> None:
    stats = summarize(SCORES)
    mean, median, std = expected(list(SCORES)) or (0, 0, 0)
    assert (stats.mean, stats.median, stats.std) == pytest.approx((mean, median, std))
    assert stats.no_face_rate == pytest.approx(2 / 7) and stats.n == 7
    assert summarize([None, None]).mean is None and summarize([None]).no_face_rate == 1.0


def test_the_table_prints_numpys_figures() -> None:
    outcomes = [Outcome(CONFIGS[0], SCORES), Outcome(CONFIGS[1], skipped="no --lora given")]
    rows = table_rows(table(outcomes) + "\n{}")
    mean, median, std = expected(list(SCORES)) or (0, 0, 0)
    assert rows == {"base Flux": [f"{mean:.3f}", f"{median:.3f}", f"{std:.3f}", "28.6", "%", "7"]}


def test_prompt_files_lora_flags_and_the_default_list() -> None:
    assert len(DEFAULT_PROMPTS) == 9 and sum(p.full_body for p in DEFAULT_PROMPTS) == 3
    assert parse_lora("me.safetensors:0.8") == ("me.safetensors", 0.8)
    assert parse_lora("sub/me.safetensors") == ("sub/me.safetensors", 1.0)


def test_all_four_configurations_run_and_match_numpy(
    tiny_engine: Any, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = report(tiny_engine, capsys, [
        "--reference", str(files["face"]), "--prompts", str(files["prompts"]),
        "--lora", f"{SKIN}:0.8", "--pose", str(files["pose"]), "--outputs", str(files["out"]),
    ])  # fmt: skip
    assert code == 0 and "skipped" not in out
    line = json.loads(out.splitlines()[-1])
    assert line["ok"] and line["std"] == "population" and line["prompts"] == 2
    rows = table_rows(out)
    assert list(rows) == [c.name for c in CONFIGS]
    for entry in line["configurations"]:
        scores, n = entry["scores"], entry["n"]
        assert n == len(scores) == 2
        rate = sum(s is None for s in scores) / n
        assert entry["no_face_rate"] == pytest.approx(rate)
        figures = expected(scores)
        shown = rows[entry["configuration"]]
        assert shown[-3:] == [f"{100 * rate:.1f}", "%", "2"]
        if figures is None:
            assert shown[:3] == ["—"] * 3 and entry["mean"] is None
        else:
            assert shown[:3] == [f"{v:.3f}" for v in figures]
            assert [entry["mean"], entry["median"], entry["std"]] == pytest.approx(figures)
    assert len(list(files["out"].rglob("*.png"))) == 8


def test_missing_pieces_skip_their_configurations_with_the_reason(
    tiny_engine: Any, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--reference", str(files["face"]), "--prompts", str(files["prompts"])]
    code, out = report(tiny_engine, capsys, [*base, "--lora", "missing.safetensors"])
    assert code == 0
    assert "skipped + LoRA: The LoRA 'missing.safetensors' was not found" in out
    assert "skipped + LoRA + PuLID + CN: no --pose picture given" in out
    line = json.loads(out.splitlines()[-1])
    skipped = {c["configuration"]: c.get("skipped") for c in line["configurations"]}
    assert skipped["base Flux"] is None and skipped["+ LoRA + PuLID"].startswith("The LoRA")
    code, out = report(tiny_engine, capsys, base)
    assert out.count(": no --lora given\n") == 3 and list(table_rows(out)) == ["base Flux"]


def test_a_reference_without_a_face_skips_every_configuration(
    tiny_engine: Any, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = report(tiny_engine, capsys, [
        "--reference", str(files["pose"]), "--prompts", str(files["prompts"]),
    ])  # fmt: skip
    assert code == 1 and "skipped base Flux: Identity reference 1 has no face" in out
    assert json.loads(out.splitlines()[-1])["ok"] is False


def test_an_unreadable_reference_is_one_json_error(
    tiny_engine: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = report(tiny_engine, capsys, ["--reference", str(tmp_path / "none.png")])
    assert code == 1 and "cannot be read" in json.loads(out.splitlines()[-1])["error"]


def test_read_prompts_marks_full_body(files: dict[str, Path]) -> None:
    prompts = read_prompts(files["prompts"])
    assert [(p.text, p.full_body) for p in prompts] == [
        ("portrait of a man", False),
        ("a man on a hill", True),
    ]
