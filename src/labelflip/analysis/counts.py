"""Counting label pairs: the confusion matrix and what follows from it."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from labelflip.analysis import _validate


def confusion_matrix(true: ArrayLike, pred: ArrayLike, num_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of samples of true class ``i`` predicted as ``j``.

    Labels must be integers in ``[0, num_classes)``; the result is int64
    ``(num_classes, num_classes)`` and sums to the number of samples.
    Raises :class:`~labelflip.errors.LabelflipError` on mismatched lengths or
    out-of-range labels.
    """
    k = _validate.num_classes_arg(num_classes)
    t = _validate.labels(np.ravel(true), "true", k)
    p = _validate.labels(np.ravel(pred), "pred", k)
    _validate.same_length(true=t, pred=p)
    return np.bincount(t * k + p, minlength=k * k).astype(np.int64).reshape(k, k)


def per_class_accuracy(confusion: ArrayLike) -> np.ndarray:
    """Diagonal over row sums; NaN for classes without samples."""
    c = _validate.square(confusion, "confusion")
    rows = c.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, np.diag(c) / np.where(rows > 0, rows, 1), np.nan)
