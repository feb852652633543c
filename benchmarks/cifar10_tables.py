"""The tables of docs/cifar10.md from a finished run's report (its
``report/summary.json``, written by ``labelflip report RUNDIR``): per job the
success, norms, s with its interval, Bowker's test, the top attractor and
the landing entropy; the flips that stay within animals or vehicles against
random landings; the correlation of the flips with the perceptual and
semantic class distances; the two pairs the plan asks about (cat <-> dog,
automobile <-> truck); the white-noise prior; and each job's flip matrix.

    labelflip report runs/cifar10-jpeg-full
    python benchmarks/cifar10_tables.py runs/cifar10-jpeg-full > tables.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PAIRS = [("cat", "dog"), ("automobile", "truck")]
SHORT = {"airplane": "plane", "automobile": "auto"}


def fmt_p(p: float | None) -> str:
    return "–" if p is None else f"{p:.1g}" if p >= 1e-300 else "<1e-300"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f} %"


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def landing_table(jobs: list[dict]) -> str:
    rows = []
    for j in jobs:
        ci = j.get("symmetry_ci") or [None, None]
        s = j.get("symmetry")
        sym = "–" if s is None else f"{s:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"
        top = j.get("top_attractor") or {}
        wn = j.get("white_noise_spearman") or {}
        rows.append([
            j["label"],
            pct(j["success_rate_clean"]),
            j["label_space"]["n_flips"],
            "–" if j.get("median_l2") is None else f"{j['median_l2']:.3g}",
            "–" if j.get("median_linf") is None else f"{j['median_linf']:.3g}",
            sym,
            fmt_p((j.get("bowker") or {}).get("p_value")),
            f"{top.get('name') or '–'} ({pct(top.get('share'))})",
            "–" if j.get("entropy") is None else f"{j['entropy']:.2f}",
            "–" if wn.get("rho") is None else f"{wn['rho']:.2f} (p {fmt_p(wn['p_value'])})",
        ])  # fmt: skip
    header = ["job", "success (clean-correct)", "flips", "median L2", "median L∞",
              "s [95 % CI]", "Bowker p", "top attractor (share)", "entropy",
              "ρ(landings, white noise)"]  # fmt: skip
    return table(header, rows)


def label_space_table(jobs: list[dict]) -> str:
    rows = []
    for j in jobs:
        ls = j["label_space"]
        g = ls.get("within_group") or {}
        corr = ls.get("flip_correlation") or {}

        def rho(name: str, corr: dict = corr) -> str:
            c = corr.get(name) or {}
            return "–" if c.get("rho") is None else f"{c['rho']:.2f} (p {fmt_p(c['p_value'])})"

        rows.append([
            j["label"],
            g.get("n_flips", 0),
            pct(g.get("share")),
            f"{pct(g.get('expected_uniform'))} (p {fmt_p(g.get('p_uniform'))})",
            f"{pct(g.get('expected_margins'))} (p {fmt_p(g.get('p_margins'))})",
            rho("perceptual"),
            rho("semantic"),
        ])  # fmt: skip
    header = ["job", "flips", "within animals / vehicles", "random: uniform (p)",
              "random: landing pull (p)", "ρ(flips, perceptual)", "ρ(flips, semantic)"]  # fmt: skip
    return table(header, rows)


def pair_table(jobs: list[dict], names: list[str]) -> str:
    rows = []
    for j in jobs:
        off = np.asarray(j["flip_matrix"], dtype=np.float64)
        np.fill_diagonal(off, 0)
        cells = [j["label"]]
        for a, b in PAIRS:
            i, k = names.index(a), names.index(b)
            for src, dst in ((i, k), (k, i)):
                n_out, n = off[src].sum(), off[src, dst]
                share = n / n_out if n_out else None
                # rank among the off-diagonal cells: 1 + the cells with more flips
                rank = f"#{int((off > n).sum()) + 1}" if n else "–"
                cells.append(f"{int(n)} ({pct(share)}, {rank})")
        rows.append(cells)
    header = ["job"] + [f"{s} → {d}" for a, b in PAIRS for s, d in ((a, b), (b, a))]
    return table(header, rows)


def matrix_table(job: dict, names: list[str]) -> str:
    short = [SHORT.get(n, n) for n in names]
    rows = [[f"**{short[i]}**", *r] for i, r in enumerate(job["flip_matrix"])]
    return table(["true \\ adversarial", *short], rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    args = p.parse_args()
    sm = json.loads((args.run / "report" / "summary.json").read_text(encoding="utf-8"))
    names = list(sm["run"]["class_names"])
    jobs = [j for j in sm["jobs"] if j["n"]]
    first = jobs[0]
    print(f"Run `{sm['run']['name']}`: {first['n']} test images, clean accuracy "
          f"{pct(first['clean_accuracy'])}, {first['n_clean_correct']} clean-correct.")  # fmt: skip
    print()
    print("## Landings\n")
    print(landing_table(jobs) + "\n")
    print("## Label space\n")
    print(label_space_table(jobs) + "\n")
    print("## cat ↔ dog and automobile ↔ truck\n")
    print("Flips (share of the true class's flips, rank among the 90 off-diagonal cells)\n")
    print(pair_table(jobs, names) + "\n")
    wn = sm.get("white_noise") or {}
    if wn.get("distribution"):
        print(f"## White-noise prior ({wn['n']} images)\n")
        print(table([SHORT.get(n, n) for n in names], [[pct(x) for x in wn["distribution"]]]))
        print()
    for d in sm.get("distances") or []:
        m = np.asarray(d["matrix"], dtype=np.float64)
        np.fill_diagonal(m, np.inf)
        # every class at the smallest distance (the semantic distance has ties)
        nearest = ["/".join(names[k] for k in np.flatnonzero(r == r.min())) for r in m]
        pairs = ", ".join(f"{a} → {b}" for a, b in zip(names, nearest, strict=True))
        print(f"Nearest class under the {d['name']} distance: {pairs}\n")
    print("## Flip matrices (clean-correct samples; diagonal: attack failed)\n")
    for j in jobs:
        print(f"### {j['label']}\n")
        print(matrix_table(j, names) + "\n")


if __name__ == "__main__":
    main()
