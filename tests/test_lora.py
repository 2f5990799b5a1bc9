"""LoRA stack on tiny models: every key layout, exact base output, no re-reads, fp8 storage.

Each test file is built in code together with the weight updates it stands for, so a load
is checked against the model with W + strength * up @ down merged in by hand.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.errors import InputError
from engine.lora import LORA_LIBRARY, TURBO_LORA, LoraStack, library_match, strength_warning
from engine.models.manager import FluxBundle, ModelConfig, ModelManager
from engine.models.tiny import build_tiny_clip, build_tiny_transformer
from engine.recipe import LoraSlot, ModelParams

RANK = 4
D, MLP = 32, 128  # tiny transformer width and MLP width; CLIP hidden 32, MLP 64
QKV = ("to_q", "to_k", "to_v")
ADD_QKV = ("add_q_proj", "add_k_proj", "add_v_proj")
S0, B0 = "single_transformer_blocks.0", "transformer_blocks.0"
# peft says so whenever a second adapter joins the first: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config`:UserWarning")


@dataclass
class LoraFile:
    """Tensors of one file and the updates it means: (part, module) -> delta (out, in)."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    deltas: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    seed: int = 0

    def _rand(self, *shape: int) -> torch.Tensor:
        self.seed += 1
        return torch.randn(*shape, generator=torch.Generator().manual_seed(self.seed)) * 0.2

    def layer(self, keys: tuple[str, str], targets, fan_in: int, alpha=None, alpha_key=None):
        """One down/up pair split over `targets` [(part, module, out_features), ...]."""
        down = self._rand(RANK, fan_in)
        up = self._rand(sum(t[2] for t in targets), RANK)
        self.tensors[keys[0]], self.tensors[keys[1]] = down, up
        if alpha is not None:
            self.tensors[alpha_key] = torch.tensor(float(alpha))
        scale = (alpha / RANK) if alpha is not None else 1.0
        for (part, module, _), chunk in zip(
            targets, up.split([t[2] for t in targets]), strict=True
        ):
            self.deltas[(part, module)] = scale * chunk @ down

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(self.tensors, str(path), metadata=self.metadata or None)
        return path

    @property
    def layers(self) -> int:
        return len({k.rsplit(".", 2)[0] for k in self.tensors if not k.endswith("alpha")})


def tr(module: str, out: int = D) -> tuple[str, str, int]:
    return ("transformer", module, out)


def kohya(name: str, targets, fan_in: int, f: LoraFile, alpha=None) -> None:
    keys = (f"{name}.lora_down.weight", f"{name}.lora_up.weight")
    f.layer(keys, targets, fan_in, alpha, f"{name}.alpha")


def build_peft(prefix: str = "transformer.") -> LoraFile:
    f = LoraFile()
    for module, fan_in, out in [
        (f"{B0}.attn.to_q", D, D),
        (f"{B0}.attn.add_k_proj", D, D),
        (f"{B0}.ff.net.2", MLP, D),
        (f"{S0}.proj_out", D + MLP, D),
        ("x_embedder", 64, D),
    ]:
        keys = (f"{prefix}{module}.lora_A.weight", f"{prefix}{module}.lora_B.weight")
        f.layer(keys, [tr(module, out)], fan_in)
    if prefix:  # a CLIP-L layer in the old `text_model.` spelling, alpha in its own key
        name = "text_encoder.text_model.encoder.layers.0.self_attn.k_proj"
        keys = (f"{name}.lora_A.weight", f"{name}.lora_B.weight")
        f.layer(keys, [("text", "encoder.layers.0.self_attn.k_proj", D)], D, 2, f"{name}.alpha")
    return f


