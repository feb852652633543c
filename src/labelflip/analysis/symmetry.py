"""Are label flips symmetric?  Score, Bowker's test and a bootstrap interval.

Semantically close classes are expected to be confused in both directions
(cat <-> dog), while catch-all classes attract flips one way only. The score
and test below quantify which of the two dominates a flip matrix.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from labelflip.analysis import _validate
from labelflip.analysis.flips import flip_matrix
from labelflip.errors import LabelflipError


def _scores(a: np.ndarray) -> np.ndarray:
    """Symmetry score of each ``(K, K)`` matrix in a ``(..., K, K)`` stack."""
    k = a.shape[-1]
    off = a * ~np.eye(k, dtype=bool)
    t = np.swapaxes(off, -1, -2)
    sym = np.abs(off + t).sum(axis=(-2, -1)) / 2
    anti = np.abs(off - t).sum(axis=(-2, -1)) / 2
    total = sym + anti
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (sym - anti) / np.where(total > 0, total, 1), np.nan)


def symmetry_score(A: ArrayLike) -> float:
    """Symmetry of the off-diagonal flips, from 1 (symmetric) to 0 (one-way).

    Following the project plan (adversarial-label-flips-plan): zero the
    diagonal of ``A``, split it into ``A_sym = (A + A^T) / 2`` and
    ``A_anti = (A - A^T) / 2``, take entrywise 1-norms ``|M| = sum |M_ij|`` and

        s = (|A_sym| - |A_anti|) / (|A_sym| + |A_anti|).

    For a non-negative matrix this equals ``sum_{i<j} min(a_ij, a_ji) /
    sum_{i<j} max(a_ij, a_ji)``: 1 when every flip ``i -> j`` is matched by as
    many ``j -> i``, 0 when every pair flips in one direction only. It is
    invariant under relabelling the classes and under scaling ``A``. NaN when
    there are no off-diagonal flips.
    """
    return float(_scores(_validate.square(A)))


@dataclass(frozen=True)
class BowkerResult:
    """Bowker's test of symmetry: statistic, degrees of freedom, p-value."""

    statistic: float
    df: int
    p_value: float


def bowker_test(A: ArrayLike) -> BowkerResult:
    """Bowker's (1948) test of symmetry ``H0: p_ij = p_ji`` for a count matrix.

    Statistic ``sum_{i<j} (n_ij - n_ji)^2 / (n_ij + n_ji)``, asymptotically
    chi-squared with one degree of freedom per pair. Pairs with
    ``n_ij + n_ji = 0`` carry no information and are left out of both the sum
    and the degrees of freedom; ``p = chi2.sf(statistic, df)``. With no
    informative pair (``df = 0``) the statistic is 0 and the p-value is NaN:
    there is nothing to test. ``A`` must hold counts (non-negative whole
    numbers), not rates.
    """
    a = _validate.square(A)
    if np.any(a != np.round(a)):
        raise LabelflipError("bowker_test needs counts (whole numbers), not rates")
    i, j = np.triu_indices(a.shape[0], k=1)
    upper, lower = a[i, j], a[j, i]
    total = upper + lower
    keep = total > 0
    df = int(keep.sum())
    if df == 0:
        return BowkerResult(statistic=0.0, df=0, p_value=float("nan"))
    statistic = float(np.sum((upper[keep] - lower[keep]) ** 2 / total[keep]))
    return BowkerResult(statistic=statistic, df=df, p_value=float(stats.chi2.sf(statistic, df)))


def symmetry_ci(
    true: ArrayLike,
    adv_pred: ArrayLike,
    num_classes: int,
    *,
    mask: ArrayLike | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap confidence interval of :func:`symmetry_score`, centred on the estimate.

    Resamples the (masked) samples with replacement ``n_boot`` times and
    scores the flip matrix of each replicate. Resampling noise makes the two
    counts of every pair look less balanced than they are, so the replicates
    of ``s`` are biased low, often so strongly that the plain percentile
    interval lies entirely below the estimate (and Efron's bias-corrected
    interval, bounded by the replicates, collapses onto their maximum). The
    interval returned keeps the percentile interval's width and asymmetry but
    re-centres it on the estimate: ``[ŝ - (m* - q_lo), ŝ + (q_hi - m*)]``
    clipped to ``[0, 1]``, with ``m*`` the median and ``q_lo``, ``q_hi`` the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the replicates.
    It measures the sampling variability of ``ŝ``; it does not correct the
    small-sample bias of ``ŝ`` itself. Resampling
    ``n`` samples and counting them into the ``K^2`` cells is the same as
    drawing the cell counts from ``Multinomial(n, A / n)``, which is what is
    done, with ``numpy.random.Generator(PCG64(seed))``: vectorised over
    replicates, over the non-zero off-diagonal cells plus one category for
    all the rest, so the cost does not grow with ``n``. Replicates without
    off-diagonal flips (NaN score) are ignored; if all are NaN the result is
    ``(nan, nan)``. The same inputs and seed give the same interval.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 1:
        raise LabelflipError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise LabelflipError(f"level must lie strictly between 0 and 1, got {level!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise LabelflipError(f"seed must be a non-negative integer, got {seed!r}")
    a = flip_matrix(true, adv_pred, num_classes, mask=mask)
    n = int(a.sum())
    # Only the non-zero off-diagonal cells can be drawn; all other samples
    # (the diagonal) form one extra category, drawn last.
    i, j = np.nonzero(a * ~np.eye(a.shape[0], dtype=bool))
    if n == 0 or i.size == 0:
        return (float("nan"), float("nan"))
    counts = a[i, j]
    probs = np.append(counts, n - counts.sum()) / n
    rng = np.random.Generator(np.random.PCG64(seed))
    draws = rng.multinomial(n, probs, size=int(n_boot))[:, :-1].astype(np.float64)
    # Score each replicate as sum_{i<j} min(n_ij, n_ji) / sum_{i<j} max(n_ij, n_ji),
    # which equals the 1-norm definition of symmetry_score for counts.
    k = a.shape[0]
    _, pair = np.unique(np.minimum(i, j) * k + np.maximum(i, j), return_inverse=True)
    upper = np.zeros((draws.shape[0], int(pair.max()) + 1))
    lower = np.zeros_like(upper)
    up = i < j
    upper[:, pair[up]] = draws[:, up]
    lower[:, pair[~up]] = draws[:, ~up]
    top = np.maximum(upper, lower).sum(axis=1)
    scores = np.minimum(upper, lower).sum(axis=1)[top > 0] / top[top > 0]
    if scores.size == 0:
        return (float("nan"), float("nan"))
    point = symmetry_score(a)
    q_lo, mid, q_hi = np.quantile(scores, [(1 - level) / 2, 0.5, (1 + level) / 2])
    low = min(max(point - (mid - q_lo), 0.0), 1.0)
    high = min(max(point + (q_hi - mid), 0.0), 1.0)
    return (float(low), float(high))
