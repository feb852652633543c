"""What a run found, in a few sentences for the top of the report: the
strongest attractor, the most asymmetric and the most two-way pair of
classes, how the symmetry ``s`` moves along each sweep, and where targeted
strategies (LabelFool) land against the untargeted attacks.

Every sentence is computed from the typed summary
(:class:`~labelflip.report.schema.RunSummary`). The attractor and pair
findings pool the matrices of the untargeted jobs (every flip counted once
per job); a statistic computed from fewer than
:data:`~labelflip.report.schema.MIN_FLIPS` off-diagonal flips is named as
such instead of being read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from labelflip.report.schema import MIN_FLIPS, Group, JobSummary, RunSummary
from labelflip.report.text import missing

# how the report names a swept setting (x axes, findings)
SETTING_SYMBOLS = {"eps": "ε", "confidence": "κ", "steps": "steps", "k": "k"}
DISTANCE_ORDER = ("perceptual", "semantic", "confusion")


@dataclass(frozen=True)
class Finding:
    """One sentence of the report's "what this run found", on a topic, and
    the jobs or the page section it refers to (the page links them)."""

    topic: str
    text: str
    job_ids: tuple[str, ...] = ()
    section: str | None = None


def setting_label(setting: str | None) -> str:
    """The axis label of a swept setting: ``ε (eps)``, ``steps``; ``sweep
    value`` when unknown."""
    if not setting:
        return "sweep value"
    symbol = SETTING_SYMBOLS.get(setting, setting)
    return setting if symbol == setting else f"{symbol} ({setting})"


def _symbol(setting: str | None) -> str:
    return SETTING_SYMBOLS.get(setting or "", setting or "sweep value")


def _untargeted(summary: RunSummary) -> list[JobSummary]:
    """The jobs whose matrix says where the model sends examples on its own:
    untargeted, not Type I, with records."""
    return [j for j in summary.jobs if not j.targeted and j.kind != "type-i" and j.n > 0]


def _pooled(jobs: Sequence[JobSummary]) -> np.ndarray:
    return np.sum([np.asarray(j.flip_matrix, dtype=np.int64) for j in jobs], axis=0)


def _off(a: np.ndarray) -> np.ndarray:
    return a - np.diag(np.diag(a))


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def attractor(summary: RunSummary) -> Finding | None:
    """The class receiving the largest share of the pooled flips of the
    untargeted jobs, against the share it would get if every example flipped
    to one of the other classes at random, and the largest share in one job."""
    jobs = _untargeted(summary)
    if not jobs:
        return None
    names = summary.run.class_names
    k = len(names)
    off = _off(_pooled(jobs))
    total = int(off.sum())
    if total < MIN_FLIPS or k < 2:
        return Finding(
            "Strongest attractor",
            f"too few flips to say ({total} in the untargeted jobs; at least {MIN_FLIPS} needed).",
        )
    received = off.sum(axis=0)
    c = int(np.argmax(received))
    even = float((off.sum(axis=1).sum() - off[c].sum()) / (k - 1) / total)
    text = (
        f"class {names[c]} receives {_pct(received[c] / total)} of the {total} flips of the "
        f"{len(jobs)} untargeted job(s) (an even spread over the other classes would give it "
        f"{_pct(even)})"
    )
    reliable = [j for j in jobs if not j.few_flips and j.top_attractor.name is not None]
    if reliable:
        top = max(reliable, key=lambda j: j.top_attractor.share)
        text += (
            f"; the largest share in one job: {top.top_attractor.name} with "
            f"{_pct(top.top_attractor.share)} in {top.label}"
        )
        return Finding("Strongest attractor", text + ".", (top.job_id,))
    return Finding("Strongest attractor", text + ".")


def pairs(summary: RunSummary) -> Finding | None:
    """The most asymmetric pair of classes (largest ``|n_ij - n_ji|``) and
    the most two-way pair (largest ``min(n_ij, n_ji)``), pooled over the
    untargeted jobs."""
    jobs = _untargeted(summary)
    if not jobs:
        return None
    names = summary.run.class_names
    a = _off(_pooled(jobs))
    if int(a.sum()) < MIN_FLIPS:
        return None
    upper = np.triu(np.ones_like(a, dtype=bool), 1)
    diff = np.where(upper, np.abs(a - a.T), -1)
    i, j = np.unravel_index(int(np.argmax(diff)), a.shape)
    if a[j, i] > a[i, j]:
        i, j = j, i
    both = np.where(upper, np.minimum(a, a.T), -1)
    p, q = np.unravel_index(int(np.argmax(both)), a.shape)
    text = (
        f"most one-way: {names[i]}→{names[j]} {a[i, j]} times, {names[j]}→{names[i]} "
        f"{a[j, i]} times"
    )
    if both[p, q] > 0:
        text += (
            f"; most two-way: {names[p]}↔{names[q]} ({a[p, q]} and {a[q, p]} flips), "
            "pooled over the untargeted jobs"
        )
    return Finding("Asymmetric pairs", text + ".", section="summary")


def sweeps(summary: RunSummary) -> list[Finding]:
    """Per sweep: ``s`` at each value with enough flips, where it starts,
    peaks and ends, and the values with too few flips."""
    out = []
    for g in summary.groups:
        jobs = [summary.job(i) for i in g.job_ids]
        swept = [j for j in jobs if j.sweep_value is not None and j.n > 0]
        if len(swept) < 2:
            continue
        out.append(_sweep(g, swept))
    return out


def _sweep(g: Group, swept: list[JobSummary]) -> Finding:
    sym = _symbol(g.setting)
    good = [j for j in swept if not j.few_flips and not missing(j.symmetry)]
    few = [j for j in swept if j.few_flips or missing(j.symmetry)]
    if len(good) >= 2:
        first, last = good[0], good[-1]
        peak = max(good, key=lambda j: j.symmetry)
        verb = "rises" if last.symmetry > first.symmetry + 0.05 else "falls"
        if abs(last.symmetry - first.symmetry) <= 0.05:
            verb = "stays near"
        text = (
            f"s {verb} from {first.symmetry:.2f} at {sym} = {first.sweep_value:g} to "
            f"{last.symmetry:.2f} at {sym} = {last.sweep_value:g}"
            if verb != "stays near"
            else f"s stays near {first.symmetry:.2f} from {sym} = {first.sweep_value:g} to "
            f"{last.sweep_value:g}"
        )
        if peak is not first and peak is not last:
            text += f" (highest: {peak.symmetry:.2f} at {sym} = {peak.sweep_value:g})"
    elif good:
        j = good[0]
        text = f"s = {j.symmetry:.2f} at {sym} = {j.sweep_value:g} (the only value with enough"
        text += " flips)"
    else:
        text = "no value has enough flips to read s"
    if few:
        values = ", ".join(f"{j.sweep_value:g}" for j in few)
        text += f"; {sym} = {values}: fewer than {MIN_FLIPS} flips"
    return Finding(f"Sweep {g.group}", text + ".", section="sweeps")


def targeted(summary: RunSummary) -> list[Finding]:
    """For each job with a target strategy (LabelFool, random, ...): the mean
    class distance of its flips against the untargeted jobs', and the share
    of its flips that land where the untargeted attacks most often send the
    same true class."""
    chosen = [j for j in summary.jobs if j.label_space.strategy and j.kind == "type-ii"]
    untargeted = [j for j in _untargeted(summary) if not j.few_flips]
    if not chosen or not untargeted:
        return []
    names = [d.name for d in summary.distances]
    dist = next((d for d in DISTANCE_ORDER if d in names), names[0] if names else None)
    favourite = np.argmax(_off(_pooled(untargeted)), axis=1)  # per true class
    out = []
    for j in chosen:
        a = _off(np.asarray(j.flip_matrix, dtype=np.int64))
        n = int(a.sum())
        if n == 0:
            continue
        same = sum(int(a[i, favourite[i]]) for i in range(a.shape[0])) / n
        parts = []
        if dist is not None:
            mine = j.label_space.flip_distance.get(dist, math.nan)
            theirs = [u.label_space.flip_distance.get(dist, math.nan) for u in untargeted]
            theirs = [t for t in theirs if not missing(t)]
            if not missing(mine) and theirs:
                parts.append(
                    f"its flips land at mean {dist} distance {mine:.3g} (untargeted attacks: "
                    f"{min(theirs):.3g} to {max(theirs):.3g})"
                )
        parts.append(
            f"{_pct(same)} of its {n} flips land in the class the untargeted attacks most "
            "often reach from the same true class"
        )
        out.append(Finding(f"Target strategy: {j.label}", "; ".join(parts) + ".", (j.job_id,)))
    return out


def findings(summary: RunSummary) -> list[Finding]:
    """The run's findings, in the order the report shows them."""
    found = [attractor(summary), pairs(summary), *sweeps(summary), *targeted(summary)]
    return [f for f in found if f is not None]
