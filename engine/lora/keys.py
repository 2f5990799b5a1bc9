"""Where a LoRA layer lands: source layer names of every Flux layout -> modules of our models.

We own this map instead of calling diffusers' converters (`lora_conversion_utils`): those
drop the alpha of `final_layer.linear` and `final_layer.adaLN_modulation.1` (a silent 2x at
alpha 2, rank 4), skip most OneTrainer (`lora_transformer_*`) layers, have no LyCORIS or T5
names, and hard-code real Flux's widths. The names below follow ComfyUI's key maps
(comfy/lora.py, flux_to_diffusers), so a file lands where ComfyUI puts it:

- transformer: BFL names (`double_blocks.N.img_attn.qkv`, Kohya's `lora_unet_` flattening,
  ComfyUI's `diffusion_model.`, XLabs' `processor.qkv_lora1`) and diffusers names (peft /
  `transformer.`, OneTrainer `lora_transformer_`, SimpleTuner `lycoris_`, DiffSynth bare);
- CLIP-L: `lora_te1_` / `lora_te_` flattening, `text_encoder.`, `text_encoders.clip_l.`;
- T5-XXL: `lora_te2_` flattening (OneTrainer / Forge) and `text_encoders.t5xxl.`.

A fused BFL layer (qkv, linear1) spreads its output rows over several modules; the adaLN of
the final layer is (shift, scale) in BFL and (scale, shift) in diffusers, so its rows swap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

Rows = tuple[tuple[int, int], ...]  # slices of the source layer's output rows, concatenated

# Source prefix -> model part (None: a part of another model), checked in this order. What
# follows the prefix is looked up both as a dotted name and with dots written as "_".
PREFIXES: tuple[tuple[str, str | None], ...] = (
    ("text_encoders.clip_l.transformer.", "text"),
    ("text_encoders.t5xxl.transformer.", "t5"),
    ("base_model.model.diffusion_model.", "transformer"),
    ("base_model.model.transformer.", "transformer"),
    ("base_model.model.", "transformer"),
    ("diffusion_model.", "transformer"),
    ("transformer.", "transformer"),
    ("text_encoder_2.", None),  # SDXL's second encoder
    ("text_encoder.", "text"),
    ("unet.", None),
    ("lora_transformer_", "transformer"),
    ("lora_unet_", "transformer"),
    ("lycoris_", "transformer"),
    ("lora_te1_", "text"),
    ("lora_te2_", "t5"),
    ("lora_te3_", None),  # SD3's T5 slot
    ("lora_te_", "text"),
)


@dataclass(frozen=True)
class Target:
    """One module a source layer writes to, and which of the layer's output rows it gets."""

    part: str  # "transformer", "text" (CLIP-L) or "t5"
    module: str
    rows: Rows = ()  # () = all rows, in order


def split(part: str, modules: list[str], widths: list[int]) -> list[Target]:
    """Consecutive row ranges of a fused layer, one per module."""
    targets, start = [], 0
    for module, width in zip(modules, widths, strict=True):
        targets.append(Target(part, module, ((start, start + width),)))
        start += width
    return targets


def base_layer(module: torch.nn.Module) -> torch.nn.Module:
    """The layer under a peft wrapper (a second LoRA wraps the same base), else the module."""
    return module.get_base_layer() if hasattr(module, "get_base_layer") else module


