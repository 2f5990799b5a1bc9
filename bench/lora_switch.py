"""LoRA strength change versus a full reload of the same files, at the real Flux block count.

The transformer has FLUX.1-dev's 19 double + 38 single blocks. At the real width (3072) that
is 12 B parameters, more than a 24 GB CPU machine can hold in fp32, so the width defaults to
4 heads x 128 (512) and says so. A strength change (set_adapters) walks the LoRA layers,
whose number is the real one here; a reload also reads and copies the LoRA tensors, which
grow with width, so the ratio at the real width should be no worse than the one printed.
Weights are zeros (never run); the LoRAs are random rank-16 updates on the
attention projections (two peft files, one Kohya file), read from the OS page cache after
the first load. A fourth file is a LyCORIS LoKr on the 38 double-block attention projections,
which the stack merges into the weights (engine/lora/merged.py): a strength change re-merges
those layers from the kept originals. Figures are medians within one run; absolute times
mean little off the machine that printed them.

Run: .venv/bin/python bench/lora_switch.py [--heads 4] [--files 3] [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import FluxTransformer2DModel
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.lora import LoraStack  # noqa: E402
from engine.models.tiny import build_tiny_clip  # noqa: E402
from engine.recipe import LoraSlot  # noqa: E402

DOUBLE, SINGLE, HEAD_DIM, REAL_HEADS = 19, 38, 128, 24
DOUBLE_ATTN = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj")
DOUBLE_ATTN += ("to_add_out",)
SINGLE_ATTN = ("to_q", "to_k", "to_v")
KOHYA_ATTN = ("img_attn_qkv", "img_attn_proj", "txt_attn_qkv", "txt_attn_proj")
GOAL = 0.05


@dataclass
class Bundle:
    """What LoraStack.apply uses of a FluxBundle."""

    transformer: torch.nn.Module
    clip: torch.nn.Module
    compute_dtype: torch.dtype


def build_transformer(heads: int, device: torch.device, dtype: torch.dtype):
    """Real block count, `heads` x 128 wide, weights zero (they are never run)."""
    with torch.device("meta"):
        model = FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,
            num_layers=DOUBLE,
            num_single_layers=SINGLE,
            attention_head_dim=HEAD_DIM,
            num_attention_heads=heads,
            joint_attention_dim=4096,
            pooled_projection_dim=768,
            guidance_embeds=True,
            axes_dims_rope=(16, 56, 56),
        )
    # Meta parameters take their dtype at once (to_empty keeps it): no fp32 copy on the GPU.
    model = model.to(dtype).to_empty(device=device).eval()
    with torch.no_grad():  # zeros, not leftover memory: the LoKr merge does arithmetic on
        for param in model.parameters():  # these weights, and denormals would slow it down
            param.zero_()
    return model


def peft_file(width: int, rank: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    modules = [f"transformer_blocks.{i}.attn.{m}" for i in range(DOUBLE) for m in DOUBLE_ATTN]
    modules += [
        f"single_transformer_blocks.{i}.attn.{m}" for i in range(SINGLE) for m in SINGLE_ATTN
    ]
    for module in modules:
        out[f"transformer.{module}.lora_A.weight"] = torch.randn(rank, width, generator=g) * 0.01
        out[f"transformer.{module}.lora_B.weight"] = torch.randn(width, rank, generator=g) * 0.01
    return out


def kohya_file(width: int, rank: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(DOUBLE):
        for name in KOHYA_ATTN:
            key = f"lora_unet_double_blocks_{i}_{name}"
            rows = 3 * width if name.endswith("qkv") else width
            out[f"{key}.lora_down.weight"] = torch.randn(rank, width, generator=g) * 0.01
            out[f"{key}.lora_up.weight"] = torch.randn(rows, rank, generator=g) * 0.01
            out[f"{key}.alpha"] = torch.tensor(float(rank) / 2)
    return out


def lokr_file(width: int, rank: int, seed: int) -> dict[str, torch.Tensor]:
    """A LyCORIS LoKr on both attention projections of every double block: w1 (16 x 16)
    whole, w2 = a @ b decomposed, alpha 1 (merged into the weights, not a peft adapter)."""
    g = torch.Generator().manual_seed(seed)
    side = width // 16
    out = {}
    for i in range(DOUBLE):
        for name in ("img_attn_proj", "txt_attn_proj"):
            key = f"lora_unet_double_blocks_{i}_{name}"
            out[f"{key}.lokr_w1"] = torch.randn(16, 16, generator=g) * 0.01
            out[f"{key}.lokr_w2_a"] = torch.randn(side, rank, generator=g) * 0.01
            out[f"{key}.lokr_w2_b"] = torch.randn(rank, side, generator=g) * 0.01
            out[f"{key}.alpha"] = torch.tensor(1.0)
    return out


def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--heads", type=int, default=4, help=f"attention heads (real: {REAL_HEADS})"
    )
    parser.add_argument("--files", type=int, default=4, choices=(2, 3, 4),
                        help="2 peft, + 1 Kohya, + 1 LyCORIS LoKr (merged path)")  # fmt: skip
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (bf16)")
    args = parser.parse_args()
    width = args.heads * HEAD_DIM
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_transformer(args.heads, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    bundle = Bundle(model, build_tiny_clip().to(device, dtype), dtype)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "loras"
        folder.mkdir()
        makers = [peft_file, peft_file, kohya_file, lokr_file][: args.files]
        names = []
        for i, make in enumerate(makers):
            names.append(f"lora_{i}_{make.__name__.split('_')[0]}.safetensors")
            save_file(make(width, args.rank, seed=i), str(folder / names[-1]))
        stack = LoraStack(folder)
        slot_sets = [
            [LoraSlot(file=n, strength_model=s) for n, s in zip(names, strengths, strict=False)]
            for strengths in ([0.5, 0.3, 0.2, 0.6], [0.4, 0.25, 0.3, 0.7])
        ]
        matches = stack.apply(bundle, slot_sets[0], part="transformer")
        flip = iter(range(10**9))

        def change() -> None:
            stack.apply(bundle, slot_sets[next(flip) % 2], part="transformer")

        def reload() -> None:
            stack.unload(bundle)
            stack.apply(bundle, slot_sets[0], part="transformer")

        reads_before = sum(stack.file_reads.values())
        change_s = timed(change, args.runs * 3)
        assert sum(stack.file_reads.values()) == reads_before, "a strength change read a file"
        reload_s = timed(reload, args.runs)
    ratio = change_s / reload_s
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"Flux transformer: {DOUBLE} double + {SINGLE} single blocks (the real count), width "
        f"{width} ({args.heads} heads x {HEAD_DIM}; real: {REAL_HEADS * HEAD_DIM}), "
        f"{params / 1e6:.0f} M params in {str(dtype).removeprefix('torch.')} on {where}"
        + ("" if args.heads == REAL_HEADS else " - reduced width, real block count")
    )
    for match in matches:
        print("  " + match.line())
    print(f"strength change (set_adapters, {len(names)} LoRAs): {change_s * 1e3:8.1f} ms")
    print(f"full reload (unload + read + convert + load):  {reload_s * 1e3:8.1f} ms")
    verdict = "meets" if ratio <= GOAL else "misses"
    print(f"ratio: {ratio:.1%} of a reload ({verdict} the goal of <= {GOAL:.0%})")
    print(
        json.dumps(
            {
                "bench": "lora_switch",
                "double_blocks": DOUBLE,
                "single_blocks": SINGLE,
                "width": width,
                "params": params,
                "loras": len(names),
                "rank": args.rank,
                "lora_layers": sum(m.matched for m in matches),
                "strength_change_ms": round(change_s * 1e3, 2),
                "reload_ms": round(reload_s * 1e3, 2),
                "ratio": round(ratio, 4),
                "goal": GOAL,
                "device": where,
            }
        )
    )


if __name__ == "__main__":
    main()
