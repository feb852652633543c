"""The class-boundary distances of a run's ``boundary-profile`` jobs (issue
20): each job's profile (``RUNDIR/profiles/<job>.npy``, one row per sample
position) read with :mod:`labelflip.analysis.boundary` into a
:class:`~labelflip.report.schema.Boundary` summary."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelflip.analysis import (
    boundary_distance_correlation,
    boundary_margin,
    class_boundary_matrix,
    nearest_landing_rate,
)
from labelflip.report.schema import Boundary, JobSummary, RunSummary
from labelflip.report.text import format_num, format_p, format_pct, missing
from labelflip.store import Job, RunDir

PROFILE_ATTACK = "boundary-profile"
NEAR_TIE = 0.05  # a relative margin below this: the nearest class is nearly tied


def _rows(profile: np.ndarray, rec: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The profile rows of ``rec``'s samples and which of them exist."""
    sample = np.asarray(rec["sample"], dtype=np.int64)
    have = sample < len(profile)
    rows = np.full((len(sample), profile.shape[1]), np.nan)
    rows[have] = profile[sample[have]]
    return rows, have & ~np.isnan(rows).any(axis=1)


def boundaries(
    run_dir: str | Path,
    jobs: Sequence[Job],
    summaries: Sequence[JobSummary],
    records: Sequence[Mapping[str, np.ndarray]],
    distances: Mapping[str, np.ndarray],
) -> tuple[Boundary, ...] | None:
    """A :class:`Boundary` per boundary-profile job with a profile (``None``
    when there is none); ``records``: each job's valid records."""
    rd = RunDir(run_dir)
    out = []
    for job, rec in zip(jobs, records, strict=True):
        if job.attack != PROFILE_ATTACK:
            continue
        profile = rd.load_profile(job.job_id)
        if profile is None or profile.ndim != 2 or len(rec["sample"]) == 0:
            continue
        rows, ok = _rows(profile, rec)
        clean = ok & (rec["clean_pred"] == rec["true"])
        k = profile.shape[1]
        if np.any(np.asarray(rec["true"])[clean] >= k):
            continue  # not a single-label profile of these classes
        matrix = class_boundary_matrix(rows, rec["true"], clean)
        margin = boundary_margin(rows[clean], relative=True)
        margin = margin[~np.isnan(margin)]
        landing = {}
        by_sample = {int(s): i for i, s in enumerate(rec["sample"])}
        for other, summary, orec in zip(jobs, summaries, records, strict=True):
            if other is job or summary.kind != "type-ii" or summary.targeted:
                continue
            idx = np.array([by_sample.get(int(s), -1) for s in orec["sample"]], dtype=np.int64)
            here = idx >= 0
            sub = np.where(here[:, None], rows[np.maximum(idx, 0)], np.nan)
            counted = here & clean[np.maximum(idx, 0)] & np.asarray(orec["success"], dtype=bool)
            landing[other.job_id] = nearest_landing_rate(
                sub[counted], np.asarray(orec["adv_pred"])[counted], np.ones(counted.sum(), bool)
            )
        out.append(
            Boundary(
                job_id=job.job_id,
                label=job.label or job.job_id,
                norm=str(job.settings.get("norm", "l2")),
                n=int(clean.sum()),
                matrix=matrix,
                margin=float(np.median(margin)) if margin.size else math.nan,
                near_ties=float(np.mean(margin < NEAR_TIE)) if margin.size else math.nan,
                landing=landing,
                correlation={
                    name: boundary_distance_correlation(matrix, d)[0]
                    for name, d in distances.items()
                    if np.shape(d) == matrix.shape
                },
            )
        )
    return tuple(out) or None


def boundary_html(
    summary: RunSummary,
    figures: Mapping[str, Any],
    table: Callable[..., str],
    img: Callable[..., str],
) -> str:
    """The Label space subsection of each boundary-profile job: what was
    measured, where the untargeted jobs land, the correlation with the run's
    class distances and the heatmap (``figures["boundary:<job>"]``);
    ``table`` and ``img`` are the page's table and figure writers."""
    labels = {j.job_id: j.label for j in summary.jobs}
    parts = []
    for b in summary.boundaries or ():
        rho = "; ".join(
            f"Spearman rho with the {name} distance {c.rho:.2f} (p = {format_p(c.p_value)})"
            for name, c in b.correlation.items()
            if not missing(c.rho)
        )
        note = (
            f"For each of the {b.n} clean-correct samples, a targeted minimal attack toward "
            "every other class measured the distance to that class's boundary. Row i, column "
            f"j: the median {b.norm} distance from class i to the boundary of class j (–: not "
            "reached for at least half). Median relative margin between the nearest and the "
            f"second-nearest boundary {format_num(b.margin)}; samples whose two nearest "
            f"boundaries lie within {NEAR_TIE:.0%} of each other: {format_pct(b.near_ties)}"
            + (f". {rho}" if rho else "")
            + ". The table: how often each untargeted job's successful clean-correct examples "
            "land in the class of their nearest boundary."
        )
        parts.append(f"<h3>Class boundaries: {html.escape(b.label)}</h3>")
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
        rows = [[labels.get(j, j), format_pct(r)] for j, r in b.landing.items()]
        if rows:
            parts.append(table(["job", "lands at the nearest boundary"], rows, numeric=(1,)))
        png = figures.get(f"boundary:{b.job_id}")
        if png is not None:
            parts.append(img(png, f"{b.label} class-boundary distance matrix"))
    return "".join(parts)
