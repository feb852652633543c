"""Scaling of ``labelflip run`` with the Ray executor (docs/distributed.md).

Runs one config with the local executor (torch using 1 and 2 threads) and
with the Ray executor on a local Ray instance of 1 and 2 CPUs (one shard per
CPU, each shard's torch using one thread), and, for comparison, 2 CPUs
with 2 CPUs per shard; prints a Markdown table. Every run's records are
checked to equal, bit for bit, those of the local run with as many torch
threads per batch (apart from the measured seconds): torch's float
reductions may differ in the last bit between 1 and 2 threads.

The timed part is :func:`labelflip.run.run` (loading, checks, setup, the
attacks and the store); starting and stopping the Ray instance is shown
apart. The model is trained (and cached) before any timing.

    python benchmarks/ray_scaling.py [benchmarks/ray_scaling.toml] [--repeat 2]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from labelflip.config import load_config
from labelflip.run import prepare, run
from labelflip.run.ray import RayExecutor, RayOptions
from labelflip.store import RunStore

SETTINGS = [
    # (label, executor, driver torch threads, ray CPUs, CPUs per shard)
    ("local, 1 torch thread", "local", 1, 0, 0),
    ("local, 2 torch threads", "local", 2, 0, 0),
    ("ray, 1 worker x 1 thread", "ray", 2, 1, 1),
    ("ray, 2 workers x 1 thread", "ray", 2, 2, 1),
    ("ray, 1 worker x 2 threads", "ray", 2, 2, 2),
]


def records(run_dir: Path) -> dict[str, np.ndarray]:
    with RunStore.open(run_dir) as store:
        return store.records()


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(here / "ray_scaling.toml"))
    ap.add_argument("--repeat", type=int, default=1, help="runs per setting (the best is shown)")
    args = ap.parse_args()

    cfg = load_config(args.config)
    n_samples = len(prepare(cfg).indices)  # trains and caches the model before any timing
    shards = len(cfg.jobs()) * -(-n_samples // cfg.batch_size)
    refs: dict[int, dict[str, np.ndarray]] = {}  # torch threads per batch -> records
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, kind, threads, cpus, per_task in SETTINGS:
            best, start_s, attack_s = float("inf"), float("nan"), float("nan")
            for r in range(args.repeat):
                torch.set_num_threads(threads)
                out = Path(tmp) / f"{kind}-{threads}-{cpus}-{per_task}-{r}"
                if kind == "local":
                    t = time.perf_counter()
                    run(cfg, run_dir=out, progress=False)
                    dt = time.perf_counter() - t
                else:
                    t0 = time.perf_counter()
                    ex = RayExecutor(RayOptions(num_cpus=cpus, cpus_per_task=per_task))
                    ex.start()
                    t = time.perf_counter()
                    run(cfg, run_dir=out, progress=False, executor=ex)
                    dt = time.perf_counter() - t
                    ex.close()
                    start_s = time.perf_counter() - t0 - dt
                rec = records(out)
                seconds = rec.pop("seconds")
                ref = refs.setdefault(threads if kind == "local" else per_task, rec)
                for key in ref:
                    np.testing.assert_array_equal(rec[key], ref[key], err_msg=f"{label}: {key}")
                if dt < best:
                    best, attack_s = dt, float(seconds.sum())
            rows.append((label, best, start_s, attack_s))
            print(f"{label}: {best:.1f} s", file=sys.stderr, flush=True)

    base = rows[0][1]
    ray1 = next(r[1] for r in rows if r[0].startswith("ray, 1 worker x 1"))
    print(
        f"{cfg.name}: {len(cfg.jobs())} jobs x {n_samples} samples, {shards} shards; "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads max; best of {args.repeat}"
    )
    print()
    print(
        "| setting | run() s | vs local 1 thread | vs Ray 1 worker | attack s (sum) "
        "| Ray start+stop s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label, dt, start_s, attack_s in rows:
        start = "-" if start_s != start_s else f"{start_s:.1f}"
        vs_ray = f"{ray1 / dt:.2f}x" if label.startswith("ray") else "-"
        print(f"| {label} | {dt:.1f} | {base / dt:.2f}x | {vs_ray} | {attack_s:.1f} | {start} |")


if __name__ == "__main__":
    main()
