"""Input checks shared by the analysis functions.

Everything a caller can get wrong (shapes, lengths, label ranges, NaNs) is
reported as :class:`~labelflip.errors.LabelflipError` with a one-line message.
"""

from __future__ import annotations

import numbers

import numpy as np
from numpy.typing import ArrayLike

from labelflip.errors import LabelflipError


def num_classes_arg(num_classes: object) -> int:
    """A positive integer number of classes."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise LabelflipError(f"num_classes must be an integer, got {num_classes!r}")
    if num_classes < 1:
        raise LabelflipError(f"num_classes must be at least 1, got {num_classes}")
    return int(num_classes)


def labels(values: ArrayLike, name: str, num_classes: int) -> np.ndarray:
    """A 1-D int64 array of labels in ``[0, num_classes)``.

    Integer arrays pass as they are; float arrays must hold whole numbers.
    """
    a = np.asarray(values)
    if a.ndim != 1:
        raise LabelflipError(f"{name} must be a 1-D array of labels, got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise LabelflipError(f"{name} contains NaN or infinite values")
        if np.any(a != np.round(a)):
            raise LabelflipError(f"{name} must hold whole-number class labels")
    elif a.dtype.kind not in "iu" and a.size:
        raise LabelflipError(f"{name} must hold integer class labels, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= num_classes):
        bad = int(a.min()) if a.min() < 0 else int(a.max())
        raise LabelflipError(f"{name} labels must lie in [0, {num_classes}), found {bad}")
    return a


def boolean(values: ArrayLike, name: str, length: int) -> np.ndarray:
    """A 1-D bool array of the given length (integer index arrays are refused)."""
    a = np.asarray(values)
    if a.dtype != np.bool_:
        raise LabelflipError(f"{name} must be a boolean array, got dtype {a.dtype}")
    if a.ndim != 1 or a.size != length:
        raise LabelflipError(f"{name} must have one entry per sample ({length}), got {a.shape}")
    return a


def same_length(**arrays: np.ndarray) -> None:
    """All arrays have the same length."""
    sizes = {name: a.size for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        desc = ", ".join(f"{name} has {n}" for name, n in sizes.items())
        raise LabelflipError(f"arrays differ in length: {desc}")


def square(matrix: ArrayLike, name: str = "A", *, nonnegative: bool = True) -> np.ndarray:
    """A finite ``(K, K)`` float64 matrix with ``K >= 1`` (non-negative by default)."""
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LabelflipError(f"{name} must be a numeric matrix: {exc}") from None
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise LabelflipError(f"{name} must be a non-empty square matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise LabelflipError(f"{name} contains NaN or infinite values")
    if nonnegative and np.any(m < 0):
        raise LabelflipError(f"{name} must not contain negative entries")
    return m


def vector(values: ArrayLike, name: str) -> np.ndarray:
    """A finite 1-D float64 array."""
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LabelflipError(f"{name} must be a numeric vector: {exc}") from None
    if v.ndim != 1:
        raise LabelflipError(f"{name} must be 1-D, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise LabelflipError(f"{name} contains NaN or infinite values")
    return v
