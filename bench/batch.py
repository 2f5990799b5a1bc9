"""Batch throughput on Ray: recipes per second for 1, 2 and 4 CPU actors on tiny models.

One local Ray cluster; for each actor count, a fresh pool of warm actors (`engine.batch`),
one warm-up recipe per actor (model building), then a fixed batch of distinct recipes (no
two share a cache entry) through the same driver loop as `render --ray`, the driver saving
the PNGs. Beside it, the same batch in this process without Ray (one thread). From the measured
per-render time (the engine's own total, on the actor; one torch thread per actor, so the
actor count, not the thread count, is what changes) and the driver's overhead per recipe,
it predicts N GPUs, assuming one actor per GPU and renders that do not slow each other:
recipes/s ≈ N / (render time + overhead). On a shared CPU the actors compete for cores, so
the measured speed-up is below that; the GPU line is a prediction, not a measurement.

Batches of every actor count run interleaved, round by round; the fastest round counts.

Run: .venv/bin/python bench/batch.py [--recipes 12] [--size 256] [--steps 8] [--rounds 3]
     [--gpu-render-s 4.89]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
import torch  # noqa: E402

from engine.batch.cluster import ActorPlan  # noqa: E402
from engine.batch.driver import Batch, read_jobs, run_jobs  # noqa: E402
from engine.batch.grouping import Job  # noqa: E402
from engine.batch.pool import WorkerPool  # noqa: E402
from engine.batch.worker import engine_flags  # noqa: E402
from engine.cli import build_parser, engine_from_args  # noqa: E402

ACTOR_COUNTS = (1, 2, 4)
# bench/results/gpu-NVIDIA-H200.md: bf16, 1024², 28 steps (the sampling alone)
H200_RENDER_S = 4.89


def write_recipes(folder: Path, count: int, size: int, steps: int, first_seed: int) -> list[Path]:
    paths = []
    for i in range(count):
        recipe = {
            "prompt": {"prompt": f"a portrait, study {i}", "width": size, "height": size},
            "settings": {"steps": steps, "seed": first_seed + i},
        }
        path = folder / f"r{first_seed + i}.json"
        path.write_text(json.dumps(recipe))
        paths.append(path)
    return paths


def quiet(line: dict) -> None:
    """The JSON lines are not printed here."""


def batch_of(folder: Path, options: argparse.Namespace, round_: int, count: int) -> list[Job]:
    """`count` distinct recipes for one round (seeds never repeat, so nothing is cached)."""
    paths = write_recipes(folder, count, options.size, options.steps, 1000 * round_ + 1)
    jobs, errors = read_jobs(paths)
    assert not errors, errors
    return jobs


def start_pool(args: argparse.Namespace, actors: int, warm: list[Job]) -> tuple[WorkerPool, float]:
    """`actors` warm actors (one torch thread each), each through one warm-up render."""
    start = time.perf_counter()
    pool = WorkerPool(engine_flags(args), ActorPlan(actors, num_gpus=0, num_cpus=1))
    pool.wait_ready()
    summary = run_jobs(pool, Batch(warm[:actors], args.outputs, args.data, quiet))
    assert summary.failures == 0, summary.lines
    return pool, time.perf_counter() - start


def timed(pool: WorkerPool, args: argparse.Namespace, jobs: list[Job]) -> dict:
    summary = run_jobs(pool, Batch(jobs, args.outputs, args.data, quiet))
    assert summary.failures == 0, summary.lines
    renders = [line["report"]["total_ms"] / 1000 for line in summary.lines]
    return {"wall_s": summary.seconds, "render_s": statistics.mean(renders)}


def without_ray(args: argparse.Namespace, jobs: list[Job], warm: list[Job]) -> float:
    """Seconds for the batch in this process: one engine on one thread, PNGs saved."""
    torch.set_num_threads(1)
    engine = engine_from_args(args)
    engine.run(warm[0].recipe)
    start = time.perf_counter()
    for job in jobs:
        engine.run(job.recipe)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", type=int, default=12)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved; the fastest counts")
    parser.add_argument("--gpu-render-s", type=float, default=H200_RENDER_S,
                        help="one render's time on one GPU, for the prediction")  # fmt: skip
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    args = build_parser().parse_args(
        ["render", "x.json", "--tiny", "--device", "cpu", "--data", str(folder / "data"),
         "--outputs", str(folder / "outputs")]
    )  # fmt: skip
    warm = batch_of(folder, options, 0, max(ACTOR_COUNTS))
    rounds = [batch_of(folder, options, r + 1, options.recipes) for r in range(options.rounds)]
    plain = min(without_ray(args, jobs, warm) for jobs in rounds)
    ray.init(num_cpus=sum(ACTOR_COUNTS), include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)  # fmt: skip
    try:
        pools = {n: start_pool(args, n, warm) for n in ACTOR_COUNTS}
        runs: dict[int, list[dict]] = {n: [] for n in ACTOR_COUNTS}
        for jobs in rounds:  # interleaved, so drifting load on a shared machine hits all alike
            for n, (pool, _) in pools.items():
                runs[n].append(timed(pool, args, jobs))
        rows = [
            {"actors": n, "ready_s": pools[n][1], **min(runs[n], key=lambda r: r["wall_s"])}
            for n in ACTOR_COUNTS
        ]
        for pool, _ in pools.values():
            pool.close()
    finally:
        ray.shutdown()
    report(options, options.recipes / plain, rows)


def report(options: argparse.Namespace, plain_per_s: float, rows: list[dict]) -> None:
    cores = os.cpu_count()
    for row in rows:
        row["per_s"] = options.recipes / row["wall_s"]
    print(f"{options.recipes} recipes × fastest of {options.rounds} rounds, tiny models, "
          f"{options.size}², {options.steps} steps, CPU ({cores} cores), one torch thread "
          "per actor")  # fmt: skip
    print(f"without Ray (one process, one thread): {plain_per_s:.2f} recipes/s\n")
    print("| CPU actors | recipes/s | vs 1 actor | render (s, actor) | start + warm-up (s) |")
    print("|---|---|---|---|---|")
    base = rows[0]["per_s"]
    for row in rows:
        print(f"| {row['actors']} | {row['per_s']:.2f} | {row['per_s'] / base:.2f}× "
              f"| {row['render_s']:.3f} | {row['ready_s']:.1f} |")  # fmt: skip
    one = rows[0]
    overhead = max(0.0, one["wall_s"] / options.recipes - one["render_s"])
    print(f"\nDriver overhead per recipe (1 actor: wall / recipes - render): {overhead:.3f} s")
    print("Prediction for N GPUs, one actor per GPU: recipes/s ≈ N / (render + overhead)")
    print(
        "| GPUs | tiny render here | a render of "
        f"{options.gpu_render_s:g} s (H200, bf16, 1024², 28 steps) |"
    )
    print("|---|---|---|")
    for n in (1, 2, 4, 8):
        tiny = n / (one["render_s"] + overhead)
        real = n / (options.gpu_render_s + overhead)
        print(f"| {n} | {tiny:.1f} recipes/s | {real:.2f} recipes/s ({3600 * real:.0f}/h) |")


if __name__ == "__main__":
    main()
