"""Boundary profiles: where the nearest decision boundary of each sample lies,
and whether attacks land there (issue 20).

A *profile* is an ``(N, K)`` array: ``P[n, j]`` the distance from sample
``n`` to the region of class ``j`` (the norm of the smallest adversarial of
class ``j`` a targeted minimal attack found, as the ``boundary-profile``
attack measures it), ``inf`` where none was found (and for the true class),
``NaN`` for a row that was not computed (a batch not yet committed: such a
row is left out everywhere). Nothing here knows how it was measured.

- :func:`nearest_boundary`: per sample, the class of the nearest boundary.
- :func:`class_boundary_matrix`: ``B[i, j]`` the median distance from the
  samples of true class ``i`` to class ``j``, a class-distance matrix
  measured in input space (failures counted as ``inf``, as the median of the
  benchmark of issue 20 counts them).
- :func:`nearest_landing_matrix`: ``L[i, j]`` the samples of true class ``i``
  whose nearest boundary is that of class ``j`` (a flip matrix of the
  nearest boundaries).
- :func:`boundary_margin`: the gap between the nearest and the second
  nearest boundary, per sample (absolute, or relative to the nearest): small
  margins are samples whose "landing class" is not one class but several.
- :func:`lands_at_nearest` / :func:`nearest_landing_rate`: whether an
  untargeted attack's landing class is the nearest boundary's class.
- :func:`boundary_distance_correlation`: Spearman correlation of ``B`` with
  another class-distance matrix (perceptual, semantic).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from labelflip.analysis import _validate
from labelflip.analysis.correlation import SpearmanResult, rank_correlation
from labelflip.errors import LabelflipError


def _profile(profile: ArrayLike) -> np.ndarray:
    """A float64 ``(N, K)`` profile with ``K >= 2``: non-negative where finite."""
    try:
        p = np.asarray(profile, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LabelflipError(f"profile must be a numeric (N, K) array: {exc}") from None
    if p.ndim != 2 or p.shape[1] < 2:
        raise LabelflipError(f"profile must be an (N, K) array with K >= 2, got shape {p.shape}")
    if np.any(p < 0) or np.any(p == -np.inf):
        raise LabelflipError("profile must not contain negative distances")
    return p


def _written(p: np.ndarray) -> np.ndarray:
    """Rows that were computed (no NaN)."""
    return ~np.isnan(p).any(axis=1)


def _mask(mask: ArrayLike | None, n: int) -> np.ndarray:
    return np.ones(n, dtype=bool) if mask is None else _validate.boolean(mask, "mask", n)


def nearest_boundary(profile: ArrayLike) -> np.ndarray:
    """Per sample, the class with the smallest distance (the first of equal
    ones); -1 where no class was reached (all ``inf``) or the row is NaN."""
    p = _profile(profile)
    if p.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    filled = np.where(np.isnan(p), np.inf, p)
    nearest = filled.argmin(axis=1).astype(np.int64)
    found = np.isfinite(filled.min(axis=1)) & _written(p)
    return np.where(found, nearest, -1)


def class_boundary_matrix(
    profile: ArrayLike, true: ArrayLike, mask: ArrayLike | None = None
) -> np.ndarray:
    """``B[i, j]``: the median of ``P[n, j]`` over the samples ``n`` of true
    class ``i`` selected by ``mask`` (all when ``None``) whose row was
    computed; ``inf`` counts as larger than any distance (a median of ``inf``
    means at least half failed; with an even count, one failure in the two
    middle values gives ``inf``). The diagonal and the rows of classes
    without samples are NaN. Returns float64 ``(K, K)``."""
    p = _profile(profile)
    n, k = p.shape
    t = _validate.labels(true, "true", k)
    _validate.same_length(profile=np.empty(n), true=t)
    keep = _mask(mask, n) & _written(p)
    out = np.full((k, k), np.nan)
    for i in range(k):
        rows = p[keep & (t == i)]
        if len(rows):
            out[i] = np.median(rows, axis=0)
        out[i, i] = np.nan
    return out


def nearest_landing_matrix(
    profile: ArrayLike, true: ArrayLike, mask: ArrayLike | None = None
) -> np.ndarray:
    """``L[i, j]``: the samples of true class ``i`` (selected by ``mask``)
    whose nearest boundary (:func:`nearest_boundary`) is class ``j``;
    samples without one are not counted. Returns int64 ``(K, K)``."""
    p = _profile(profile)
    n, k = p.shape
    t = _validate.labels(true, "true", k)
    _validate.same_length(profile=np.empty(n), true=t)
    near = nearest_boundary(p)
    keep = _mask(mask, n) & (near >= 0)
    return np.bincount(t[keep] * k + near[keep], minlength=k * k).astype(np.int64).reshape(k, k)


def boundary_margin(profile: ArrayLike, *, relative: bool = False) -> np.ndarray:
    """Per sample, ``d_2 - d_1``: the second smallest distance minus the
    smallest (``(d_2 - d_1) / d_1`` when ``relative``; ``inf`` for ``d_1 = 0
    < d_2``, 0 for ``d_1 = d_2 = 0``). ``inf`` where only one class was
    reached; NaN where none was, or the row is NaN."""
    p = _profile(profile)
    if p.shape[0] == 0:
        return np.zeros(0)
    s = np.sort(np.where(np.isnan(p), np.inf, p), axis=1)
    d1, d2 = s[:, 0], s[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = d2 - d1
        if relative:
            gap = np.where(gap == 0, 0.0, gap / d1)
    return np.where(np.isfinite(d1) & _written(p), gap, np.nan)


def lands_at_nearest(
    profile: ArrayLike, adv_pred: ArrayLike, *, tolerance: float = 0.0
) -> np.ndarray:
    """Per sample, whether the landing class ``adv_pred`` is the nearest
    boundary's: ``P[n, adv_pred] <= (1 + tolerance) d_1`` (with ``tolerance``
    0, a class tied with the nearest counts). False where no boundary was
    found or ``adv_pred`` is -1 (no class: invalid logits)."""
    p = _profile(profile)
    n, k = p.shape
    a = np.asarray(adv_pred)
    if a.ndim != 1 or a.size != n:
        raise LabelflipError(f"adv_pred must have one entry per sample ({n}), got {a.shape}")
    if a.size and (a.dtype.kind not in "iu" or a.min() < -1 or a.max() >= k):
        raise LabelflipError(f"adv_pred must hold classes in [0, {k}) or -1")
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise LabelflipError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    if n == 0:
        return np.zeros(0, dtype=bool)
    filled = np.where(np.isnan(p), np.inf, p)
    d1 = filled.min(axis=1)
    at = filled[np.arange(n), np.clip(a, 0, k - 1)]
    return (a >= 0) & np.isfinite(d1) & _written(p) & (at <= (1 + tolerance) * d1)


def nearest_landing_rate(
    profile: ArrayLike,
    adv_pred: ArrayLike,
    success: ArrayLike,
    *,
    tolerance: float = 0.0,
) -> float:
    """Share of the successful samples with a nearest boundary whose landing
    is at it (:func:`lands_at_nearest`); NaN when there are none."""
    p = _profile(profile)
    at = lands_at_nearest(p, adv_pred, tolerance=tolerance)
    ok = _validate.boolean(np.asarray(success), "success", p.shape[0])
    counted = ok & (nearest_boundary(p) >= 0)
    return float(at[counted].mean()) if counted.any() else math.nan


def boundary_distance_correlation(B: ArrayLike, D: ArrayLike) -> tuple[SpearmanResult, int]:
    """Spearman correlation between a class-boundary matrix ``B``
    (:func:`class_boundary_matrix`) and a class-distance matrix ``D``: both
    symmetrised (``(B + B^T) / 2``), the entries strictly above the diagonal
    paired, those where ``B`` is not finite (a class without samples, a
    median failure) left out. Returns the result and the number of pairs.
    A positive rho means classes nearer by ``D`` have nearer boundaries."""
    b = np.asarray(B, dtype=np.float64)
    d = _validate.square(D, "D", nonnegative=False)
    if b.shape != d.shape:
        raise LabelflipError(f"B and D differ in shape: {b.shape} vs {d.shape}")
    i, j = np.triu_indices(b.shape[0], k=1)
    bs = ((b + b.T) / 2)[i, j]
    ds = ((d + d.T) / 2)[i, j]
    keep = np.isfinite(bs)
    return rank_correlation(bs[keep], ds[keep]), int(keep.sum())
