"""Do flips stay within a group of classes (animals, vehicles)?

The plan's CIFAR-10 question: do animals flip to animals and vehicles to
vehicles more often than random landings would? :func:`within_group_flips`
counts the off-diagonal flips of a flip matrix whose true and adversarial
class share a group and sets the count against two nulls, both conditional
on how many flips leave each true class (the row totals ``n_i``):

- **uniform**: a flip from class ``i`` lands in each of the other ``K - 1``
  classes with equal probability, so it stays in ``i``'s group with
  probability ``p_i = (|G(i)| - 1) / (K - 1)``;
- **margins** (quasi-independence): a flip from ``i`` lands in ``j != i``
  with probability proportional to ``b_j``, where ``m_ij = a_i b_j`` for
  ``i != j`` is the quasi-independence model of the off-diagonal cells fitted
  to the matrix's row and column totals by iterative proportional fitting
  (Bishop, Fienberg & Holland 1975, ch. 5). This null keeps every class's
  pull as a landing class (attractors, catch-all classes) and asks whether
  the groups add anything beyond it.

Under either null the within-group count is a sum of independent
``Binomial(n_i, p_i)``; its exact distribution (the convolution of the rows'
binomial laws) gives a one-sided p-value for "more flips stay within their
group than the null expects".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from labelflip.analysis import _validate
from labelflip.errors import LabelflipError


@dataclass(frozen=True)
class GroupShare:
    """Flips that stay within their true class's group, and two nulls.

    ``share = n_within / n_flips``; ``expected_uniform`` and
    ``expected_margins`` are the shares the two nulls expect; ``p_uniform``
    and ``p_margins`` the one-sided p-values ``P(N >= n_within)`` under them.
    All shares and p-values are NaN when there are no off-diagonal flips."""

    n_flips: int
    n_within: int
    share: float
    expected_uniform: float
    p_uniform: float
    expected_margins: float
    p_margins: float


def group_ids(groups: Sequence[object]) -> np.ndarray:
    """Integer group ids (first appearance order) for per-class group labels,
    e.g. ``["animal", "vehicle", "animal"] -> [0, 1, 0]``."""
    ids: dict[object, int] = {}
    return np.asarray([ids.setdefault(g, len(ids)) for g in groups], dtype=np.int64)


def quasi_independence(A: ArrayLike, *, tol: float = 1e-10, max_iter: int = 5_000) -> np.ndarray:
    """The quasi-independence fit ``m_ij = a_i b_j`` (``i != j``, ``m_ii = 0``)
    of the off-diagonal cells of ``A``: the row and column totals of ``m``
    equal those of ``A`` without its diagonal. Fitted by iterative
    proportional fitting (alternately scaling rows and columns) until the
    totals match to ``tol`` relative to the number of flips, or ``max_iter``
    rounds (sparse matrices whose fit lies on the boundary converge slowly
    towards it; the last iterate is returned)."""
    a = _validate.square(A).astype(np.float64)
    k = a.shape[0]
    off = ~np.eye(k, dtype=bool)
    a = np.where(off, a, 0.0)
    rows, cols, total = a.sum(axis=1), a.sum(axis=0), a.sum()
    m = off.astype(np.float64)
    m[rows == 0, :] = 0.0
    m[:, cols == 0] = 0.0
    if total == 0:
        return m
    for _ in range(max_iter):
        r = m.sum(axis=1)
        m *= np.divide(rows, r, out=np.zeros(k), where=r > 0)[:, None]
        c = m.sum(axis=0)
        m *= np.divide(cols, c, out=np.zeros(k), where=c > 0)[None, :]
        if np.abs(m.sum(axis=1) - rows).sum() <= tol * total:
            break
    return m


def _upper_tail(n: np.ndarray, p: np.ndarray, observed: int) -> float:
    """``P(sum_i Binomial(n_i, p_i) >= observed)``, exactly (convolution)."""
    pmf = np.ones(1)
    for n_i, p_i in zip(n, p, strict=True):
        if n_i > 0:
            pmf = np.convolve(pmf, stats.binom.pmf(np.arange(n_i + 1), n_i, p_i))
    return float(min(1.0, pmf[observed:].sum()))


def within_group_flips(A: ArrayLike, groups: ArrayLike) -> GroupShare:
    """Share of the off-diagonal flips of ``A`` (rows: true class, columns:
    landing class) whose landing class is in the true class's group, against
    the uniform and the margins (quasi-independence) nulls of the module
    docstring. ``groups[i]`` is class ``i``'s group (any labels; equal labels
    form a group)."""
    a = _validate.square(A).astype(np.float64)
    k = a.shape[0]
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != k:
        raise LabelflipError(f"groups must list one group per class ({k}), got shape {g.shape}")
    if np.any(a != np.round(a)):
        raise LabelflipError("the flip matrix must hold whole-number counts")
    ids = group_ids(g.tolist())
    same = (ids[:, None] == ids[None, :]) & ~np.eye(k, dtype=bool)
    off = np.where(~np.eye(k, dtype=bool), a, 0.0)
    n_rows = off.sum(axis=1).astype(np.int64)
    n_flips = int(n_rows.sum())
    n_within = int(off[same].sum())
    if n_flips == 0:
        nan = math.nan
        return GroupShare(0, 0, nan, nan, nan, nan, nan)
    p_uniform = (same.sum(axis=1) / (k - 1)) if k > 1 else np.zeros(k)
    m = quasi_independence(off)
    m_rows = m.sum(axis=1)
    p_margins = np.divide((m * same).sum(axis=1), m_rows, out=np.zeros(k), where=m_rows > 0)
    return GroupShare(
        n_flips=n_flips,
        n_within=n_within,
        share=n_within / n_flips,
        expected_uniform=float((n_rows * p_uniform).sum() / n_flips),
        p_uniform=_upper_tail(n_rows, p_uniform, n_within),
        expected_margins=float((n_rows * p_margins).sum() / n_flips),
        p_margins=_upper_tail(n_rows, np.clip(p_margins, 0.0, 1.0), n_within),
    )
