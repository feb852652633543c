"""Where the nearest boundary leads (issue 20): the tables of docs/label-space.md
from a run with one ``boundary-profile`` job and untargeted minimal attacks
(e.g. ``examples/label-space-mnist.toml``).

Not a test: it reads the run directory (nothing is attacked) and prints
Markdown. Over the samples the model classifies correctly:

- the reference profile: the boundary-profile job's distances, each entry
  lowered to the smallest successful adversarial of that class any job of
  the run found (every adversarial of class ``j`` bounds the distance to
  class ``j`` from above), and how often that changed the nearest class;
- per untargeted job: success, median L2 (failures as ∞), the median ratio
  of its L2 to the nearest boundary's distance, and how often its landing is
  the nearest boundary's class (exactly, and within 5 % of the nearest
  distance: :func:`labelflip.analysis.lands_at_nearest`), and how often
  among the samples whose nearest boundary is clearly nearest (relative
  margin at least 10 %);
- the margin between the nearest and the second-nearest boundary
  (:func:`labelflip.analysis.boundary_margin`): its quantiles and the share
  of near ties;
- the class-boundary distance matrix (:func:`labelflip.analysis.class_boundary_matrix`)
  and its Spearman correlation with the run's class distances;
- for a ``best-of`` job, which of its attacks found the kept adversarial.

Usage::

    python benchmarks/label_space.py RUNDIR
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

import labelflip
from labelflip.analysis import (
    boundary_distance_correlation,
    boundary_margin,
    class_boundary_matrix,
    lands_at_nearest,
    nearest_boundary,
    nearest_landing_matrix,
)

TOLERANCE = 0.05
CLEAR = 0.10  # a relative margin at least this: one class is clearly the nearest


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f} %"


def _num(x: float) -> str:
    return "∞" if math.isinf(x) else "–" if math.isnan(x) else f"{x:.3f}"


def _by_sample(rec: dict, n: int) -> dict:
    """Record columns reordered by sample position (0..n-1)."""
    order = np.argsort(rec["sample"])
    assert (rec["sample"][order] == np.arange(n)).all(), "every job needs every sample"
    return {k: v[order] for k, v in rec.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    args = ap.parse_args(argv)
    run = labelflip.open_run(args.run_dir)
    (bp,) = [j for j in run.jobs if j.attack == "boundary-profile"]
    profile = run.profile(bp.job_id)
    n, k = profile.shape
    recs = {j.job_id: _by_sample(run.arrays(j.job_id), n) for j in run.jobs}
    base = recs[bp.job_id]
    true = base["true"]
    clean = base["clean_pred"] == true
    valid = np.ones(n, dtype=bool)
    for r in recs.values():
        valid &= r["valid"].astype(bool)
    keep = clean & valid
    untargeted = [j for j in run.jobs if (recs[j.job_id]["target"] == -1).all()]

    # the reference: every successful adversarial of class j bounds d_j
    ref = profile.copy()
    rows = np.arange(n)
    for j in untargeted:
        r = recs[j.job_id]
        ok = r["success"].astype(bool) & (r["adv_pred"] >= 0)
        cand = np.full(n, np.inf)
        cand[ok] = r["l2"][ok]
        col = np.where(ok, r["adv_pred"], 0)
        ref[rows, col] = np.where(ok, np.minimum(ref[rows, col], cand), ref[rows, col])
    ref[rows, true] = np.inf
    changed = (ref < profile - 1e-12).sum()
    near_p, near = nearest_boundary(profile), nearest_boundary(ref)
    d1 = np.where(near >= 0, ref.min(axis=1), np.nan)

    print(f"run: {run.path}  samples: {n}, clean-correct and valid: {int(keep.sum())}\n")
    print(
        f"Reference profile: {bp.label}; {int(changed)} of {n * (k - 1)} entries lowered by "
        "another job's adversarial; the nearest class changed for "
        f"{int((near_p != near)[keep].sum())} of {int(keep.sum())} samples.\n"
    )

    rel_all = boundary_margin(ref, relative=True)
    clear = rel_all >= CLEAR
    print("| job | success | median L2 (failure = ∞) | L2 / nearest (median) | lands at the "
          f"nearest | within {TOLERANCE:.0%} | at the nearest, margin ≥ {CLEAR:.0%} |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for j in untargeted:
        r = recs[j.job_id]
        ok = r["success"].astype(bool)[keep]
        l2 = np.where(ok, r["l2"][keep], np.inf)
        ratio = l2 / d1[keep]
        succ = keep & r["success"].astype(bool)
        exact = lands_at_nearest(ref[succ], r["adv_pred"][succ])
        loose = lands_at_nearest(ref[succ], r["adv_pred"][succ], tolerance=TOLERANCE)
        wide = succ & clear
        at_wide = lands_at_nearest(ref[wide], r["adv_pred"][wide])
        print(
            f"| {j.label} | {ok.mean():.3f} | {_num(float(np.median(l2)))} | "
            f"{_num(float(np.median(ratio)))} | {_pct(exact.mean())} | {_pct(loose.mean())} | "
            f"{_pct(at_wide.mean())} ({int(wide.sum())}) |"
        )

    rel = boundary_margin(ref[keep], relative=True)
    absolute = boundary_margin(ref[keep])
    rel, absolute = rel[~np.isnan(rel)], absolute[~np.isnan(absolute)]
    qs = (0.1, 0.25, 0.5, 0.75, 0.9)
    print("\nMargin between the nearest and the second-nearest boundary (clean-correct samples):\n")
    print("| | " + " | ".join(f"q{int(100 * q)}" for q in qs) + " | < 1 % | < 5 % | < 10 % |")
    print("|---|" + "---:|" * (len(qs) + 3))
    print(
        "| relative (d2 - d1) / d1 | "
        + " | ".join(_num(float(np.quantile(rel, q))) for q in qs)
        + " | "
        + " | ".join(_pct(float(np.mean(rel < t))) for t in (0.01, 0.05, 0.1))
        + " |"
    )
    print(
        "| absolute d2 - d1 (L2) | "
        + " | ".join(_num(float(np.quantile(absolute, q))) for q in qs)
        + " | | | |"
    )

    names = run.class_names
    B = class_boundary_matrix(ref, true, keep)
    print("\nClass-boundary distance matrix: median L2 from class i (row) to class j:\n")
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * k)
    for i in range(k):
        cells = ["" if i == j else _num(float(B[i, j])) for j in range(k)]
        print(f"| **{names[i]}** | " + " | ".join(cells) + " |")
    L = nearest_landing_matrix(ref, true, keep)
    pairs = sorted((int(L[i, j]), i, j) for i in range(k) for j in range(k) if i != j)[::-1]
    top = ", ".join(f"{names[i]}→{names[j]} {c}" for c, i, j in pairs[:8] if c)
    print(f"\nMost frequent nearest boundaries (true → nearest, samples): {top}.")
    # the nearest class of each true class under B (the diagonal is NaN)
    near_of = {i: names[int(np.nanargmin(B[i]))] for i in range(k) if not np.isnan(B[i]).all()}
    print("Nearest class by the median: " + ", ".join(
        f"{names[i]}→{c}" for i, c in near_of.items()) + ".")  # fmt: skip
    for d in run.summary.distances:
        res, m = boundary_distance_correlation(B, np.asarray(d.matrix))
        print(
            f"Spearman rho with the {d.name} distance: {res.rho:.3f} "
            f"(p = {res.p_value:.2g}, {m} class pairs)."
        )

    for j in run.jobs:
        if j.attack != "best-of":
            continue
        p = run.profile(j.job_id)
        inner = j.settings.get("attacks") or ["deepfool", "superdeepfool", "ddn", "fmn"]
        finite = np.isfinite(p).any(axis=1)
        which = np.where(finite, np.argmin(np.where(np.isnan(p), np.inf, p), axis=1), -1)[keep]
        counts = ", ".join(f"{a} {int((which == i).sum())}" for i, a in enumerate(inner))
        print(f"\n{j.label}: the kept adversarial was found by {counts} (of {int(keep.sum())}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
