"""Every LoRA family people download, checked against ComfyUI's rules computed by hand.

Each file below gives every layer a non-trivial alpha. The expected weight update of each
module is worked out here, independently of the engine: ComfyUI's formulas (LoRA
alpha/rank · up @ down; LoHa alpha/rank · (w1a @ w1b) ⊙ (w2a @ w2b); LoKr w1 ⊗ w2, times
alpha/rank only when a factor is decomposed; full diffs as they are), and ComfyUI's BFL ->
diffusers layout (fused q/k/v rows split, the final adaLN's (shift, scale) halves swapped).
The engine's update is read off the loaded tiny models as the change of each Linear's
effective weight (what the layer does to the identity matrix), so peft adapters and merged
updates are measured the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_lora import slot

from engine.lora import LoraStack
from engine.models.manager import ModelConfig, ModelManager
from engine.recipe import ModelParams

D, MLP, RANK = 32, 128, 4
B0, S0 = "transformer_blocks.0", "single_transformer_blocks.0"
CLIP_Q = "encoder.layers.0.self_attn.q_proj"
T5_Q, T5_K = "encoder.block.0.layer.0.SelfAttention.q", "encoder.block.0.layer.0.SelfAttention.k"
MODEL, CLIP = 0.7, 0.4  # slot strengths: CLIP's also drives T5


@dataclass
class Built:
    """A file's tensors and the update ComfyUI applies per (part, module) at strength 1."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    expected: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    seed: int = 0

    def rand(self, *shape: int) -> torch.Tensor:
        self.seed += 1
        return torch.randn(*shape, generator=torch.Generator().manual_seed(self.seed)) * 0.3

    def expect(self, targets: list[tuple[str, str]], delta: torch.Tensor, swap=False):
        """Split `delta`'s rows over `targets` in order (BFL fused layers), or swap halves."""
        if swap:
            half = delta.shape[0] // 2
            delta = torch.cat([delta[half:], delta[:half]])
        sizes = [delta.shape[0] // len(targets)] * len(targets)
        if len(targets) == 4:  # single block linear1: q, k, v, then the MLP
            sizes = [D, D, D, MLP]
        for target, rows in zip(targets, delta.split(sizes), strict=True):
            self.expected[target] = self.expected.get(target, 0) + rows  # layers add up

    def lora(self, name, targets, out, fan_in, alpha, suffixes=("lora_down", "lora_up"), **kw):
        down, up = self.rand(RANK, fan_in), self.rand(out, RANK)
        self.tensors[f"{name}.{suffixes[0]}.weight"] = down
        self.tensors[f"{name}.{suffixes[1]}.weight"] = up
        self.tensors[f"{name}.alpha"] = torch.tensor(float(alpha))
        self.expect(targets, alpha / RANK * up @ down, **kw)

    def loha(self, name, targets, out, fan_in, alpha):
        w1a, w1b, w2a, w2b = (self.rand(*s) for s in [(out, 2), (2, fan_in)] * 2)
        for key, value in zip(("w1_a", "w1_b", "w2_a", "w2_b"), (w1a, w1b, w2a, w2b), strict=True):
            self.tensors[f"{name}.hada_{key}"] = value
        self.tensors[f"{name}.alpha"] = torch.tensor(float(alpha))
        self.expect(targets, alpha / 2 * (w1a @ w1b) * (w2a @ w2b))

    def lokr(self, name, targets, w1_shape, w2_shape, alpha, decompose="w2"):
        w1, w2 = self.rand(*w1_shape), self.rand(*w2_shape)
        factors = {"w1": w1, "w2": w2}
        scale = 1.0  # ComfyUI: alpha counts only when a factor is given as a @ b
        if decompose:
            a, b = self.rand(w2_shape[0] if decompose == "w2" else w1_shape[0], 3), None
            b = self.rand(3, w2_shape[1] if decompose == "w2" else w1_shape[1])
            factors[decompose] = a @ b
            self.tensors[f"{name}.lokr_{decompose}_a"] = a
            self.tensors[f"{name}.lokr_{decompose}_b"] = b
            scale = alpha / 3
        for key in ("w1", "w2"):
            if key != decompose:
                self.tensors[f"{name}.lokr_{key}"] = factors[key]
        self.tensors[f"{name}.alpha"] = torch.tensor(float(alpha))
        self.expect(targets, scale * torch.kron(factors["w1"], factors["w2"]))

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(self.tensors, str(path))
        return path


def t(module: str, part: str = "transformer") -> tuple[str, str]:
    return (part, module)


def qkv(prefix: str, names=("to_q", "to_k", "to_v")) -> list[tuple[str, str]]:
    return [t(f"{prefix}.attn.{n}") for n in names]


LINEAR1 = [*qkv(S0), t(f"{S0}.proj_mlp")]
ADD_QKV = ("add_q_proj", "add_k_proj", "add_v_proj")


def kohya() -> Built:
    f = Built()
    f.lora("lora_unet_double_blocks_0_img_attn_qkv", qkv(B0), 3 * D, D, 8)
    f.lora("lora_unet_double_blocks_0_txt_attn_proj", [t(f"{B0}.attn.to_add_out")], D, D, 2)
    f.lora("lora_unet_double_blocks_0_img_mlp_0", [t(f"{B0}.ff.net.0.proj")], MLP, D, 1)
    f.lora("lora_unet_double_blocks_0_txt_mod_lin", [t(f"{B0}.norm1_context.linear")], 6 * D, D, 3)
    f.lora("lora_unet_single_blocks_0_linear1", LINEAR1, 3 * D + MLP, D, 2)
    f.lora("lora_unet_single_blocks_0_linear2", [t(f"{S0}.proj_out")], D, D + MLP, 6)
    f.lora("lora_unet_img_in", [t("x_embedder")], D, 64, 2)
    f.lora("lora_unet_final_layer_linear", [t("proj_out")], 64, D, 2)  # alpha was dropped
    f.lora("lora_unet_final_layer_adaLN_modulation_1", [t("norm_out.linear")], 2 * D, D, 2,
           swap=True)  # fmt: skip
    f.lora("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", [t(CLIP_Q, "text")], D, D, 2)
    f.lora("lora_te2_encoder_block_0_layer_0_SelfAttention_q", [t(T5_Q, "t5")], D, D, 8)
    return f


def comfyui() -> Built:
    f, ab = Built(), ("lora_A", "lora_B")
    f.lora("diffusion_model.double_blocks.0.txt_attn.qkv", qkv(B0, ADD_QKV), 3 * D, D, 2,
           suffixes=ab)  # fmt: skip
    f.lora("diffusion_model.single_blocks.0.linear1", LINEAR1, 3 * D + MLP, D, 8, suffixes=ab)
    f.lora("diffusion_model.final_layer.linear", [t("proj_out")], 64, D, 8, suffixes=ab)
    f.lora("diffusion_model.final_layer.adaLN_modulation.1", [t("norm_out.linear")], 2 * D, D,
           8, suffixes=ab, swap=True)  # fmt: skip
    f.lora("text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj",
           [t(CLIP_Q, "text")], D, D, 2, suffixes=ab)  # fmt: skip
    f.lora("text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.k",
           [t(T5_K, "t5")], D, D, 2, suffixes=ab)  # fmt: skip
    return f


def xlabs() -> Built:
    f, du = Built(), ("down", "up")
    f.lora("double_blocks.0.processor.qkv_lora1", qkv(B0), 3 * D, D, 8, suffixes=du)
    f.lora("double_blocks.0.processor.proj_lora2", [t(f"{B0}.attn.to_add_out")], D, D, 2,
           suffixes=du)  # fmt: skip
    return f


def peft_and_diffusers() -> Built:
    f = Built()
    f.lora(f"transformer.{B0}.attn.to_k", [t(f"{B0}.attn.to_k")], D, D, 8,
           suffixes=("lora_A", "lora_B"))  # fmt: skip
    f.lora(f"transformer.{S0}.proj_out", [t(f"{S0}.proj_out")], D, D + MLP, 2,
           suffixes=("lora_linear_layer.down", "lora_linear_layer.up"))  # fmt: skip
    f.lora(f"transformer.{B0}.attn.processor.to_v_lora", [t(f"{B0}.attn.to_v")], D, D, 2,
           suffixes=("down", "up"))  # fmt: skip
    f.lora(f"text_encoder.text_model.{CLIP_Q}", [t(CLIP_Q, "text")], D, D, 8,
           suffixes=("lora.down", "lora.up"))  # fmt: skip
    return f


def onetrainer() -> Built:
    f = Built()
    f.lora("lora_transformer_transformer_blocks_0_ff_context_net_2",
           [t(f"{B0}.ff_context.net.2")], D, MLP, 2)  # fmt: skip
    f.lora("lora_transformer_transformer_blocks_0_norm1_linear", [t(f"{B0}.norm1.linear")],
           6 * D, D, 8)  # fmt: skip
    f.lora("lora_transformer_single_transformer_blocks_0_proj_mlp", [t(f"{S0}.proj_mlp")],
           MLP, D, 2)  # fmt: skip
    f.lora("lora_transformer_single_transformer_blocks_0_norm_linear", [t(f"{S0}.norm.linear")],
           3 * D, D, 2)  # fmt: skip
    f.lora("lora_te1_text_model_encoder_layers_1_mlp_fc1",
           [t("encoder.layers.1.mlp.fc1", "text")], 64, D, 2)  # fmt: skip
    f.lora("lora_te2_encoder_block_1_layer_1_DenseReluDense_wi_0",
           [t("encoder.block.1.layer.1.DenseReluDense.wi_0", "t5")], 64, D, 2)  # fmt: skip
    return f


def lycoris() -> Built:
    f = Built()
    f.lora("lycoris_transformer_blocks_0_attn_to_q", [t(f"{B0}.attn.to_q")], D, D, 8)
    f.loha("lora_unet_double_blocks_0_img_attn_qkv", qkv(B0), 3 * D, D, 6)  # fused: split
    f.loha("lycoris_single_transformer_blocks_0_proj_mlp", [t(f"{S0}.proj_mlp")], MLP, D, 1)
    f.lokr("lora_unet_single_blocks_0_linear2", [t(f"{S0}.proj_out")], (4, 8), (8, 20), 6)
    f.lokr("lycoris_transformer_blocks_0_attn_to_add_out", [t(f"{B0}.attn.to_add_out")],
           (4, 4), (8, 8), 2, decompose="w1")  # fmt: skip
    f.lokr("lycoris_transformer_blocks_0_ff_net_2", [t(f"{B0}.ff.net.2")], (4, 8), (8, 16), 5,
           decompose="")  # both whole: alpha is ignored  # fmt: skip
    f.loha("lora_te1_text_model_encoder_layers_0_mlp_fc2", [t("encoder.layers.0.mlp.fc2", "text")],
           D, 64, 2)  # fmt: skip
    diff = f.rand(D, MLP)
    f.tensors["lora_unet_double_blocks_0_img_mlp_2.diff"] = diff
    f.tensors["lora_unet_double_blocks_0_img_mlp_2.diff_b"] = f.rand(D)
    f.expect([t(f"{B0}.ff.net.2")], diff)  # on top of the LoKr above: the two add up
    return f


BUILDERS = {
    "kohya": (kohya, "kohya", {"LoRA": 11}),
    "comfyui": (comfyui, "comfyui", {"LoRA": 6}),
    "xlabs": (xlabs, "xlabs", {"LoRA": 2}),
    "peft": (peft_and_diffusers, "peft", {"LoRA": 4}),
    "onetrainer": (onetrainer, "onetrainer", {"LoRA": 6}),
    "lycoris": (lycoris, "lycoris", {"LoHa": 3, "LoKr": 3, "LoRA": 1, "full": 1}),
}


@pytest.fixture
def bundle():
    return ModelManager(ModelConfig(tiny=True, device="cpu")).flux(ModelParams())


def models_of(bundle) -> dict[str, torch.nn.Module]:
    return {"transformer": bundle.transformer, "text": bundle.clip, "t5": bundle.t5}


@torch.no_grad()
def effective_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Each plain Linear's (or LoRA wrapper's) map as a matrix: f(I) - f(0), transposed."""
    out = {}
    for name, module in model.named_modules():
        if ".base_layer" in name or ".lora_" in name:
            continue
        base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
        if isinstance(base, torch.nn.Linear):
            eye = torch.eye(base.in_features)
            out[name] = (module(eye) - module(torch.zeros_like(eye))).T.clone()
    return out


def observed(bundle, before: dict) -> dict[tuple[str, str], torch.Tensor]:
    after = {part: effective_weights(models_of(bundle)[part]) for part in before}
    return {
        (part, name): after[part][name] - w for part in before for name, w in before[part].items()
    }


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_every_family_lands_as_comfyui_applies_it(kind, bundle, tmp_path):
    build, layout, kinds = BUILDERS[kind]
    f = build()
    f.save(tmp_path / "loras" / f"{kind}.safetensors")
    before = {part: effective_weights(m) for part, m in models_of(bundle).items()}
    stack = LoraStack(tmp_path / "loras")
    slots = [slot(f"{kind}.safetensors", MODEL, CLIP)]
    stack.apply(bundle, stack.stage_params(slots, "text").slots, part="text")
    (match,) = stack.apply(
        bundle, stack.stage_params(slots, "transformer").slots, part="transformer"
    )
    assert match.complete and match.format == layout, match.line()
    assert dict(match.kinds) == kinds
    deltas = observed(bundle, before)
    for key, delta in deltas.items():
        strength = MODEL if key[0] == "transformer" else CLIP
        want = strength * f.expected.get(key, torch.zeros_like(delta))
        torch.testing.assert_close(delta, want, atol=1e-5, rtol=1e-4, msg=f"{kind}: {key}")
    assert set(f.expected) <= set(deltas)


def test_the_report_names_kinds_and_models(bundle, tmp_path):
    kohya().save(tmp_path / "loras" / "k.safetensors")
    lycoris().save(tmp_path / "loras" / "l.safetensors")
    stack = LoraStack(tmp_path / "loras")
    k, ly = stack.apply(bundle, [slot("k.safetensors"), slot("l.safetensors")], part="text")
    assert k.line() == "k.safetensors (kohya): 11 of 11 layers matched (1 on CLIP-L; 1 on T5)"
    assert ly.line() == (
        "l.safetensors (lycoris): 8 of 8 layers matched (LoHa 3, LoKr 3, LoRA 1, full 1; "
        "1 on CLIP-L)"
    )


@pytest.mark.parametrize("prefix", ["lora_unet_final_layer_", "diffusion_model.final_layer."])
def test_the_final_layer_keeps_its_alpha(prefix, bundle, tmp_path):
    """diffusers' converter dropped these two layers' alpha: 2x ComfyUI's change at alpha 2."""
    f = Built()
    sep = "_" if prefix.startswith("lora_unet") else "."
    f.lora(f"{prefix}linear", [t("proj_out")], 64, D, 2)
    f.lora(f"{prefix}adaLN_modulation{sep}1", [t("norm_out.linear")], 2 * D, D, 2, swap=True)
    f.save(tmp_path / "loras" / "final.safetensors")
    before = {"transformer": effective_weights(bundle.transformer)}
    LoraStack(tmp_path / "loras").apply(bundle, [slot("final.safetensors")], part="transformer")
    deltas = observed(bundle, before)
    for key in [t("proj_out"), t("norm_out.linear")]:
        torch.testing.assert_close(deltas[key], f.expected[key], atol=1e-5, rtol=1e-4)
    # Only the named modules get a LoRA layer: peft's suffix matching would also wrap
    # every single block's proj_out.
    assert not hasattr(bundle.transformer.single_transformer_blocks[0].proj_out, "lora_A")
