"""Runtime choices: attention kernel ranking, memory plans, compiled blocks, the run report's
runtime and peak lines, the background warm-up, and the speed flags."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import app
from engine.engine import Engine, EngineConfig
from engine.flux.denoiser import FluxDenoiser
from engine.flux.prompt import PromptEmbeddings
from engine.models.attention import AttentionChoice, choose_attention, rank_backends
from engine.models.manager import ModelConfig
from engine.models.memory import home_device, plan_memory, visiting
from engine.models.runtime import resolve_compile
from engine.recipe import ModelParams
from engine.stages.base import BaseStage
from engine.warmup import WARMUP_STEPS, warm_up_recipe

CUDA = torch.device("cuda")  # only named, never used: plans are pure functions of it
CPU = torch.device("cpu")


def test_backends_rank_fastest_first_skip_those_that_cannot_run_and_end_with_math():
    def cannot() -> None:
        raise RuntimeError("No available kernel")

    times = {"cudnn": 0.5, "flash": 0.9, "efficient": 1.6}
    candidates = {"cudnn": lambda: "cudnn", "broken": cannot, "flash": lambda: "flash"}
    candidates["efficient"] = lambda: "efficient"
    order, timings = rank_backends(candidates, lambda fn: times[fn()])
    assert order == ("cudnn", "flash", "efficient", "math")
    assert [name for name, _ in timings] == ["cudnn", "flash", "efficient"]
    choice = AttentionChoice(order, timings)
    assert choice.name == "cudnn"
    assert choice.describe() == (
        "attention: cudnn (cudnn 0.50 ms, flash 0.90 ms, efficient 1.60 ms)"
    )


def test_off_cuda_pytorch_keeps_its_own_choice():
    choice = choose_attention(CPU)
    assert choice == AttentionChoice() and choice.describe() == "attention: sdpa default"


class FlagSpy(torch.nn.Module):
    """A transformer stand-in that records which SDPA kernels were allowed during its call."""

    config = dataclasses.make_dataclass("Config", [("guidance_embeds", bool, False)])()

    def __init__(self) -> None:
        super().__init__()
        self.flash_allowed: list[bool] = []

    def forward(self, hidden_states, **_: object):
        self.flash_allowed.append(torch.backends.cuda.flash_sdp_enabled())
        return (hidden_states,)


def test_the_denoiser_calls_the_transformer_under_the_chosen_ranking():
    emb = PromptEmbeddings(tokens=torch.zeros(1, 4, 8), pooled=torch.zeros(1, 8))
    spy = FlagSpy()
    x, sigma = torch.zeros(1, 4, 64), torch.tensor(0.5)
    only_math = AttentionChoice(("math",))
    FluxDenoiser(spy, emb, torch.zeros(4, 3), 3.5, torch.float32, attention=only_math)(x, sigma)
    FluxDenoiser(spy, emb, torch.zeros(4, 3), 3.5, torch.float32)(x, sigma)
    assert spy.flash_allowed == [False, True]
    assert torch.backends.cuda.flash_sdp_enabled()  # restored after the call


@pytest.mark.parametrize(
    "requested, device, total_gb, mode, offload",
    [
        ("auto", CUDA, 24.0, "budget", True),  # a 24 GB card
        ("auto", CUDA, 16.0, "budget", True),
        ("auto", CUDA, 80.0, "resident", False),  # an H100
        ("auto", CPU, None, "resident", False),
        ("budget", CPU, None, "budget", False),  # one memory pool: nothing to move
        ("resident", CUDA, 16.0, "resident", False),
    ],
)
def test_memory_plans(requested, device, total_gb, mode, offload):
    plan = plan_memory(requested, device, total_gb)
    assert (plan.mode, plan.offload_text, plan.tiled_vae) == (mode, offload, offload)
    assert home_device(plan, device, "t5") == (CPU if offload else device)
    assert home_device(plan, device, "transformer") == device


def test_a_bad_memory_or_compile_choice_is_refused():
    with pytest.raises(ValueError, match="memory mode must be one of"):
        plan_memory("tiny", CPU)
    with pytest.raises(ValueError, match="compile must be one of"):
        resolve_compile("max", CPU)


def test_compile_is_automatic_on_cuda_only():
    assert resolve_compile("auto", CUDA) and not resolve_compile("auto", CPU)
    assert resolve_compile("on", CPU) and not resolve_compile("off", CUDA)


class MoveSpy(torch.nn.Linear):
    def __init__(self) -> None:
        super().__init__(2, 2)
        self.moves: list[str] = []

    def to(self, device):  # records instead of moving: no second device here
        self.moves.append(str(device))
        return self


def test_visiting_moves_modules_for_the_block_and_back_even_after_an_error():
    spy = MoveSpy()
    with visiting([spy], CPU):
        pass
    assert spy.moves == []  # already there
    with pytest.raises(KeyError), visiting([spy], torch.device("meta")):
        assert spy.moves == ["meta"]
        raise KeyError("encoder failed")
    assert spy.moves == ["meta", "cpu"]


def fp8_engine(tmp_path, mode: str) -> Engine:
    models = ModelConfig(tiny=True, device="cpu", fp8_compute=mode)
    return Engine(EngineConfig(models=models, outputs_dir=tmp_path, data_dir=tmp_path / "d"))


def test_the_run_report_names_the_runtime(tmp_path):
    engine = fp8_engine(tmp_path, "auto")  # fresh: a cached base would not sample again
    result = engine.run(engine.default_recipe(), save=False)
    runtime = [n for n in result.report.notes if n.startswith("Runtime on cpu")]
    assert runtime == [
        "Runtime on cpu: weights in the compute dtype · attention: sdpa default · "
        "eager blocks · memory: resident (every model stays on its device)"
    ]
    assert not any("GPU memory peak" in n for n in result.report.notes)  # no GPU here


def test_fp8_compute_is_reported_and_keyed_apart_from_fp8_storage(tmp_path):
    recipe = dataclasses.replace(
        fp8_engine(tmp_path, "on").default_recipe(),
        model=ModelParams(weight_dtype="fp8_e4m3fn"),
    )
    keys = {}
    for mode in ("on", "off"):
        engine = fp8_engine(tmp_path, mode)
        result = engine.run(recipe, save=False)
        words = "fp8 compute (scaled" if mode == "on" else "fp8 storage (weights cast"
        assert any(words in n for n in result.report.notes)
        params = BaseStage().select(recipe, _Scope(engine))
        keys[mode] = params.precision
    assert keys == {"on": "fp8-compute", "off": "fp8-storage"}


@dataclasses.dataclass
class _Scope:
    engine: Engine

    def flux_files(self):
        return self.engine.models.resolve(ModelParams(weight_dtype="fp8_e4m3fn"))

    def loras(self):
        return self.engine.models.loras()


def test_the_warm_up_renders_the_start_recipe_briefly_in_the_background(tmp_path):
    engine = fp8_engine(tmp_path, "auto")
    assert "Warm-up" not in engine.models_status()
    assert warm_up_recipe(engine.default_recipe()).settings.steps == WARMUP_STEPS
    engine.start_warm_up()
    engine.warmup.wait(120)
    assert engine.warmup.state == "ready", engine.warmup.detail
    assert "ran: text" in engine.warmup.detail and "base" in engine.warmup.detail
    assert "Warm-up: ready in" in engine.models_status()
    assert engine.models.load_counts()["transformer"] == 1
    engine.run(engine.default_recipe(), save=False)
    assert engine.models.load_counts()["transformer"] == 1  # the Generate found it warm


def test_without_weights_the_warm_up_says_so(tmp_path):
    models = ModelConfig(models_dir=tmp_path / "none", device="cpu")
    engine = Engine(EngineConfig(models=models, outputs_dir=tmp_path, data_dir=tmp_path / "d"))
    engine.start_warm_up()
    engine.warmup.wait(60)
    assert engine.warmup.state == "skipped"
    assert "Warm-up skipped: no Flux weights found" in engine.models_status()


def test_speed_flags_reach_the_model_config():
    args = app.parse_args(["--fp8-compute", "off", "--compile", "on", "--memory", "budget"])
    assert (args.fp8_compute, args.compile, args.memory, args.warmup) == (
        "off", "on", "budget", None
    )  # fmt: skip
    assert app.parse_args(["--no-warmup"]).warmup is False
    with pytest.raises(SystemExit):
        app.parse_args(["--memory", "huge"])
