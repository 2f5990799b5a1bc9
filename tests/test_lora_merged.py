"""LoHa / LoKr / full-diff layers merged into the weights: strengths without reloads, the exact
base at strength 0, every weight format (bf16 / fp32, fp8 storage, fp8 compute), and T5
LoRAs driving the text stage through the engine."""

from __future__ import annotations

import pytest
import torch
from test_lora import slot
from test_lora_formats import MODEL, Built, effective_weights, lycoris, observed, t

from engine.engine import Engine, EngineConfig
from engine.lora import LoraStack
from engine.lora.keys import base_layer, linear_shapes
from engine.models.fp8_compute import Fp8Linear
from engine.models.manager import ModelConfig, ModelManager
from engine.recipe import ModelParams, Recipe
from engine.recipe_json import set_path

B0 = "transformer_blocks.0"


def lokr_only() -> Built:
    f = Built()
    f.lokr("lora_unet_double_blocks_0_img_attn_proj", [t(f"{B0}.attn.to_out.0")], (4, 4),
           (8, 8), 2)  # fmt: skip
    return f


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every Linear's stored tensors (under a peft wrapper: its base layer's), as bytes."""
    out = {}
    for name in linear_shapes(model):
        base = base_layer(model.get_submodule(name))
        for tensor_name in ("weight", "bias", "weight_scale"):
            value = getattr(base, tensor_name, None)
            if value is not None:
                out[f"{name}.{tensor_name}"] = value.detach().view(torch.uint8).clone()
    return out


def same_weights(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> bool:
    now = weights(model)
    return now.keys() == saved.keys() and all(torch.equal(now[k], v) for k, v in saved.items())


def test_strengths_rescale_the_merge_and_zero_gives_back_the_stored_weights(tmp_path):
    f = lokr_only()
    f.save(tmp_path / "loras" / "lokr.safetensors")
    bundle = ModelManager(ModelConfig(tiny=True, device="cpu")).flux(ModelParams())
    saved = weights(bundle.transformer)
    before = {"transformer": effective_weights(bundle.transformer)}
    stack = LoraStack(tmp_path / "loras")
    key = t(f"{B0}.attn.to_out.0")
    for strength in (1.0, 0.3, -0.5, 0.3):
        stack.apply(bundle, [slot("lokr.safetensors", strength)], part="transformer")
        delta = observed(bundle, before)[key]
        torch.testing.assert_close(delta, strength * f.expected[key], atol=1e-5, rtol=1e-4)
    for off in ([slot("lokr.safetensors", 0.0)], [slot("lokr.safetensors", on=False)], []):
        stack.apply(bundle, off, part="transformer")
        assert same_weights(bundle.transformer, saved)  # bit for bit, not W + 0.3Δ - 0.3Δ
    stack.apply(bundle, [slot("lokr.safetensors", 0.3)], part="transformer")
    assert stack.file_reads == {"lokr.safetensors": 1}  # strengths never read the file
    stack.unload(bundle)
    assert same_weights(bundle.transformer, saved)
    stack.apply(bundle, [slot("lokr.safetensors", 0.3)], part="transformer")
    assert stack.file_reads == {"lokr.safetensors": 2}  # an unload forgets it


@pytest.mark.parametrize("fp8_compute", ["off", "on"])
def test_merges_work_on_fp8_weights_and_come_back_exactly(tmp_path, fp8_compute):
    lycoris().save(tmp_path / "loras" / "l.safetensors")
    manager = ModelManager(ModelConfig(tiny=True, device="cpu", fp8_compute=fp8_compute))
    full = manager.flux(ModelParams())
    before = {"transformer": effective_weights(full.transformer)}
    stack = LoraStack(tmp_path / "loras")
    stack.apply(full, [slot("l.safetensors", MODEL)], part="transformer")
    want = observed(full, before)
    fp8 = manager.flux(ModelParams(weight_dtype="fp8_e4m3fn"))
    layer = fp8.transformer.get_submodule(f"{B0}.attn.to_add_out")
    assert layer.weight.dtype == torch.float8_e4m3fn
    assert isinstance(layer, Fp8Linear) == (fp8_compute == "on")
    saved = weights(fp8.transformer)
    before = {"transformer": effective_weights(fp8.transformer)}
    stack.apply(fp8, [slot("l.safetensors", MODEL)], part="transformer")
    got = observed(fp8, before)
    for key in [t(f"{B0}.attn.to_add_out"), t(f"{B0}.ff.net.2")]:  # LoKr; LoKr + full diff
        error = (got[key] - want[key]).norm() / want[key].norm()
        assert error < 0.1, (key, error)  # merged, then rounded to fp8
    stack.apply(fp8, [slot("l.safetensors", 0.0)], part="transformer")
    assert same_weights(fp8.transformer, saved)


def test_a_new_transformer_gets_the_merge_again(tmp_path):
    lokr_only().save(tmp_path / "loras" / "lokr.safetensors")
    manager = ModelManager(ModelConfig(tiny=True, device="cpu"))
    stack = LoraStack(tmp_path / "loras")
    first = manager.flux(ModelParams())
    stack.apply(first, [slot("lokr.safetensors")], part="transformer")
    second = manager.flux(ModelParams(weight_dtype="fp8_e4m3fn"))  # another transformer
    saved = weights(second.transformer)
    (match,) = stack.apply(second, [slot("lokr.safetensors")], part="transformer")
    assert match.complete and not same_weights(second.transformer, saved)
    assert stack.file_reads == {"lokr.safetensors": 2}


def test_a_t5_lora_follows_the_clip_strength_through_the_text_stage(tmp_path):
    f = Built()
    f.lora("lora_te2_encoder_block_0_layer_0_SelfAttention_q",
           [t("encoder.block.0.layer.0.SelfAttention.q", "t5")], 32, 32, 2)  # fmt: skip
    f.save(tmp_path / "models" / "loras" / "t5.safetensors")
    config = ModelConfig(tiny=True, device="cpu", models_dir=tmp_path / "models")
    engine = Engine(EngineConfig(config, outputs_dir=tmp_path / "o", data_dir=tmp_path / "d"))
    recipe = set_path(set_path(Recipe(), "prompt.width", 64), "prompt.height", 64)
    recipe = set_path(recipe, "settings.steps", 1)

    def run(**lora):
        slots = [{"file": "t5.safetensors", **lora}] if lora else []
        return engine.run(set_path(recipe, "prompt.loras", slots), save=False)

    plain = run()
    on = run(strength_clip=0.8, strength_model=1.0)
    assert on.report.ran_names[0] == "text"  # the T5 LoRA is part of the text stage's key
    assert any("(1 on T5)" in note for note in on.report.notes)
    assert on.images[0].tobytes() != plain.images[0].tobytes()
    model_only = run(strength_clip=0.8, strength_model=0.5)
    assert "text" in model_only.report.cached  # the model strength does not touch T5
    zero = run(strength_clip=0.0, strength_model=1.0)
    assert zero.images[0].tobytes() == plain.images[0].tobytes()


def test_a_merge_cut_short_by_out_of_memory_is_redone_in_full(tmp_path, monkeypatch):
    import engine.lora.merged as merged

    f = lokr_only()
    f.lokr("lora_unet_double_blocks_0_txt_attn_proj", [t(f"{B0}.attn.to_add_out")], (4, 4),
           (8, 8), 3)  # fmt: skip
    f.save(tmp_path / "loras" / "two.safetensors")
    bundle = ModelManager(ModelConfig(tiny=True, device="cpu")).flux(ModelParams())
    before = {"transformer": effective_weights(bundle.transformer)}
    stack = LoraStack(tmp_path / "loras")
    stack.apply(bundle, [slot("two.safetensors", 0.3)], part="transformer")
    real, calls = merged._write, []

    def second_layer_fails(*args):
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory.")
        real(*args)

    monkeypatch.setattr(merged, "_write", second_layer_fails)
    with pytest.raises(torch.OutOfMemoryError):
        stack.apply(bundle, [slot("two.safetensors", 1.0)], part="transformer")
    monkeypatch.setattr(merged, "_write", real)
    stack.apply(bundle, [slot("two.safetensors", 0.3)], part="transformer")  # the old strength
    delta = observed(bundle, before)
    for key in (t(f"{B0}.attn.to_out.0"), t(f"{B0}.attn.to_add_out")):
        torch.testing.assert_close(delta[key], 0.3 * f.expected[key], atol=1e-5, rtol=1e-4)
