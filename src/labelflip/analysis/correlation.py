"""Rank correlations: the white-noise prior and class similarity.

*White-noise prior*: the distribution of a model's predictions on white
noise (:func:`class_distribution`) is compared with the attractor landing
shares by :func:`rank_correlation`. *Class similarity*: flip rates are
correlated with a class-distance matrix by :func:`flip_distance_correlation`
(closer classes are expected to flip more, so rho < 0).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from labelflip.analysis import _validate
from labelflip.analysis.flips import row_rates
from labelflip.errors import LabelflipError


@dataclass(frozen=True)
class SpearmanResult:
    """Spearman's rank correlation ``rho`` and its two-sided p-value."""

    rho: float
    p_value: float


def class_distribution(pred: ArrayLike, num_classes: int) -> np.ndarray:
    """Share of predictions per class, ``#{pred == c} / n``; zeros when empty."""
    k = _validate.num_classes_arg(num_classes)
    p = _validate.labels(pred, "pred", k)
    counts = np.bincount(p, minlength=k).astype(np.float64)
    return counts / p.size if p.size else counts


def rank_correlation(a: ArrayLike, b: ArrayLike) -> SpearmanResult:
    """Spearman's rank correlation of two paired vectors (``scipy.stats.spearmanr``).

    Ties get average ranks; the p-value is scipy's (t approximation). NaN
    ``rho`` and ``p_value`` when either side is constant or there are fewer
    than 2 pairs, without emitting warnings.
    """
    x = _validate.vector(a, "a")
    y = _validate.vector(b, "b")
    _validate.same_length(a=x, b=y)
    nan = float("nan")
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return SpearmanResult(rho=nan, p_value=nan)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        res = stats.spearmanr(x, y)
    return SpearmanResult(rho=float(res.statistic), p_value=float(res.pvalue))


def flip_distance_correlation(A: ArrayLike, D: ArrayLike) -> SpearmanResult:
    """Spearman correlation between flip rates and class distances.

    ``R`` = :func:`row_rates` of the flip matrix ``A``; both ``R`` and the
    ``(K, K)`` distance matrix ``D`` are symmetrised, ``(R + R^T) / 2`` and
    ``(D + D^T) / 2``, and the ``K (K - 1) / 2`` entries strictly above the
    diagonal are rank-correlated (:func:`rank_correlation`). A negative rho
    means closer classes flip into each other more often.
    """
    r = row_rates(A)
    d = _validate.square(D, "D", nonnegative=False)
    if d.shape != r.shape:
        raise LabelflipError(f"A and D differ in shape: {r.shape} vs {d.shape}")
    i, j = np.triu_indices(r.shape[0], k=1)
    rs = (r + r.T) / 2
    ds = (d + d.T) / 2
    return rank_correlation(rs[i, j], ds[i, j])