def build_kohya() -> LoraFile:
    f = LoraFile()
    kohya("lora_unet_double_blocks_0_img_attn_qkv", [tr(f"{B0}.attn.{m}") for m in QKV], D, f, 2)
    kohya("lora_unet_double_blocks_0_txt_attn_proj", [tr(f"{B0}.attn.to_add_out")], D, f)
    kohya("lora_unet_double_blocks_0_img_mlp_0", [tr(f"{B0}.ff.net.0.proj", MLP)], D, f, 8)
    linear1 = [tr(f"{S0}.attn.{m}") for m in QKV] + [tr(f"{S0}.proj_mlp", MLP)]
    kohya("lora_unet_single_blocks_0_linear1", linear1, D, f, 2)
    kohya("lora_unet_single_blocks_0_linear2", [tr(f"{S0}.proj_out")], D + MLP, f)
    kohya("lora_unet_img_in", [tr("x_embedder")], 64, f)
    kohya("lora_unet_final_layer_linear", [tr("proj_out", 64)], D, f)
    te = "lora_te1_text_model_encoder_layers_"
    kohya(f"{te}0_self_attn_q_proj", [("text", "encoder.layers.0.self_attn.q_proj", D)], D, f, 2)
    kohya(f"{te}1_mlp_fc1", [("text", "encoder.layers.1.mlp.fc1", 64)], D, f)
    return f


def build_comfyui(down: str = "lora_A", up: str = "lora_B") -> LoraFile:
    f = LoraFile()

    def layer(name, targets, fan_in, alpha=None):
        base = f"diffusion_model.{name}"
        keys = (f"{base}.{down}.weight", f"{base}.{up}.weight")
        f.layer(keys, targets, fan_in, alpha, f"{base}.alpha")

    layer("double_blocks.0.txt_attn.qkv", [tr(f"{B0}.attn.{m}") for m in ADD_QKV], D, 2)
    layer("double_blocks.0.img_attn.proj", [tr(f"{B0}.attn.to_out.0")], D)
    layer("double_blocks.0.txt_mlp.2", [tr(f"{B0}.ff_context.net.2")], MLP)
    linear1 = [tr(f"{S0}.attn.{m}") for m in QKV] + [tr(f"{S0}.proj_mlp", MLP)]
    layer("single_blocks.0.linear1", linear1, D)
    layer("transformer_blocks.0.attn.to_k", [tr(f"{B0}.attn.to_k")], D)  # diffusers names
    return f


def build_xlabs() -> LoraFile:
    f = LoraFile()
    for name, targets in [
        ("qkv_lora1", [tr(f"{B0}.attn.{m}") for m in QKV]),
        ("proj_lora1", [tr(f"{B0}.attn.to_out.0")]),
        ("qkv_lora2", [tr(f"{B0}.attn.{m}") for m in ADD_QKV]),
        ("proj_lora2", [tr(f"{B0}.attn.to_add_out")]),
    ]:
        key = f"double_blocks.0.processor.{name}"
        f.layer((f"{key}.down.weight", f"{key}.up.weight"), targets, D)
    return f


def build_peft_alpha_in_metadata() -> LoraFile:
    """diffusers writes lora_alpha into the file's metadata; an `.alpha` key still wins."""
    f = build_peft()
    config = {"transformer.r": RANK, "transformer.lora_alpha": 2 * RANK}
    f.metadata = {"lora_adapter_metadata": json.dumps(config)}
    f.deltas = {k: v * 2 if k[0] == "transformer" else v for k, v in f.deltas.items()}
    return f


BUILDERS = {
    "peft": (build_peft, "peft"),
    "peft_alpha_in_metadata": (build_peft_alpha_in_metadata, "peft"),
    "peft_unprefixed": (lambda: build_peft(prefix=""), "peft"),
    "kohya": (build_kohya, "kohya"),
    "comfyui": (build_comfyui, "comfyui"),
    "comfyui_down_up": (lambda: build_comfyui("lora_down", "lora_up"), "comfyui"),
    "xlabs": (build_xlabs, "xlabs"),
}


