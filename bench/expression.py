"""Expression editor benchmark: the five LivePortrait networks at their real sizes (random
weights, the same classes that load people's files) on a 1024² portrait.

Prints the first (uncached) edit — detect, crop, motion, appearance, then the edit — next to
a slider move (keypoints -> stitching -> warp -> generator -> paste-back, what the studio
re-runs), each split by part, and the peak memory. Goal on an H100: a slider move <= 50 ms.
On a CPU only the ratio and the split mean anything.

Run: .venv/bin/python bench/expression.py [--size 1024] [--moves 10] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.expression.crop import find_face, plan_crop  # noqa: E402
from engine.expression.editor import EditParams, apply_stitching, target_keypoints  # noqa: E402
from engine.expression.keypoints import refine_motion, source_keypoints  # noqa: E402
from engine.expression.networks import (  # noqa: E402
    REAL_CONFIG,
    TINY_CONFIG,
    build_networks,
    extract_features,
    motion_raw,
    stitching_delta,
)
from engine.expression.paste import mask_template, paste_face  # noqa: E402
from engine.expression.prepare import detect_faces, face_input, frame_uint8  # noqa: E402
from engine.faces.mtcnn import MtcnnFaceDetector  # noqa: E402
from engine.models.precision import pick_device  # noqa: E402
from engine.recipe import ExpressionParams  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "expression.json"


class Clock:
    """Wall time per named part, with the device synchronised around each."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.parts: dict[str, float] = {}

    def __call__(self, name: str, work: Callable[[], Any]) -> Any:
        self._sync()
        start = time.perf_counter()
        value = work()
        self._sync()
        self.parts[name] = self.parts.get(name, 0.0) + (time.perf_counter() - start) * 1000
        return value

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def portrait(size: int) -> torch.Tensor:
    """skimage's astronaut (a real face) at size², (3, S, S) in [0, 1]."""
    from skimage import data

    picture = Image.fromarray(data.astronaut()).resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.asarray(picture, np.float32) / 255).permute(2, 0, 1)


def first_edit(nets: Any, image: torch.Tensor, edit: EditParams, mask: torch.Tensor) -> dict:
    """Everything an uncached edit does, part by part."""
    clock = Clock(image.device)
    detector = MtcnnFaceDetector()
    frame = clock("to uint8", lambda: frame_uint8(image))
    boxes = clock("detect (MTCNN)", lambda: detect_faces(detector, frame))
    box = find_face(boxes, frame.shape[1], frame.shape[0], "the portrait")
    plan = plan_crop(box, 1.7, frame.shape[1], frame.shape[0])
    face = clock("crop + resize", lambda: face_input(frame, plan, image.device))
    info = clock("motion extractor", lambda: refine_motion(motion_raw(nets, face)))
    features = clock("appearance features", lambda: extract_features(nets, face).float())
    x_s = source_keypoints(info)
    move = slider_move(nets, image, (plan, info, features, x_s), edit, mask)
    return {"parts": {**clock.parts, **move["parts"]}, "prep": (plan, info, features, x_s)}


def slider_move(nets: Any, image: torch.Tensor, prep: tuple, edit: EditParams, mask: Any) -> dict:
    """What a slider move runs, part by part (the studio's expression stage)."""
    plan, info, features, x_s = prep
    clock = Clock(image.device)
    x_d = clock("keypoints", lambda: target_keypoints(info, edit))
    delta = clock("stitching", lambda: stitching_delta(nets, x_s, x_d).float())
    x_d = apply_stitching(x_s, x_d, delta)
    warped = clock("warping module", lambda: nets.warping(features, kp_driving=x_d, kp_source=x_s))
    face = clock("SPADE generator", lambda: nets.spade(warped["out"])[0].float())
    clock("paste-back", lambda: paste_face(image, face, plan, mask))
    return {"parts": clock.parts}


def run(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    config = TINY_CONFIG if args.tiny else REAL_CONFIG
    nets = build_networks(config, seed=0, device=device)
    image, mask = portrait(args.size).to(device), mask_template().to(device)
    autocast = torch.autocast(device.type, torch.float16, enabled=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), autocast:
        first_edit(nets, image, _edit(0.0), mask)  # warm-up: kernels, allocator, MTCNN
        first = first_edit(nets, image, _edit(0.5), mask)
        moves = [slider_move(nets, image, first["prep"], _edit(0.1 * i), mask)
                 for i in range(args.moves)]  # fmt: skip
    move_total = statistics.median(sum(m["parts"].values()) for m in moves)
    split = {k: statistics.median(m["parts"][k] for m in moves) for k in moves[0]["parts"]}
    return {
        "device": _device_name(device),
        "networks": "tiny" if args.tiny else "real sizes (random weights)",
        "size": args.size,
        "first_edit_ms": round(sum(first["parts"].values()), 2),
        "first_edit_parts_ms": {k: round(v, 2) for k, v in first["parts"].items()},
        "slider_move_ms": round(move_total, 2),
        "slider_move_parts_ms": {k: round(v, 2) for k, v in split.items()},
        "first_over_move": round(sum(first["parts"].values()) / move_total, 2),
        "peak_memory_gb": _peak_gb(device),
    }


def _edit(smile: float) -> EditParams:
    return EditParams.from_recipe(ExpressionParams(smile=smile, aaa=20 * smile, blink=-4))


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def _peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 1e9, 3)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)  # process RSS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--moves", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="tiny networks (a smoke run)")
    figures = run(parser.parse_args())
    print(f"{figures['device']}, {figures['networks']}, {figures['size']}²")
    for name, ms in figures["first_edit_parts_ms"].items():
        move = figures["slider_move_parts_ms"].get(name)
        print(
            f"  {name:<22} first {ms:>10.1f} ms   move {'' if move is None else f'{move:.1f} ms'}"
        )
    print(f"  first edit {figures['first_edit_ms']:.1f} ms · slider move "
          f"{figures['slider_move_ms']:.1f} ms · peak {figures['peak_memory_gb']} GB")  # fmt: skip
    print(json.dumps(figures))  # the last line: the summary bench/gpu.sh collects
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
