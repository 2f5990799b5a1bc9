"""One Markdown table of every GPU figure that bench/gpu.sh collected, for BENCHMARKS.md.

Reads <dir>/{flux_speed,studio_memory,regrade,lora_switch,expression,refine,identity,
upscale}.json
(flux_speed.partial.json when the run was cut short), prints the table and writes it to
<dir>/gpu-<GPU name>.md.
Run: python bench/gpu_table.py bench/results
"""

from __future__ import annotations

import datetime
import json
import re
import sys
from pathlib import Path


def load(folder: Path, name: str) -> dict | None:
    for candidate in (f"{name}.json", f"{name}.partial.json"):
        try:
            return json.loads((folder / candidate).read_text())
        except (OSError, ValueError):
            continue
    return None


def num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def flux_rows(flux: dict) -> list[str]:
    steps = flux["setup"]["steps"]
    rows = [
        f"| variant | s/step | {steps} steps (s) | warm-up (s) | peak (GB) | weights (GB) | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in flux["results"]:
        if r["error"]:
            rows.append(f"| {r['variant']} | | | | | | {r['error']} |")
            continue
        hits = f"hits {r['hits']}/{r['hits'] + r['misses']}" if r["hits"] is not None else ""
        per_step = "—" if r["variant"] == "vae" else f"{r['s_per_step']:.3f}"
        total = f"{r['total_s']:.2f}" + (" (one decode)" if r["variant"] == "vae" else "")
        rows.append(
            f"| {r['variant']} | {per_step} | {total} | {num(r['warmup_s'], 1)} | "
            f"{num(r['peak_gb'])} | {num(r['weights_gb'])} | {hits} |"
        )
    return rows


def memory_rows(memory: dict) -> list[str]:
    rows = [
        "| plan | peak (GB) | between renders (GB) | encode (s) | decode (s) |",
        "|---|---|---|---|---|",
    ]
    for r in memory["results"]:
        rows.append(
            f"| {r['plan']} | {r['peak_gb']:.2f} | {r['idle_gb']:.2f} | "
            f"{r['encode_s']:.2f} | {r['decode_s']:.2f} |"
        )
    return rows


def other_rows(
    regrade: dict | None,
    lora: dict | None,
    face: dict | None = None,
    refine: dict | None = None,
    upscale: dict | None = None,
    identity: dict | None = None,
) -> list[str]:
    rows = ["| benchmark | figure |", "|---|---|"]
    if face:
        rows.append(
            f"| Expression slider move, {face['size']}² | {face['slider_move_ms']:.1f} ms "
            f"(first edit {face['first_edit_ms']:.0f} ms, peak {face['peak_memory_gb']} GB) |"
        )
    if refine:
        rows.append(
            f"| Refine tab (face, 2 eyes, 2 hands), {refine['size']}², {refine['steps']} steps | "
            f"{refine['tab_s']:.2f} s (one-region change {refine['change']['s']:.2f} s, "
            f"peak {refine['peak_memory_gb']:.1f} GB) |"
        )
    if identity:
        rows.append(identity_row(identity))
    if upscale:
        rows.append(upscale_row(upscale))
    if regrade and "cuda" in regrade:
        gpu, cpu = regrade["cuda"], regrade["cpu"]
        rows.append(f"| colour re-grade {regrade['size']}² (GPU) | {gpu['regrade_ms']:.1f} ms |")
        rows.append(f"| colour first grade (GPU) | {gpu['first_ms']:.0f} ms |")
        rows.append(f"| PIL + pillow-lut chain (host CPU) | {cpu['pil_ms']:.0f} ms |")
    if lora:
        rows.append(
            f"| LoRA strength change, {lora['loras']} LoRAs, width {lora['width']} | "
            f"{lora['strength_change_ms']:.1f} ms vs reload {lora['reload_ms']:.0f} ms "
            f"({lora['ratio']:.1%}) |"
        )
    return rows


def identity_row(ident: dict) -> str:
    """PuLID and the pose ControlNet per step, next to the plain Flux step."""
    step, ratios = ident["step_s"], ident["ratios"]
    return (
        f"| Identity per step, {ident['size']}², PuLID + pose ControlNet "
        f"({ident['architecture']['controlnet']}) | plain {step['plain']:.3f} s, PuLID "
        f"{step['pulid']:.3f} s ({ratios['pulid/plain']:.2f}×), ControlNet "
        f"{step['controlnet']:.3f} s ({ratios['controlnet/plain']:.2f}×), both "
        f"{step['both']:.3f} s ({ratios['both/plain']:.2f}×: +{ident['added']:.0%}) |"
    )


def upscale_row(up: dict) -> str:
    """Upscale 1's parts next to one untiled img2img of the target."""
    parts, (width, height) = up["parts"], up["target"]
    return (
        f"| Upscale 1 {up['size']}² → {width}×{height}, {up['redraw_jobs']['count']} tiles of "
        f"{up['tile']} + {up['seam_jobs']['count']} {up['seam_fix']} seams, {up['steps']} steps "
        f"at {up['denoise']:g} | model upscale {parts['model_upscale']['s']:.2f} s, tiles "
        f"{parts['tiles']['s']:.2f} s, seams {parts['seams']['s']:.2f} s vs untiled "
        f"{parts['untiled']['s']:.2f} s (tiles / untiled {up['ratios']['tiles/untiled']:.2f}, "
        f"estimate {up['estimate']['ratios']['tiles/untiled']:.2f}; peak "
        f"{up['peak_memory_gb']:.1f} GB) |"
    )


def table(folder: Path) -> tuple[str, str]:
    flux = load(folder, "flux_speed")
    memory = load(folder, "studio_memory")
    device = (flux or memory or {}).get("device", "unknown GPU")
    lines = [f"GPU: {device} · date: {datetime.date.today().isoformat()}", ""]
    if flux:
        setup = flux["setup"]
        lines += [
            f"Flux speed: {setup['double']} double + {setup['single']} single blocks, "
            f"{setup['size']}², {setup['steps']} steps, torch {flux['torch']}, "
            f"{flux['attention']}",
            "",
            *flux_rows(flux),
            "",
        ]
    if memory:
        lines += [f"Warm studio memory at {memory['size']}²:", "", *memory_rows(memory), ""]
    lines += other_rows(
        load(folder, "regrade"),
        load(folder, "lora_switch"),
        load(folder, "expression"),
        load(folder, "refine"),
        load(folder, "upscale"),
        load(folder, "identity"),
    )
    return device, "\n".join(lines) + "\n"


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
    device, text = table(folder)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-") or "gpu"
    (folder / f"gpu-{slug}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
