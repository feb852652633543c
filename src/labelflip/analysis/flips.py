"""The flip matrix: where the adversarial examples of each true class land."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from labelflip.analysis import _validate
from labelflip.errors import LabelflipError


def flip_matrix(
    true: ArrayLike,
    adv_pred: ArrayLike,
    num_classes: int,
    mask: ArrayLike | None = None,
) -> np.ndarray:
    """Count label flips: ``A[i, j]`` = samples of true class ``i`` whose
    adversarial prediction is ``j``.

    The diagonal ``A[i, i]`` counts samples on which the attack failed (the
    adversarial prediction is still the true class). ``mask`` (boolean, one
    entry per sample) selects the samples counted, e.g. only those the model
    classified correctly before the attack. Returns int64 ``(K, K)``.
    """
    k = _validate.num_classes_arg(num_classes)
    t = _validate.labels(true, "true", k)
    p = _validate.labels(adv_pred, "adv_pred", k)
    _validate.same_length(true=t, adv_pred=p)
    if mask is not None:
        m = _validate.boolean(mask, "mask", t.size)
        t, p = t[m], p[m]
    return np.bincount(t * k + p, minlength=k * k).astype(np.int64).reshape(k, k)


def row_rates(A: ArrayLike) -> np.ndarray:
    """Row-normalised flip matrix: ``R[i, j] = A[i, j] / sum_j A[i, j]``.

    ``R[i, j]`` is the fraction of class-``i`` samples sent to ``j``. Rows
    without samples are all zeros (not NaN).
    """
    a = _validate.square(A)
    rows = a.sum(axis=1, keepdims=True)
    return np.divide(a, rows, out=np.zeros_like(a), where=rows > 0)


def top_flips(A: ArrayLike, n: int = 5) -> list[tuple[int, int, int | float]]:
    """The ``n`` largest off-diagonal cells as ``(i, j, count)``.

    Sorted by count descending, ties by ``(i, j)`` ascending; cells with a
    zero count are not flips and are left out, so fewer than ``n`` may come
    back. Counts are ``int`` for an integer matrix, ``float`` otherwise.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise LabelflipError(f"n must be a non-negative integer, got {n!r}")
    raw = np.asarray(A)
    a = _validate.square(raw)
    integer = raw.dtype.kind in "iub"
    i, j = np.nonzero(~np.eye(a.shape[0], dtype=bool) & (a > 0))
    counts = a[i, j]
    order = np.lexsort((j, i, -counts))[: int(n)]
    return [(int(i[o]), int(j[o]), int(counts[o]) if integer else float(counts[o])) for o in order]
