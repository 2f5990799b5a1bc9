"""`render --ray`: a batch on a local Ray cluster (2 CPU actors, tiny models) gives the same
PNGs and JSON lines as the same batch without Ray, keeps colour variants on their parent's
actor, reports a bad recipe and goes on, and loses no recipe when an actor is killed."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("ray")

from engine.batch.flags import LOCAL, with_ray_address  # noqa: E402
from engine.batch.grouping import Job, group_jobs, group_key, next_group  # noqa: E402
from engine.cli import build_parser, main  # noqa: E402
from engine.recipe_json import recipe_from_dict  # noqa: E402

pytestmark = pytest.mark.timeout(400)  # one local cluster and three actor start-ups
ROOT = Path(__file__).resolve().parent.parent
SMALL = {"width": 64, "height": 64}
RECIPES = {
    "r1.json": {"prompt": {"prompt": "a portrait", **SMALL}, "settings": {"steps": 2, "seed": 1}},
    # r1 with another grade: the colour stage only, on r1's actor
    "r1_contrast.json": {
        "prompt": {"prompt": "a portrait", **SMALL},
        "settings": {"steps": 2, "seed": 1},
        "color": {"tone": {"contrast": 1.4}, "grain": {"enabled": True, "seed": 3}},
    },
    "r2.json": {"prompt": {"prompt": "a face", **SMALL}, "settings": {"steps": 2, "seed": 2}},
    "r3.json": {"prompt": {"prompt": "a profile", **SMALL}, "settings": {"steps": 4, "seed": 3}},
    # an upload this studio never stored: the actor's engine refuses it
    "bad.json": {"source": {"kind": "image", "image": "sha256:" + "0" * 64}},
}
# Without --ray, in a fresh interpreter: the same renders, and Ray never imported.
PLAIN = """import sys
from engine.cli import main
code = main(sys.argv[1:])
loaded = [m for m in sys.modules if m == "ray" or m.startswith("ray.")]
print("RAY MODULES", loaded, file=sys.stderr)
sys.exit(3 if loaded else code)
"""


@dataclass
class Batch:
    code: int
    lines: dict[str, dict]  # recipe file name -> its JSON line
    stderr: str


@dataclass
class Runs:
    plain: Batch
    ray: Batch
    killed: dict[str, str]  # the actor killed mid-batch and the recipe it was rendering


def by_name(stdout: str) -> dict[str, dict]:
    lines = [json.loads(text) for text in stdout.splitlines() if text.startswith("{")]
    return {Path(line["recipe"]).name: line for line in lines}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("ray_batch")
    paths = []
    for name, recipe in RECIPES.items():
        (root / name).write_text(json.dumps(recipe))
        paths.append(str(root / name))
    common = ["--tiny", "--device", "cpu", "--data", str(root / "data")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    plain_args = ["render", *paths, *common, "--outputs", str(root / "plain")]
    # The plain batch runs in another process while the cluster starts here.
    plain = subprocess.Popen(
        [sys.executable, "-c", PLAIN, *plain_args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    ray_argv = ["render", "--ray", *paths, *common, "--outputs", str(root / "ray")]
    args = build_parser().parse_args(with_ray_address([*ray_argv, "--actors", "2"]))
    killed: dict[str, str] = {}

    def kill_once(slot, job, line) -> None:  # noqa: ANN001
        """Kill an actor while it renders a recipe of a later group (not r1's group)."""
        import ray

        if killed or slot.in_flight is None or slot.in_flight[1].path.name.startswith("r1"):
            return
        killed.update(actor=slot.name, recipe=slot.in_flight[1].path.name)
        ray.kill(slot.actor)

    from engine.batch.driver import render_batch

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = render_batch(args, after=kill_once)
    plain_out, plain_err = plain.communicate(timeout=300)
    return Runs(
        Batch(plain.returncode, by_name(plain_out), plain_err),
        Batch(code, by_name(out.getvalue()), err.getvalue()),
        killed,
    )


def test_every_recipe_comes_back_once_and_the_exit_code_says_one_failed(runs: Runs) -> None:
    assert "RAY MODULES []" in runs.plain.stderr, runs.plain.stderr
    for batch in (runs.plain, runs.ray):
        assert batch.code == 1, batch.stderr  # bad.json failed, the others did not
        assert set(batch.lines) == set(RECIPES), batch.stderr
    assert "[5/5]" in runs.ray.stderr, runs.ray.stderr
    assert "2 CPU (1 CPU each) actors" in runs.ray.stderr, runs.ray.stderr


def test_the_pngs_are_byte_identical_to_a_render_without_ray(runs: Runs) -> None:
    for name in RECIPES:
        plain, ray_line = runs.plain.lines[name], runs.ray.lines[name]
        if name == "bad.json":
            continue
        assert plain["ok"] and ray_line["ok"], (plain, ray_line)
        assert len(plain["saved"]) == len(ray_line["saved"]) == 1
        a, b = Path(plain["saved"][0]), Path(ray_line["saved"][0])
        assert a.parent != b.parent and a.read_bytes() == b.read_bytes(), name
        # the same JSON line, plus which actor rendered it
        assert set(ray_line) - set(plain) <= {"actor", "retried"}


def test_a_colour_variant_runs_only_colour_on_its_parents_actor(runs: Runs) -> None:
    parent, variant = runs.ray.lines["r1.json"], runs.ray.lines["r1_contrast.json"]
    assert [stage["stage"] for stage in variant["report"]["ran"]] == ["color"], variant["line"]
    assert {"text", "base", "decode"} <= set(variant["report"]["cached"])
    assert variant["actor"] == parent["actor"]
    assert "base" in [stage["stage"] for stage in parent["report"]["ran"]]


def test_a_bad_recipe_gets_its_error_line_and_the_batch_goes_on(runs: Runs) -> None:
    plain, ray_line = runs.plain.lines["bad.json"], runs.ray.lines["bad.json"]
    assert not ray_line["ok"] and ray_line["error"] == plain["error"]
    assert "not in this studio's image store" in ray_line["error"]
    assert f"{ray_line['recipe']}: {ray_line['error']}" in runs.ray.stderr
    assert sum(line["ok"] for line in runs.ray.lines.values()) == len(RECIPES) - 1


def test_a_killed_actor_is_replaced_and_its_recipe_retried(runs: Runs) -> None:
    assert runs.killed, "no actor was killed mid-batch"
    retried = [line for line in runs.ray.lines.values() if line.get("retried")]
    assert [line["retried"] for line in retried] == [1], runs.ray.lines
    # the retry ran on a new actor (actor-3), never on the one that was killed
    assert retried[0]["actor"] not in ("actor-1", "actor-2")
    assert Path(retried[0]["recipe"]).name == runs.killed["recipe"]


def test_ray_address_parsing() -> None:
    parse = build_parser().parse_args
    assert parse(with_ray_address(["render", "--ray", "a.json", "b.png"])).ray == LOCAL
    args = parse(with_ray_address(["render", "--ray", "a.json"]))
    assert args.ray == LOCAL and [p.name for p in args.recipes] == ["a.json"]
    assert parse(with_ray_address(["render", "a.json", "--ray"])).ray == LOCAL
    assert parse(with_ray_address(["render", "--ray", "--tiny", "a.json"])).ray == LOCAL
    args = parse(with_ray_address(["render", "--ray", "10.0.0.5:6379", "a.json"]))
    assert args.ray == "10.0.0.5:6379" and len(args.recipes) == 1
    assert parse(["render", "a.json"]).ray is None


def test_the_cli_hands_a_ray_render_to_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.batch.driver as driver

    seen = []
    monkeypatch.setattr(driver, "render_batch", lambda args: seen.append(args) or 0)
    assert main(["render", "--ray", "a.json", "--tiny", "--actors", "3"]) == 0
    assert seen[0].ray == LOCAL and seen[0].actors == 3 and seen[0].recipes == [Path("a.json")]


def test_without_ray_installed_the_cli_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    monkeypatch.delitem(sys.modules, "engine.batch.driver", raising=False)
    assert main(["render", "--ray", "a.json", "--tiny"]) == 2
    assert "pip install -r requirements-ray.txt -c requirements.txt" in capsys.readouterr().err


def test_grouping_keeps_finishing_variants_together_and_prefers_a_warm_prompt() -> None:
    def job(i: int, **sections: dict) -> Job:
        return Job(i, Path(f"{i}.json"), recipe_from_dict(sections))

    base = {"prompt": {"prompt": "a"}}
    jobs = [
        job(0, **base),
        job(1, prompt={"prompt": "b"}),
        job(2, **base, color={"tone": {"contrast": 1.5}}),
        job(3, **base, upscale={"enabled": True}),
        job(4, **base, settings={"seed": 9}),
    ]
    assert group_key(jobs[0].recipe) == group_key(jobs[2].recipe) == group_key(jobs[3].recipe)
    groups = group_jobs(jobs)
    assert [[j.index for j in g.jobs] for g in groups] == [[0, 2, 3], [1], [4]]
    # an actor that rendered prompt "a" takes seed 9's group of "a" before prompt "b"
    queue = groups[1:]
    assert next_group(queue, {groups[0].prompt_key}) is groups[2]
    assert next_group(queue, set()) is groups[1] and next_group(queue, set()) is None


def test_an_upload_travels_with_its_recipe_to_an_actor_elsewhere(tmp_path: Path) -> None:
    """An actor on another machine has its own data folder: the driver sends the uploads."""
    from PIL import Image

    from engine.batch.worker import RenderWorker, engine_flags, referenced_images
    from engine.images import ImageStore

    picture = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 120, 90)).save(picture, format="PNG")
    digest = ImageStore(tmp_path / "here" / "images").put(picture.getvalue())
    recipe = recipe_from_dict({"source": {"kind": "image", "image": digest}})
    uploads = referenced_images(recipe, tmp_path / "here")
    assert list(uploads) == [digest]

    def worker(data: str) -> RenderWorker:
        args = build_parser().parse_args(["render", "x.json", "--tiny", "--data", data])
        return RenderWorker(engine_flags(args), "w")

    sent = worker(str(tmp_path / "there")).render(recipe, uploads)
    assert sent.ok and sent.images[0].size == (32, 32), sent.error
    missing = worker(str(tmp_path / "elsewhere")).render(recipe, {})
    assert not missing.ok and "not in this studio's image store" in missing.error
