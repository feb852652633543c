"""Counting label pairs: the confusion matrix and what follows from it."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def confusion_matrix(true: ArrayLike, pred: ArrayLike, num_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of samples of true class ``i`` predicted as ``j``.

    Labels must be integers in ``[0, num_classes)``; the result is int64
    ``(num_classes, num_classes)`` and sums to the number of samples.
    """
    t = np.asarray(true, dtype=np.int64).ravel()
    p = np.asarray(pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"true and pred differ in length: {t.size} vs {p.size}")
    for name, a in (("true", t), ("pred", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in [0, {num_classes})")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def per_class_accuracy(confusion: ArrayLike) -> np.ndarray:
    """Diagonal over row sums; NaN for classes without samples."""
    c = np.asarray(confusion, dtype=np.float64)
    rows = c.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, np.diag(c) / np.where(rows > 0, rows, 1), np.nan)
