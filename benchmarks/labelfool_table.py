"""The LabelFool tables of docs/label-space.md from a finished run's report
(``report/summary.json``, e.g. of ``examples/labelfool-cifar10-jpeg.toml``):
per job its target strategy, attack rate (clean-correct samples whose label
flipped), reach (targeted jobs: share that landed on the target), the flips'
mean class distance under each of the run's distances, LabelFool's ``‖Δ‖``
and the median L2; then the untargeted jobs' Spearman correlations.

    labelflip report runs/labelfool-cifar10-jpeg
    python benchmarks/labelfool_table.py runs/labelfool-cifar10-jpeg
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    args = p.parse_args()
    sm = json.loads((args.run / "report" / "summary.json").read_text(encoding="utf-8"))
    names = [d["name"] for d in sm["distances"]]
    jobs = [j for j in sm["jobs"] if j["n"]]
    print(f"{jobs[0]['n']} images, {jobs[0]['n_clean_correct']} clean-correct\n")
    header = ["job", "target", "attack rate", "reach", *[f"mean {n}" for n in names],
              "‖Δ‖", "median L2"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for j in jobs:
        ls = j["label_space"]
        target = ls["strategy"] or "–"
        if ls.get("distance_used"):
            target += f" ({ls['distance_used']})"
        reach = f"{j['success_rate_clean'] * 100:.1f} %" if j["targeted"] else "–"
        dist = [f"{ls['flip_distance'][n]:.4g}" for n in names]
        print(f"| {j['label']} | {target} | {ls['attack_rate'] * 100:.1f} % | {reach} | "
              + " | ".join(dist)
              + f" | {ls['mean_sq_perturbation']:.3g} | {j['median_l2']:.4g} |")  # fmt: skip
    print()
    for j in jobs:
        corr = j["label_space"].get("flip_correlation") or {}
        if corr:
            cells = ", ".join(
                f"{n} ρ = {c['rho']:+.2f} (p = {c['p_value']:.1g})"
                for n, c in corr.items()
                if c.get("rho") is not None
            )
            print(f"{j['label']}: {cells}")


if __name__ == "__main__":
    main()
