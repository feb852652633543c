"""Label-stay analysis for Type I attacks (Tang et al., "Adversarial Attack
Type I: Cheat Classifiers by Significant Changes", eq. 2 and §IV).

A Type II attack (the usual kind) keeps the oracle's class and flips the
attacked model's; a Type I attack does the opposite: from an ``x`` with
``f1(x) = f2(x) = y`` it makes an ``x'`` with ``f1(x') = y`` (the attacked
model ``f1`` keeps its label) while ``f2(x') != y`` (the oracle ``f2``, e.g.
an independent classifier or human annotators, sees another class).

- :func:`label_stay_matrix`: the Type I counterpart of
  :func:`~labelflip.analysis.flips.flip_matrix`. Rows are the original class,
  columns the class the oracle sees after the attack, and only the samples
  ``f1`` still labels with the original class are counted. Off-diagonal
  cells are successful Type I examples; the diagonal counts samples on which
  ``f1`` kept its label and the oracle also still sees the original class.
  Being a ``(K, K)`` count matrix of the same shape and meaning ("from class
  i, the image now is j"), it goes unchanged into
  :func:`~labelflip.analysis.symmetry.symmetry_score`,
  :func:`~labelflip.analysis.symmetry.bowker_test`,
  :func:`~labelflip.analysis.flips.row_rates` and
  :func:`~labelflip.analysis.flips.top_flips`, and
  :func:`type_i_success` is the ``success`` vector to hand, with
  ``oracle_adv``, to :func:`~labelflip.analysis.attractors.attractor_summary`.
- :func:`type_i_rates`: how often ``f1`` keeps the label, how often the
  oracle's class changed, how often both happen (the Type I success rate of
  §IV-B, conditions i and ii), and for a targeted attack (the paper's
  "change an i into an i+1") how often the oracle lands on the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from labelflip.analysis import _validate
from labelflip.analysis.flips import flip_matrix
from labelflip.errors import LabelflipError


def _label_arrays(
    true: ArrayLike, f1_adv: ArrayLike, oracle_adv: ArrayLike, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = _validate.num_classes_arg(num_classes)
    t = _validate.labels(true, "true", k)
    f = _validate.labels(f1_adv, "f1_adv", k)
    o = _validate.labels(oracle_adv, "oracle_adv", k)
    _validate.same_length(true=t, f1_adv=f, oracle_adv=o)
    return t, f, o


def _num_classes_from(*arrays: ArrayLike) -> int:
    """A class count large enough for every (non-negative) label given, so
    that the label checks can run without one; at least 1."""
    top = 0
    for a in arrays:
        v = np.asarray(a)
        if v.size and v.dtype.kind in "iuf" and np.all(np.isfinite(v)):
            top = max(top, int(np.max(v)) + 1)
    return max(top, 1)


def _targets(target: ArrayLike) -> np.ndarray:
    """A 1-D int64 array of target classes, ``-1`` meaning no target."""
    a = np.asarray(target)
    if a.ndim != 1:
        raise LabelflipError(f"target must be a 1-D array of labels, got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise LabelflipError("target contains NaN or infinite values")
        if np.any(a != np.round(a)):
            raise LabelflipError("target must hold whole-number class labels")
    elif a.dtype.kind not in "iu" and a.size:
        raise LabelflipError(f"target must hold integer class labels, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and a.min() < -1:
        raise LabelflipError(f"target labels must be classes or -1 (no target), found {a.min()}")
    return a


def type_i_success(true: ArrayLike, f1_adv: ArrayLike, oracle_adv: ArrayLike) -> np.ndarray:
    """Per-sample Type I success (eq. 2): ``f1_adv == true and oracle_adv != true``.

    A boolean vector, one entry per sample; it is the ``success`` to pass to
    :func:`~labelflip.analysis.attractors.attractor_summary` (with
    ``oracle_adv`` as ``adv_pred``) to find the classes Type I examples are
    turned into.
    """
    k = _num_classes_from(true, f1_adv, oracle_adv)
    t, f, o = _label_arrays(true, f1_adv, oracle_adv, k)
    return (f == t) & (o != t)


def label_stay_matrix(
    true: ArrayLike,
    f1_adv: ArrayLike,
    oracle_adv: ArrayLike,
    num_classes: int,
    mask: ArrayLike | None = None,
) -> np.ndarray:
    """Count Type I landings: ``M[i, j]`` = samples of original class ``i``
    that the attacked model still labels ``i`` (``f1_adv == true``) and the
    oracle now sees as class ``j`` (``oracle_adv == j``).

    ``true`` is the original class ``y`` of each sample, the label
    ``f1(x) = f2(x)`` the attack must keep (Tang et al., eq. 2); pass a
    ``mask`` (boolean, one entry per sample) to count only the samples both
    classified correctly before the attack. Samples on which ``f1`` changed
    its label are not Type I candidates and are left out. Off-diagonal cells
    are successful Type I examples, the diagonal ``M[i, i]`` samples where
    the oracle also still sees ``i`` (no Type I). ``M.sum()`` is the number
    of samples ``f1`` kept. Returns int64 ``(K, K)``, the same shape and
    orientation as :func:`~labelflip.analysis.flips.flip_matrix`, so the
    symmetry and attractor functions apply unchanged.
    """
    t, f, o = _label_arrays(true, f1_adv, oracle_adv, num_classes)
    keep = f == t
    if mask is not None:
        keep &= _validate.boolean(mask, "mask", t.size)
    return flip_matrix(t, o, num_classes, mask=keep)


@dataclass(frozen=True)
class TypeIRates:
    """Outcome shares of a Type I attack over ``n`` samples (Tang et al., eq. 2).

    ``f1_keep_rate``: ``f1_adv == true`` (condition i of §IV-B);
    ``oracle_change_rate``: ``oracle_adv != true`` (condition ii);
    ``success_rate``: both at once (a Type I example); ``target_hit_rate``:
    ``oracle_adv == target`` over the ``n_targeted`` samples that have a
    target, and ``targeted_success_rate``: ``f1`` keeps and the oracle sees
    the target, over the same samples (both NaN without targets). Every rate
    is NaN when its denominator is 0. The ``n_*`` fields are the counts.
    """

    n: int
    n_f1_keeps: int
    n_oracle_changed: int
    n_success: int
    n_targeted: int
    n_target_hits: int
    n_targeted_success: int
    f1_keep_rate: float
    oracle_change_rate: float
    success_rate: float
    target_hit_rate: float
    targeted_success_rate: float


def _rate(count: int, total: int) -> float:
    return count / total if total else math.nan


def type_i_rates(
    true: ArrayLike,
    f1_adv: ArrayLike,
    oracle_adv: ArrayLike,
    target: ArrayLike | None = None,
    *,
    mask: ArrayLike | None = None,
) -> TypeIRates:
    """Type I attack rates (see :class:`TypeIRates`) over the samples in
    ``mask`` (all when ``None``).

    ``true`` is the original class, ``f1_adv`` the attacked model's and
    ``oracle_adv`` the oracle's label of the adversarial example.
    ``target`` (optional) holds the class the oracle should see; an entry
    ``-1`` means "no target for this sample" (the run store's convention for
    untargeted attacks), and a target equal to the original class is an
    error: a Type I target must be another class.
    """
    k = _num_classes_from(true, f1_adv, oracle_adv)
    t, f, o = _label_arrays(true, f1_adv, oracle_adv, k)
    sel = np.ones(t.size, dtype=bool)
    if mask is not None:
        sel = _validate.boolean(mask, "mask", t.size)
    if target is None:
        g = np.full(t.size, -1, dtype=np.int64)
    else:
        g = _targets(target)
        _validate.same_length(true=t, target=g)
        if np.any((g == t) & sel):
            bad = int(np.argmax((g == t) & sel))
            raise LabelflipError(
                f"target equals the original class at sample {bad}; a Type I target "
                "must be another class (use -1 for no target)"
            )
    t, f, o, g = t[sel], f[sel], o[sel], g[sel]
    keeps = f == t
    changed = o != t
    targeted = g >= 0
    hits = targeted & (o == g)
    n, n_t = int(t.size), int(targeted.sum())
    counts = {
        "n_f1_keeps": int(keeps.sum()),
        "n_oracle_changed": int(changed.sum()),
        "n_success": int((keeps & changed).sum()),
        "n_target_hits": int(hits.sum()),
        "n_targeted_success": int((hits & keeps).sum()),
    }
    return TypeIRates(
        n=n,
        n_targeted=n_t,
        **counts,
        f1_keep_rate=_rate(counts["n_f1_keeps"], n),
        oracle_change_rate=_rate(counts["n_oracle_changed"], n),
        success_rate=_rate(counts["n_success"], n),
        target_hit_rate=_rate(counts["n_target_hits"], n_t),
        targeted_success_rate=_rate(counts["n_targeted_success"], n_t),
    )
