"""Time the built-in default run (`labelflip run`) as a newcomer meets it:
a fresh process, an empty model cache (so the digits-cnn is trained first),
offline, with each torch thread count asked for, the counts interleaved.

    python benchmarks/default_run.py --repeat 3 --threads 1 2

For every run: wall seconds and the CPU seconds (user + sys) of the run's
process, read from ``getrusage(RUSAGE_CHILDREN)``, with the 1-minute load
average before and after it, since on a shared machine the wall time says
as much about the neighbours as about labelflip. Prints one line per run and
the median per thread count; ``--json PATH`` keeps the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(threads: int, work: Path, report: bool) -> dict:
    cache, out = work / f"cache-{threads}", work / f"run-{threads}"
    env = {**os.environ, "LABELFLIP_CACHE": str(cache), "LABELFLIP_OFFLINE": "1"}
    env.pop("OMP_NUM_THREADS", None)  # --threads alone decides
    cmd = [sys.executable, "-m", "labelflip.cli", "run", "--no-progress", "--threads",
           str(threads), "--out", str(out)] + ([] if report else ["--no-report"])  # fmt: skip
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"run failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    subprocess.run(["rm", "-rf", str(cache), str(out)], check=True)
    return {
        "threads": threads,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--no-report", action="store_true", help="time the run without its report")
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="labelflip-bench-") as tmp:
        for i in range(args.repeat):
            for threads in args.threads:
                row = {"repeat": i + 1, **one_run(threads, Path(tmp), not args.no_report)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"cpu cores: {os.cpu_count()}")
    for threads in args.threads:
        mine = [r for r in rows if r["threads"] == threads]
        wall = statistics.median(r["wall_s"] for r in mine)
        cpu = statistics.median(r["cpu_s"] for r in mine)
        print(f"--threads {threads}: median of {len(mine)}: {wall:.1f} s wall, {cpu:.1f} s CPU")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