def linear_shapes(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """Module name -> (in_features, out_features) of every Linear a LoRA can target (under
    peft wrappers too: a wrapper stands for its base layer; its own children are skipped)."""
    out: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        if ".base_layer" in name or ".lora_" in name or name.startswith("lora_"):
            continue
        base = base_layer(module)
        if isinstance(base, torch.nn.Linear):
            out[name] = (base.in_features, base.out_features)
    return out


class KeyMap:
    """Source layer name -> targets, for one set of models (built once per file conversion),
    and the (in, out) shape of every target module by part."""

    def __init__(self, models: dict[str, torch.nn.Module]) -> None:
        self._tables: dict[str, dict[str, list[Target]]] = {}
        self.shapes: dict[str, dict[str, tuple[int, int]]] = {}
        for part, model in models.items():
            if model is None:
                continue
            shapes = self.shapes[part] = linear_shapes(model)
            table = {name: [Target(part, name)] for name in shapes}
            if part == "transformer":
                widths = {name: out for name, (_, out) in shapes.items()}
                table |= dict(bfl_names(model, widths))
            if part == "text":  # CLIPTextModel is flat in transformers 5; files say text_model.
                table |= {f"text_model.{name}": targets for name, targets in table.items()}
            flat = {name.replace(".", "_"): targets for name, targets in table.items()}
            self._tables[part] = table | flat

    def targets(self, layer: str) -> list[Target] | None:
        """The modules `layer` writes to, or None when no model here has it."""
        part, rest = split_prefix(layer)
        if part is None or part not in self._tables:
            return None
        table = self._tables[part]
        for candidate in _spellings(rest):
            if candidate in table:
                return table[candidate]
        return None


def split_prefix(layer: str) -> tuple[str | None, str]:
    """(model part or None for another model's, the name after the prefix)."""
    for prefix, part in PREFIXES:
        if layer.startswith(prefix):
            return part, layer[len(prefix) :]
    return "transformer", layer  # peft keys saved without a prefix, DiffSynth, XLabs, BFL


def _spellings(name: str) -> Iterator[str]:
    """The name, then older diffusers spellings: `attn.processor.to_q`, `to_out` for `to_out.0`."""
    yield name
    plain = name.replace(".processor.to_", ".to_").replace("_processor_to_", "_to_")
    yield plain
    if plain.endswith("to_out"):
        yield plain + ".0"
        yield plain + "_0"


def bfl_names(model: torch.nn.Module, widths: dict[str, int]) -> Iterator[tuple[str, list]]:
    """BFL (ComfyUI / Kohya) layer names of this transformer, with their targets."""
    for i in range(len(getattr(model, "transformer_blocks", ()))):
        yield from _double_block(i, widths)
    for i in range(len(getattr(model, "single_transformer_blocks", ()))):
        yield from _single_block(i, widths)
    yield from _outer_layers(widths)


def _fused(prefix: str, names: tuple[str, ...], widths: dict[str, int]) -> list[Target] | None:
    modules = [f"{prefix}.{n}" for n in names]
    if not all(m in widths for m in modules):
        return None
    return split("transformer", modules, [widths[m] for m in modules])


def _double_block(i: int, widths: dict[str, int]) -> Iterator[tuple[str, list]]:
    d, src = f"transformer_blocks.{i}", f"double_blocks.{i}"
    img_qkv = _fused(d, ("attn.to_q", "attn.to_k", "attn.to_v"), widths)
    txt_qkv = _fused(d, ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"), widths)
    one = {
        "img_attn.proj": "attn.to_out.0",
        "img_mlp.0": "ff.net.0.proj",
        "img_mlp.2": "ff.net.2",
        "img_mod.lin": "norm1.linear",
        "txt_attn.proj": "attn.to_add_out",
        "txt_mlp.0": "ff_context.net.0.proj",
        "txt_mlp.2": "ff_context.net.2",
        "txt_mod.lin": "norm1_context.linear",
    }
    for name, module in one.items():
        yield f"{src}.{name}", [Target("transformer", f"{d}.{module}")]
    for name, targets in (("img_attn.qkv", img_qkv), ("txt_attn.qkv", txt_qkv)):
        if targets:
            yield f"{src}.{name}", targets
    # XLabs trains four LoRAs per double block under these names.
    xlabs = {"qkv_lora1": img_qkv, "qkv_lora2": txt_qkv}
    xlabs |= {"proj_lora1": [Target("transformer", f"{d}.attn.to_out.0")]}
    xlabs |= {"proj_lora2": [Target("transformer", f"{d}.attn.to_add_out")]}
    for name, targets in xlabs.items():
        if targets:
            yield f"{src}.processor.{name}", targets


def _single_block(i: int, widths: dict[str, int]) -> Iterator[tuple[str, list]]:
    s, src = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
    qkv = _fused(s, ("attn.to_q", "attn.to_k", "attn.to_v"), widths)
    linear1 = _fused(s, ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), widths)
    if linear1:
        yield f"{src}.linear1", linear1
    if qkv:
        yield f"{src}.linear1_qkv", qkv  # ComfyUI's name for the q, k, v rows alone
        yield f"{src}.processor.qkv_lora", qkv
    yield f"{src}.linear2", [Target("transformer", f"{s}.proj_out")]
    yield f"{src}.processor.proj_lora", [Target("transformer", f"{s}.proj_out")]
    yield f"{src}.modulation.lin", [Target("transformer", f"{s}.norm.linear")]


def _outer_layers(widths: dict[str, int]) -> Iterator[tuple[str, list]]:
    embed = "time_text_embed"
    one = {
        "img_in": "x_embedder",
        "txt_in": "context_embedder",
        "time_in.in_layer": f"{embed}.timestep_embedder.linear_1",
        "time_in.out_layer": f"{embed}.timestep_embedder.linear_2",
        "vector_in.in_layer": f"{embed}.text_embedder.linear_1",
        "vector_in.out_layer": f"{embed}.text_embedder.linear_2",
        "guidance_in.in_layer": f"{embed}.guidance_embedder.linear_1",
        "guidance_in.out_layer": f"{embed}.guidance_embedder.linear_2",
        "final_layer.linear": "proj_out",
    }
    for name, module in one.items():
        if module in widths:
            yield name, [Target("transformer", module)]
    if "norm_out.linear" in widths:
        half = widths["norm_out.linear"] // 2
        swapped = ((half, 2 * half), (0, half))  # BFL (shift, scale) -> diffusers (scale, shift)
        yield "final_layer.adaLN_modulation.1", [Target("transformer", "norm_out.linear", swapped)]
