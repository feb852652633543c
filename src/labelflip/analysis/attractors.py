"""Attractors (catch-all classes): where successful adversarial examples pile up.

Large attack budgets tend to send examples of many classes into a few
catch-all classes; the landing shares and their normalised entropy measure
how concentrated the landings are (entropy 1: spread evenly, 0: one class).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from labelflip.analysis import _validate
from labelflip.errors import LabelflipError


def landing_shares(adv_pred: ArrayLike, success: ArrayLike, num_classes: int) -> np.ndarray:
    """Share of the successful adversarial examples landing in each class.

    ``shares[c] = #{success and adv_pred == c} / #{success}``; sums to 1, or
    all zeros when no attack succeeded.
    """
    k = _validate.num_classes_arg(num_classes)
    p = _validate.labels(adv_pred, "adv_pred", k)
    s = _validate.boolean(success, "success", p.size)
    counts = np.bincount(p[s], minlength=k).astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else counts


def normalized_entropy(p: ArrayLike) -> float:
    """Shannon entropy of a distribution divided by its maximum, ``log K``.

    ``H(p) / log K = -sum_c p_c log p_c / log K`` with ``0 log 0 = 0`` and
    ``K = len(p)``; in ``[0, 1]`` (1 = uniform, 0 = a single class). ``p`` may
    be counts: it is normalised to sum 1 first. NaN for an all-zero ``p``.
    Needs ``K >= 2``.
    """
    v = _validate.vector(p, "p")
    if v.size < 2:
        raise LabelflipError(f"normalized_entropy needs at least 2 classes, got {v.size}")
    if np.any(v < 0):
        raise LabelflipError("p must not contain negative entries")
    total = v.sum()
    if total == 0:
        return float("nan")
    q = v[v > 0] / total
    h = float(-np.sum(q * np.log(q)) / np.log(v.size))
    return min(max(h, 0.0), 1.0) + 0.0  # + 0.0: no -0.0 for a single class


def top_attractor(shares: ArrayLike) -> tuple[int | None, float]:
    """The class with the largest share, and that share.

    Ties go to the lowest class index. All-zero shares (no successful
    attack) give ``(None, 0.0)``: there is no attractor.
    """
    v = _validate.vector(shares, "shares")
    if v.size == 0:
        raise LabelflipError("shares must not be empty")
    c = int(np.argmax(v))
    if v[c] <= 0:
        return (None, 0.0)
    return (c, float(v[c]))


def attractor_summary(
    true: ArrayLike, adv_pred: ArrayLike, success: ArrayLike, num_classes: int
) -> dict[str, Any]:
    """Summary of where successful adversarial examples land.

    Keys: ``n_success``; ``shares`` (:func:`landing_shares`); ``entropy``
    (:func:`normalized_entropy` of the shares, NaN if nothing succeeded);
    ``top_class`` and ``top_share`` (:func:`top_attractor`); and
    ``baseline_shares``, the shares expected if every successful example
    landed uniformly on one of the ``K - 1`` classes other than its true
    class, ``baseline[c] = #{success, true != c} / ((K - 1) #{success})``
    (a catch-all class has a share well above its baseline).
    """
    k = _validate.num_classes_arg(num_classes)
    t = _validate.labels(true, "true", k)
    p = _validate.labels(adv_pred, "adv_pred", k)
    _validate.same_length(true=t, adv_pred=p)
    s = _validate.boolean(success, "success", t.size)
    shares = landing_shares(p, s, k)
    n_success = int(s.sum())
    if n_success and k > 1:
        baseline = (n_success - np.bincount(t[s], minlength=k)) / ((k - 1) * n_success)
    else:
        baseline = np.zeros(k)
    top_class, top_share = top_attractor(shares)
    return {
        "n_success": n_success,
        "shares": shares,
        "entropy": normalized_entropy(shares) if k > 1 else float("nan"),
        "top_class": top_class,
        "top_share": top_share,
        "baseline_shares": baseline.astype(np.float64),
    }