@pytest.fixture
def loras(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "loras"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def bundle() -> FluxBundle:
    """A fresh warm bundle per test: adapters never leak between tests."""
    return ModelManager(ModelConfig(tiny=True)).flux(ModelParams())


def inputs() -> dict:
    g = torch.Generator().manual_seed(7)
    return {
        "hidden_states": torch.randn(1, 16, 64, generator=g),
        "encoder_hidden_states": torch.randn(1, 8, 32, generator=g),
        "pooled_projections": torch.randn(1, 32, generator=g),
        "timestep": torch.tensor([0.6]),
        "guidance": torch.tensor([3.5]),
        "img_ids": torch.zeros(16, 3),
        "txt_ids": torch.zeros(8, 3),
        "return_dict": False,
    }


@torch.inference_mode()
def run_transformer(model) -> torch.Tensor:
    return model(**inputs())[0]


@torch.inference_mode()
def run_clip(bundle_or_clip) -> torch.Tensor:
    clip = getattr(bundle_or_clip, "clip", bundle_or_clip)
    ids = torch.arange(3, 80).remainder(clip.config.vocab_size - 2).unsqueeze(0)
    ids[0, -1] = clip.config.eos_token_id
    return clip(ids).last_hidden_state


def merged(files: list[tuple[LoraFile, float, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs of fresh tiny models with strength * delta added to their weights by hand."""
    models = {"transformer": build_tiny_transformer(), "text": build_tiny_clip()}
    with torch.no_grad():
        for f, model_strength, clip_strength in files:
            for (part, module), delta in f.deltas.items():
                s = model_strength if part == "transformer" else clip_strength
                models[part].get_submodule(module).weight += s * delta
    return run_transformer(models["transformer"]), run_clip(models["text"])


def slot(file: str, model: float = 1.0, clip: float = 1.0, on: bool = True, trigger: str = ""):
    return LoraSlot(
        file=file, strength_model=model, strength_clip=clip, enabled=on, trigger=trigger
    )


def apply_both(stack: LoraStack, bundle, slots) -> list:
    """What the text stage and then the base stage do, with their own slices of the slots."""
    stack.apply(bundle, stack.stage_params(slots, "text").slots, part="text")
    return stack.apply(bundle, stack.stage_params(slots, "transformer").slots, part="transformer")


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_each_format_loads_fully_and_equals_merged_weights(kind, loras, bundle):
    build, label = BUILDERS[kind]
    f = build()
    f.save(loras / f"{kind}.safetensors")
    stack = LoraStack(loras)
    base = run_transformer(bundle.transformer)
    (match,) = apply_both(stack, bundle, [slot(f"{kind}.safetensors", 0.7, 0.6)])
    assert match.format == label
    assert match.complete and match.matched == f.layers, match.line()
    assert match.text_encoder == sum(1 for part, _ in f.deltas if part == "text")
    assert match.line().startswith(f"{kind}.safetensors ({label}): {f.layers} of {f.layers}")
    want_t, want_c = merged([(f, 0.7, 0.6)])
    got = run_transformer(bundle.transformer)
    assert not torch.equal(got, base)
    torch.testing.assert_close(got, want_t, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(run_clip(bundle), want_c, atol=2e-5, rtol=1e-4)


def test_strength_zero_and_slot_off_give_the_exact_base_output(loras, bundle):
    build_kohya().save(loras / "k.safetensors")
    stack = LoraStack(loras)
    base_t, base_c = run_transformer(bundle.transformer), run_clip(bundle)
    apply_both(stack, bundle, [slot("k.safetensors", 0.0, 0.0)])
    assert torch.equal(run_transformer(bundle.transformer), base_t)
    assert torch.equal(run_clip(bundle), base_c)
    apply_both(stack, bundle, [slot("k.safetensors", 0.8, 0.8)])
    assert not torch.equal(run_transformer(bundle.transformer), base_t)
    apply_both(stack, bundle, [slot("k.safetensors", 0.8, 0.8, on=False)])
    assert torch.equal(run_transformer(bundle.transformer), base_t)
    assert torch.equal(run_clip(bundle), base_c)
    assert stack.stage_params([slot("k.safetensors", on=False)], "text").slots == ()


def test_stage_params_change_only_with_what_changes_that_stage(loras):
    build_kohya().save(loras / "k.safetensors")
    build_peft(prefix="").save(loras / "no_clip.safetensors")
    stack = LoraStack(loras)
    a = [slot("k.safetensors", 0.5, 0.3, trigger="x"), slot("no_clip.safetensors", 0.2, 0.9)]
    b = [slot("k.safetensors", 0.7, 0.3, trigger="y"), slot("no_clip.safetensors", 0.2, 0.1)]
    assert stack.stage_params(a, "text") == stack.stage_params(b, "text")
    assert stack.stage_params(a, "transformer") != stack.stage_params(b, "transformer")
    text = stack.stage_params(a, "text")
    assert [s.file for s in text.slots] == ["k.safetensors"] and text.slots[0].strength_model == 0
    before = stack.stage_params(a, "transformer")
    build_peft().save(loras / "no_clip.safetensors")  # edited: a new identity
    assert stack.stage_params(a, "transformer").files != before.files


def test_strength_changes_and_toggles_never_read_the_file_again(loras, bundle):
    kfile, pfile = build_kohya(), build_peft()
    kfile.save(loras / "k.safetensors")
    stack = LoraStack(loras)
    for strengths in [(0.5, 0.5), (0.9, 0.2), (0.0, 0.7), (0.3, 0.3)]:
        apply_both(stack, bundle, [slot("k.safetensors", *strengths)])
    apply_both(stack, bundle, [slot("k.safetensors", on=False)])
    apply_both(stack, bundle, [slot("k.safetensors", 0.4, 0.3)])
    assert stack.file_reads == {"k.safetensors": 1}
    torch.testing.assert_close(
        run_transformer(bundle.transformer), merged([(kfile, 0.4, 0.3)])[0], atol=2e-5, rtol=1e-4
    )
    pfile.save(loras / "p.safetensors")  # adding a second slot reads only the new file
    both = [slot("k.safetensors", 0.4, 0.3), slot("p.safetensors", 0.5, 0.25)]
    apply_both(stack, bundle, both)
    assert stack.file_reads == {"k.safetensors": 1, "p.safetensors": 1}
    want_t, want_c = merged([(kfile, 0.4, 0.3), (pfile, 0.5, 0.25)])
    torch.testing.assert_close(run_transformer(bundle.transformer), want_t, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(run_clip(bundle), want_c, atol=2e-5, rtol=1e-4)
    apply_both(stack, bundle, [slot("p.safetensors", 0.5, 0.25)])  # remove one, toggle all
    apply_both(stack, bundle, [slot(s.file, on=False) for s in both])
    apply_both(stack, bundle, both)
    assert stack.file_reads == {"k.safetensors": 1, "p.safetensors": 1}


def test_a_load_for_one_model_leaves_the_other_as_last_applied(loras, bundle):
    kfile = build_kohya()
    kfile.save(loras / "k.safetensors")
    build_peft(prefix="").save(loras / "no_clip.safetensors")
    stack = LoraStack(loras)
    slots = [slot("k.safetensors", 0.4, 0.6)]
    stack.apply(bundle, stack.stage_params(slots, "text").slots, part="text")
    more = stack.stage_params([*slots, slot("no_clip.safetensors", 0.3)], "transformer")
    stack.apply(bundle, more.slots, part="transformer")  # reads no_clip, strength_clip 0 here
    assert stack.file_reads == {"k.safetensors": 1, "no_clip.safetensors": 1}
    torch.testing.assert_close(run_clip(bundle), merged([(kfile, 0.4, 0.6)])[1])


def test_a_changed_file_is_read_again(loras, bundle):
    path = build_peft().save(loras / "p.safetensors")
    stack = LoraStack(loras)
    apply_both(stack, bundle, [slot("p.safetensors")])
    first = run_transformer(bundle.transformer)
    other = LoraFile(seed=100)
    other.layer(("transformer.x_embedder.lora_A.weight", "transformer.x_embedder.lora_B.weight"),
                [tr("x_embedder")], 64)  # fmt: skip
    other.save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    (match,) = apply_both(stack, bundle, [slot("p.safetensors")])
    assert stack.file_reads["p.safetensors"] == 2 and match.matched == 1
    assert not torch.equal(run_transformer(bundle.transformer), first)
    torch.testing.assert_close(
        run_transformer(bundle.transformer), merged([(other, 1.0, 1.0)])[0], atol=2e-5, rtol=1e-4
    )


def test_a_file_for_another_model_is_refused_with_its_name(loras, bundle):
    sdxl = LoraFile()
    for name in ["down_blocks_0_attentions_0_proj_in", "mid_block_attentions_0_proj_out"]:
        kohya(f"lora_unet_{name}", [tr("unused", 64)], 32, sdxl)
    sdxl.save(loras / "sdxl_style.safetensors")
    save_file({"some.weight": torch.zeros(2, 2)}, str(loras / "not_a_lora.safetensors"))
    stack = LoraStack(loras)
    base = run_transformer(bundle.transformer)
    with pytest.raises(InputError, match=r"'sdxl_style.safetensors' \(kohya layout\)") as err:
        stack.apply(bundle, [slot("sdxl_style.safetensors")], part="transformer")
    assert "lora_unet_down_blocks_0_attentions_0_proj_in" in str(err.value)
    with pytest.raises(InputError, match="not_a_lora.safetensors' has no LoRA layers"):
        stack.apply(bundle, [slot("not_a_lora.safetensors")], part="text")
    assert not getattr(bundle.transformer, "peft_config", None)
    assert torch.equal(run_transformer(bundle.transformer), base)


def test_a_partial_match_loads_and_names_every_family_left_out(loras, bundle):
    f = LoraFile()
    kohya("lora_unet_img_in", [tr("x_embedder")], 64, f)
    for block in (0, 1):  # a family this model does not have
        kohya(f"lora_unet_double_blocks_{block}_img_attn_gate", [tr("gate", D)], D, f)
    kohya("lora_unet_double_blocks_0_img_attn_proj", [tr(f"{B0}.attn.to_out.0")], D, f)
    f.tensors["lora_unet_double_blocks_0_img_attn_proj.dora_scale"] = torch.ones(1, D)
    f.save(loras / "mixed.safetensors")
    (match,) = LoraStack(loras).apply(bundle, [slot("mixed.safetensors")], part="transformer")
    assert (match.matched, match.complete) == (1, False)
    assert match.families == (
        ("lora_unet_double_blocks_N_img_attn_gate", 2),
        ("lora_unet_double_blocks_N_img_attn_proj (DoRA)", 1),
    )
    assert match.line() == (
        "mixed.safetensors (kohya): 1 of 4 layers matched; not applied: "
        "lora_unet_double_blocks_N_img_attn_gate ×2, "
        "lora_unet_double_blocks_N_img_attn_proj (DoRA) ×1"
    )


@pytest.mark.parametrize(
    "name",
    ["../x.safetensors", "/etc/x.safetensors", "sub/../../x.safetensors", "x.pt",
     "gone.safetensors", "escape.safetensors", "C:x.safetensors"],
)  # fmt: skip
def test_only_safetensors_inside_loras_are_read(name, loras, tmp_path):
    outside = build_peft().save(tmp_path / "x.safetensors")
    (loras / "escape.safetensors").symlink_to(outside)
    (loras / "x.pt").write_bytes(b"not read")
    with pytest.raises(InputError, match="loras"):
        LoraStack(loras).identity(name)


def test_no_models_folder_names_where_loras_go():
    with pytest.raises(InputError, match=r"<models>/loras"):
        LoraStack(None).identity("a.safetensors")
    assert LoraStack(None).list_files() == []


def test_list_files_finds_subfolders_only_safetensors(loras, tmp_path):
    build_peft().save(loras / "b.safetensors")
    build_peft().save(loras / "skin" / "A.safetensors")
    (loras / "notes.txt").write_text("x")
    (loras / "out.safetensors").symlink_to(build_peft().save(tmp_path / "out.safetensors"))
    assert LoraStack(loras).list_files() == ["b.safetensors", "skin/A.safetensors"]


def test_trigger_words_from_metadata_library_or_typed(loras):
    f = build_peft()
    f.metadata = {"modelspec.trigger_phrase": "ohwx skin, pores"}
    f.save(loras / "meta.safetensors")
    tags = {"10_ohwx": {"ohwx": 10, "woman": 7, "smile": 2}, "5_ohwx": {"ohwx": 5, "woman": 5}}
    f.metadata = {"ss_tag_frequency": json.dumps(tags), "ss_output_name": "my_lora_v2"}
    f.save(loras / "tags.safetensors")
    f.metadata = {}
    f.save(loras / "flux_skin_texture_v1.safetensors")
    stack = LoraStack(loras)
    assert stack.trigger_words("meta.safetensors") == ["ohwx skin", "pores"]
    assert stack.trigger_words("tags.safetensors") == ["ohwx"]
    assert stack.trigger_words("flux_skin_texture_v1.safetensors") == ["flux skin texture"]
    slots = [
        slot("meta.safetensors"),
        slot("tags.safetensors", trigger="typed word"),
        slot("flux_skin_texture_v1.safetensors", on=False),
    ]
    prompt = "portrait, Pores visible"
    assert stack.prompt_with_triggers(prompt, slots) == "ohwx skin, typed word, " + prompt


def test_library_and_strength_warning():
    assert [e.trigger for e in LORA_LIBRARY] == [
        "flux skin texture", "photorealistic skin", "glamour skin tone",
        "macro female portrait", "luscious lips", "ESC makeup",
    ]  # fmt: skip
    assert TURBO_LORA.default_strength == 0.75
    assert library_match("loras/FLUX.1-Turbo-Alpha.safetensors") is TURBO_LORA
    assert library_match("mystery.safetensors") is None
    assert strength_warning([slot("a", 0.75), slot("b", 0.25)]) is None
    assert strength_warning([slot("a", 0.75), slot("b", 0.3), slot("c", 5, on=False)])
    assert "1.05" in strength_warning([slot("a", 0.75), slot("b", 0.3)])


def test_lora_on_fp8_storage_runs_and_strength_zero_is_exact(loras):
    manager = ModelManager(ModelConfig(tiny=True))
    fp8 = manager.flux(ModelParams(weight_dtype="fp8_e4m3fn"))
    q = fp8.transformer.transformer_blocks[0].attn.to_q
    assert q.weight.dtype == torch.float8_e4m3fn
    build_kohya().save(loras / "k.safetensors")
    stack = LoraStack(loras)
    base = run_transformer(fp8.transformer)
    (match,) = apply_both(stack, fp8, [slot("k.safetensors", 0.0, 0.0)])
    assert match.complete
    assert torch.equal(run_transformer(fp8.transformer), base)
    apply_both(stack, fp8, [slot("k.safetensors", 0.8, 0.8)])
    out = run_transformer(fp8.transformer)
    assert torch.isfinite(out).all() and not torch.equal(out, base)
    q = fp8.transformer.transformer_blocks[0].attn.to_q  # now a peft wrapper
    adapter = next(iter(q.lora_A))
    assert q.base_layer.weight.dtype == torch.float8_e4m3fn
    assert q.lora_A[adapter].weight.dtype == fp8.compute_dtype
    apply_both(stack, fp8, [slot("k.safetensors", on=False)])
    assert torch.equal(run_transformer(fp8.transformer), base)
    assert stack.file_reads == {"k.safetensors": 1}


def test_the_manager_owns_one_stack_that_follows_a_reloaded_transformer(tmp_path):
    build_kohya().save(tmp_path / "models" / "loras" / "k.safetensors")
    manager = ModelManager(ModelConfig(models_dir=tmp_path / "models", tiny=True))
    stack = manager.loras()
    assert stack is manager.loras() and stack.list_files() == ["k.safetensors"]
    slots = [slot("k.safetensors", 0.5, 0.5)]
    apply_both(stack, manager.flux(ModelParams()), slots)
    fp8 = manager.flux(ModelParams(weight_dtype="fp8_e4m3fn"))  # a new transformer, same CLIP
    (match,) = apply_both(stack, fp8, slots)
    assert match.complete and stack.file_reads == {"k.safetensors": 2}
    assert torch.isfinite(run_transformer(fp8.transformer)).all()
