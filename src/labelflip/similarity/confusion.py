"""Confusion class distance: how rarely a classifier mixes up two classes.

From clean predictions, ``C[i, j]`` counts samples of true class ``i``
predicted as ``j``; ``P = C / row sums`` (a row without samples is all 0)
are the confusion rates, ``S = (P + P^T) / 2`` their symmetrisation, and the
distance is ``D = 1 - S`` off the diagonal, 0 on it. Classes the model often
confuses are close; classes it never confuses are at distance 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from labelflip.errors import LabelflipError
from labelflip.similarity._matrix import ClassDistance


def _labels(values: ArrayLike, name: str, k: int) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1:
        raise LabelflipError(f"{name} must be a 1-D array of labels, got shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        raise LabelflipError(f"{name} must hold integer class labels, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= k):
        bad = int(a.min()) if a.min() < 0 else int(a.max())
        raise LabelflipError(f"{name} labels must lie in [0, {k}), found {bad}")
    return a


def confusion_distance(
    true: ArrayLike, pred: ArrayLike, class_names: Sequence[str]
) -> ClassDistance:
    """``D = 1 - (P + P^T) / 2`` off the diagonal, from clean row-normalised confusion rates.

    ``true`` and ``pred`` are integer label arrays of equal length (torch
    tensors are accepted via ``np.asarray``). ``info`` records ``samples``
    and clean ``accuracy``.
    """
    names = tuple(str(c) for c in class_names)
    k = len(names)
    if k == 0:
        raise LabelflipError("class_names is empty")
    t = _labels(true, "true", k)
    p = _labels(pred, "pred", k)
    if t.size != p.size:
        raise LabelflipError(f"true has {t.size} labels but pred has {p.size}")
    if t.size == 0:
        raise LabelflipError("confusion distance needs at least one sample")
    counts = np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    d = 1.0 - (rates + rates.T) / 2
    np.fill_diagonal(d, 0.0)
    info = {"samples": int(t.size), "accuracy": float(np.mean(t == p))}
    return ClassDistance("confusion", d, names, info)
