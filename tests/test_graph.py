"""The stage graph with stand-in stages: keys, lazy execution, cache, report, cancel."""

from dataclasses import dataclass

import pytest
import torch

from engine.cache import ArtifactCache
from engine.errors import Cancelled
from engine.graph import StageContext, StageGraph, stage_key
from engine.recipe import Recipe
from engine.recipe_json import set_path
from engine.runtypes import CancelToken, RunReport


@dataclass
class CountingStage:
    """A stage that records how often it ran and depends on one recipe path."""

    name: str
    path: str
    upstream: tuple[str, ...] = ()
    version: int = 1
    uses_models: bool = False
    runs: int = 0
    switch: str | None = None

    def inputs(self, recipe):
        return self.upstream

    def enabled(self, recipe):
        return True if self.switch is None else _get(recipe, self.switch)

    def select(self, recipe, env):
        return {"value": _get(recipe, self.path)}

    def run(self, ctx, params, upstream):
        self.runs += 1
        ctx.step(self.name, 1, 1)
        return torch.full((4,), float(self.runs)) + sum(v.sum() for v in upstream.values())


def _get(obj, path):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def make_graph(cache_bytes=10**6):
    stages = [
        CountingStage("text", "prompt.prompt"),
        CountingStage("base", "settings.seed", ("text",)),
        CountingStage("decode", "model.vae", ("base",)),
        CountingStage("color", "color.tone.contrast", ("decode",), switch="color.enabled"),
    ]
    return StageGraph(stages, ArtifactCache(cache_bytes)), {s.name: s for s in stages}


def run(graph, recipe, cancel=None):
    report = RunReport()
    graph.run(recipe, None, StageContext(None, report, None, cancel), "color")
    return report


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("color.tone.contrast", 1.3, ["color"]),
        ("settings.seed", 7, ["base", "decode", "color"]),
        ("prompt.prompt", "another", ["text", "base", "decode", "color"]),
        ("model.vae", "other.safetensors", ["decode", "color"]),
        ("latent.denoise", 0.5, []),
    ],
)
def test_a_change_reruns_exactly_the_stages_downstream(path, value, expected):
    graph, _ = make_graph()
    recipe = Recipe()
    run(graph, recipe)
    report = run(graph, set_path(recipe, path, value))
    assert report.ran_names == expected
    assert set(report.cached) == {"text", "base", "decode", "color"} - set(expected)


def test_identical_recipe_runs_nothing_and_report_line():
    graph, stages = make_graph()
    first = run(graph, Recipe())
    assert first.ran_names == ["text", "base", "decode", "color"]
    again = run(graph, Recipe())
    assert again.ran_names == []
    assert again.line().startswith("ran: nothing · cached: ")
    assert all(s.runs == 1 for s in stages.values())


def test_line_format():
    report = RunReport(ran=[("color", 12.4)], cached=["text", "base", "decode"])
    assert report.line() == "ran: color 12 ms · cached: text, base, decode"


def test_disabled_stage_passes_its_input_through():
    graph, stages = make_graph()
    recipe = set_path(Recipe(), "color.enabled", False)
    report = RunReport()
    out = graph.run(recipe, None, StageContext(None, report), "color")
    assert report.off == ["color"] and stages["color"].runs == 0
    assert torch.equal(out["__final__"], out["decode"])


def test_keys_change_with_version_params_and_upstream():
    stage = CountingStage("x", "settings.seed")
    key = stage_key(stage, {"a": 1}, ["u"])
    assert key == stage_key(stage, {"a": 1}, ["u"])
    assert key != stage_key(stage, {"a": 2}, ["u"])
    assert key != stage_key(stage, {"a": 1}, ["v"])
    stage.version = 2
    assert key != stage_key(stage, {"a": 1}, ["u"])


def test_unhashable_params_are_an_error_not_a_miss():
    with pytest.raises(TypeError, match="cannot be hashed"):
        stage_key(CountingStage("x", "p"), {"t": torch.zeros(1)}, [])


def test_evicted_artifacts_are_recomputed():
    graph, stages = make_graph(cache_bytes=40)  # room for two 16-byte artifacts
    run(graph, Recipe())
    report = run(graph, set_path(Recipe(), "color.tone.contrast", 1.3))
    assert report.ran_names == ["color"]  # decode is among the most recent
    report = run(graph, set_path(Recipe(), "settings.seed", 3))
    assert "text" in report.ran_names  # text was evicted long ago
    assert graph.cache.stats.evictions > 0


def test_cancel_stops_between_steps():
    graph, _ = make_graph()
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        run(graph, Recipe(), cancel=token)


def test_cache_is_byte_bounded_lru():
    cache = ArtifactCache(max_bytes=100)
    cache.put("a", torch.zeros(10))  # 40 bytes
    cache.put("b", torch.zeros(10))
    assert cache.get("a") is not None  # a becomes most recent
    cache.put("c", torch.zeros(10))  # evicts b
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.used_bytes == 80
    cache.put("huge", torch.zeros(1000))  # larger than the budget: not kept
    assert "huge" not in cache and len(cache) == 2
