"""Tiny LoRA files for the `--tiny` demo, built in code from fixed seeds.

Three files in three layouts that people download, each aimed at the tiny transformer's
real module names and widths (engine/models/tiny.py), so every LoRA control of the studio
can be tried without a models folder:

- demo_skin_texture: peft / diffusers (`transformer.<module>.lora_A.weight`, diffusers'
  saved LoraConfig) with a `modelspec.trigger_phrase`;
- demo_film_look: Kohya sd-scripts (`lora_unet_double_blocks_0_img_attn_qkv`, alphas) with
  a CLIP-L part (`lora_te1_`) and `ss_tag_frequency` training tags;
- demo_freckles_lokr: LyCORIS LoKr (`lycoris_` names, a decomposed w2) with `trigger_words`.

The bytes are the same on every run, so writing them again changes nothing on disk.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save

from engine.files import atomic_write

# The tiny models' widths (engine/models/tiny.py; tests/test_demo_loras.py checks them):
# attention = heads x head dim, MLP = 4 x that, packed latent channels, CLIP-L hidden size.
# Written out rather than imported, because tiny.py pulls in diffusers and transformers.
D, MLP, LATENT, CLIP_D = 32, 128, 64, 32
RANK = 4
B0, S0 = "transformer_blocks.0", "single_transformer_blocks.0"
SKIN = "demo_skin_texture.safetensors"
FILM = "demo_film_look.safetensors"
FRECKLES = "demo_freckles_lokr.safetensors"


@dataclass
class _Tensors:
    """A file's tensors, drawn from one seeded generator in a fixed order."""

    seed: int
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._generator = torch.Generator().manual_seed(self.seed)

    def rand(self, *shape: int, scale: float) -> torch.Tensor:
        return torch.randn(*shape, generator=self._generator) * scale

    def lora(
        self, name: str, suffixes: tuple[str, str], fan_in: int, out: int, scale: float
    ) -> None:
        self.tensors[f"{name}.{suffixes[0]}.weight"] = self.rand(RANK, fan_in, scale=scale)
        self.tensors[f"{name}.{suffixes[1]}.weight"] = self.rand(out, RANK, scale=scale)


def _skin_texture() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """peft / diffusers: `transformer.` keys, alpha in diffusers' saved LoraConfig."""
    f = _Tensors(seed=2101)
    modules = [f"{B0}.attn.{n}" for n in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj")]
    modules += [f"{S0}.attn.to_q", f"{S0}.attn.to_k", f"{S0}.attn.to_v"]
    for module in modules:
        f.lora(f"transformer.{module}", ("lora_A", "lora_B"), D, D, scale=0.5)
    f.lora(f"transformer.{B0}.ff.net.0.proj", ("lora_A", "lora_B"), D, MLP, scale=0.5)
    config = {"transformer.r": RANK, "transformer.lora_alpha": 2 * RANK}
    config["transformer.target_modules"] = sorted({m.rsplit(".", 1)[-1] for m in modules})
    metadata = {
        "format": "pt",
        "lora_adapter_metadata": json.dumps(config, sort_keys=True),
        "modelspec.title": "Demo skin texture (tiny, random)",
        "modelspec.trigger_phrase": "demo skin texture",
    }
    return f.tensors, metadata


def _film_look() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Kohya sd-scripts: BFL names flattened with `_`, an alpha per layer, a CLIP-L part."""
    f = _Tensors(seed=2102)
    layers = [
        ("lora_unet_double_blocks_0_img_attn_qkv", D, 3 * D),
        ("lora_unet_double_blocks_0_txt_attn_qkv", D, 3 * D),
        ("lora_unet_double_blocks_0_img_attn_proj", D, D),
        ("lora_unet_single_blocks_0_linear1", D, 3 * D + MLP),
        ("lora_unet_single_blocks_0_linear2", D + MLP, D),
        ("lora_unet_final_layer_linear", D, LATENT),
        ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", CLIP_D, CLIP_D),
        ("lora_te1_text_model_encoder_layers_1_self_attn_v_proj", CLIP_D, CLIP_D),
    ]
    for name, fan_in, out in layers:
        f.lora(name, ("lora_down", "lora_up"), fan_in, out, scale=0.6)
        f.tensors[f"{name}.alpha"] = torch.tensor(float(RANK))
    tags = {"10_demo film look": {"demo film look": 24, "grain": 9, "portrait": 15}}
    metadata = {
        "ss_base_model_version": "flux1",
        "ss_network_alpha": str(RANK),
        "ss_network_dim": str(RANK),
        "ss_network_module": "networks.lora_flux",
        "ss_output_name": "demo_film_look",
        "ss_tag_frequency": json.dumps(tags, sort_keys=True),
    }
    return f.tensors, metadata


def _freckles_lokr() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """LyCORIS LoKr (SimpleTuner's `lycoris_` names): ΔW = alpha / rank · w1 ⊗ (w2a @ w2b)."""
    f = _Tensors(seed=2103)
    layers = [  # module, w1 (out, in), w2 (out, in): out = product of outs, in = of ins
        ("lycoris_transformer_blocks_0_ff_net_0_proj", (4, 4), (MLP // 4, D // 4)),
        ("lycoris_transformer_blocks_0_attn_to_add_out", (4, 4), (D // 4, D // 4)),
        ("lycoris_single_transformer_blocks_0_proj_out", (4, 8), (D // 4, (D + MLP) // 8)),
    ]
    for name, w1, w2 in layers:
        f.tensors[f"{name}.lokr_w1"] = f.rand(*w1, scale=0.8)
        f.tensors[f"{name}.lokr_w2_a"] = f.rand(w2[0], RANK, scale=0.8)
        f.tensors[f"{name}.lokr_w2_b"] = f.rand(RANK, w2[1], scale=0.8)
        f.tensors[f"{name}.alpha"] = torch.tensor(float(RANK))
    metadata = {
        "lycoris_config": json.dumps({"algo": "lokr", "factor": 4}, sort_keys=True),
        "trigger_words": json.dumps(["demo freckles", "sun-kissed"]),
    }
    return f.tensors, metadata


DEMO_LORAS: dict[str, Callable[[], tuple[dict[str, torch.Tensor], dict[str, str]]]] = {
    SKIN: _skin_texture,
    FILM: _film_look,
    FRECKLES: _freckles_lokr,
}


def demo_lora_bytes(name: str) -> bytes:
    """The file `name` as bytes: safetensors with its metadata in sorted order.

    safetensors writes `__metadata__` in hash-map order, which changes from one process to
    the next; the header is re-written sorted so the bytes (and the file's sha256) are fixed.
    """
    tensors, metadata = DEMO_LORAS[name]()
    raw = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8 bytes
    return len(text).to_bytes(8, "little") + text + raw[8 + size :]


def write_demo_loras(folder: Path) -> list[Path]:
    """Write the demo LoRA files into `folder`; files already right are left untouched."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in DEMO_LORAS:
        path = folder / name
        data = demo_lora_bytes(name)
        if not (path.is_file() and path.read_bytes() == data):
            atomic_write(path, data)
        paths.append(path)
    return paths
