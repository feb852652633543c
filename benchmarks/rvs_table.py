"""The tables of docs/robust-vs-standard.md from two finished runs of the
same attacks (their reports' summary.json): per job and run, the success
rate on clean-correct samples, the median norms, s with its interval, the
top attractor and its share, the landing entropy, and the Spearman
correlation of the flip counts with the perceptual class distance.

    python benchmarks/rvs_table.py runs/rvs-std runs/rvs-fgsm-rs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def summary(run: Path) -> dict:
    return json.loads((run / "report" / "summary.json").read_text(encoding="utf-8"))


def row(job: dict) -> str:
    ci = job.get("symmetry_ci") or [None, None]
    s = job.get("symmetry")
    sym = "–" if s is None else f"{s:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"
    top = job.get("top_attractor") or {}
    corr = ((job.get("label_space") or {}).get("flip_correlation") or {}).get("perceptual") or {}
    rho = "–" if corr.get("rho") is None else f"{corr['rho']:.2f} (p {corr['p_value']:.1g})"
    flips = (job.get("label_space") or {}).get("n_flips")
    ent = job.get("entropy")
    return (
        f"{job['success_rate_clean'] * 100:.1f} % | {flips} | {job['median_l2']:.3g} | "
        f"{sym} | {top.get('name', '–')} ({top.get('share', 0) * 100:.1f} %) | "
        f"{'–' if ent is None else f'{ent:.2f}'} | {rho}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    args = p.parse_args()
    sums = [summary(r) for r in args.runs]
    columns = ["job", "run", "success (clean)", "flips", "median L2", "s [95 % CI]",
               "top attractor", "entropy", "ρ(flips, perceptual)"]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for job in sums[0]["jobs"]:
        for run, sm in zip(args.runs, sums, strict=True):
            match = [j for j in sm["jobs"] if j["job_id"] == job["job_id"]]
            if match:
                print(f"| {job['label']} | {run.name} | {row(match[0])} |")
    for run, sm in zip(args.runs, sums, strict=True):
        jobs = sm["jobs"]
        print(f"{run.name}: clean accuracy {jobs[0]['clean_accuracy'] * 100:.2f} % "
              f"({jobs[0]['n']} samples)")  # fmt: skip


if __name__ == "__main__":
    main()
