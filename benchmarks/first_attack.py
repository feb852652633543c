"""Seconds from `labelflip run CONFIG` to its first attack (the line
``[1/N] ...``), in a fresh process with an empty model cache, repeated; the
run is killed at that line. Issue 19 asks that `examples/mnist.toml`, whose
model comes from the zoo, start attacking within 30 s of a fresh install.

    LABELFLIP_DATA=../shared/datasets \\
        python benchmarks/first_attack.py examples/mnist.toml --repeat 3
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one(config: Path, work: Path) -> float:
    env = {**os.environ, "LABELFLIP_CACHE": str(work / "cache")}
    cmd = [sys.executable, "-m", "labelflip.cli", "run", str(config), "--out", str(work / "run"),
           "--no-progress"]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seconds = None
    for line in proc.stderr:
        if line.startswith("[1/"):
            seconds = time.perf_counter() - t
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(["rm", "-rf", str(work / "run"), str(work / "cache")], check=True)
    if seconds is None:
        raise SystemExit(f"{config}: the run ended before its first attack")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", type=Path)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for i in range(args.repeat):
            times.append(one(args.config.resolve(), Path(tmp)))
            print(f"run {i + 1}: first attack after {times[-1]:.1f} s "
                  f"(load {os.getloadavg()[0]:.2f})")  # fmt: skip
    print(f"median of {len(times)}: {statistics.median(times):.1f} s")


if __name__ == "__main__":
    main()
