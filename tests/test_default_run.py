"""`labelflip run` with no arguments, as a newcomer runs it: offline, a fresh
model cache, the built-in default config; it writes a report that headless
Chromium renders with its images.

The thread count is pinned (``--threads 1``, as the default picks on a CPU,
and ``OMP_NUM_THREADS=1``), so that the run does not depend on how busy the
machine is: with torch's default of one thread per core, a loaded 2-core
machine made the run 8 times slower (issue 22). The only time limit is the
subprocess guard (``GUARD`` seconds), far above the README's figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_report_browser import DATA_URI, assert_not_blank, render

GUARD = 1800  # seconds: a hung run fails, a slow machine does not


@pytest.mark.slow
def test_default_run_writes_a_report_that_renders(tmp_path):
    env = {
        **os.environ,
        "LABELFLIP_CACHE": str(tmp_path / "cache"),
        "LABELFLIP_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "labelflip.cli", "run", "--no-progress", "--threads", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=GUARD,
    )
    seconds = time.perf_counter() - t
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"default run: {seconds:.0f} s")  # the figure for the README (see -s)
    assert any("1 torch thread (--threads)" in ln for ln in proc.stderr.splitlines())
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("report: ")
    report = tmp_path / lines[-1].removeprefix("report: ")
    assert report.is_file()
    run_dir = report.parents[1]
    assert run_dir.parent == tmp_path / "runs"
    summary = json.loads((report.parent / "summary.json").read_text())
    jobs = summary["jobs"]
    assert [j["attack"] for j in jobs] == ["fgsm"] + ["pgd"] * 6 + [
        "deepfool",
        "cw-l2",
        "labelfool",
        "labelfool",
    ]
    assert all(j["complete"] and j["n"] == 359 for j in jobs)
    assert summary["run"]["model"]["clean_accuracy"] > 0.95
    by_attack = {j["attack"]: j for j in jobs}
    assert by_attack["deepfool"]["success_rate_clean"] >= 0.99
    # label space: LabelFool's targets are perceptually nearer than random ones
    assert [d["name"] for d in summary["distances"]] == ["perceptual", "confusion"]
    space = {j["job_id"]: j["label_space"] for j in jobs}
    lf = space["labelfool-to-labelfool"]
    print({k: (v["flip_distance"]["perceptual"], v["attack_rate"]) for k, v in space.items()})
    for other in ("fgsm-eps0.1", "deepfool-l2", "labelfool-to-random"):
        assert lf["flip_distance"]["perceptual"] < space[other]["flip_distance"]["perceptual"]
    assert lf["attack_rate"] >= space["deepfool-l2"]["attack_rate"]
    # the end-of-run table names every job
    for j in jobs:
        assert j["label"] in proc.stdout
    html = report.read_text(encoding="utf-8")
    assert len(DATA_URI.findall(html)) >= 2 * len(jobs)  # heatmap + gallery per job
    assert "<h2>Label space</h2>" in html
    assert_not_blank(render(report, tmp_path))
    # the model was cached: a second run does not train again
    again = subprocess.run(
        [sys.executable, "-m", "labelflip.cli", "run", "--no-progress", "--no-report"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=GUARD,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training" not in again.stderr
    assert len(list(Path(tmp_path / "runs").iterdir())) == 2
