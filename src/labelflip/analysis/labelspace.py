"""Label-space measures: how far in label space a flip moves, and at what
cost in image space (LabelFool, Liu et al. 2019, §IV).

- :func:`flip_distances` / :func:`mean_flip_distance`: the class distance
  ``D[true, adv]`` of each achieved flip (``adv != true``) under a ``(K, K)``
  class-distance matrix, and its mean. Smaller means the attack lands in a
  class nearer to the true one, i.e. a flip that is harder to notice.
- :func:`attack_rate`: LabelFool's attack rate, the share of samples whose
  adversarial prediction differs from the true label, over the samples the
  model classified correctly before the attack.
- :func:`mean_squared_perturbation`: LabelFool's image-space measure
  ``‖Δ‖ = 1/(W·H) Σ_{w,h} ‖Δ_{w,h}‖²`` (the squared perturbation of a pixel
  summed over its channels, averaged over the ``H·W`` pixels), which equals
  ``‖x_adv − x‖₂² / (H·W)``; averaged over the given samples.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from labelflip.analysis import _validate
from labelflip.errors import LabelflipError


def _pairs(true: ArrayLike, adv: ArrayLike, D: ArrayLike) -> tuple[np.ndarray, ...]:
    d = _validate.square(D, "D")
    k = d.shape[0]
    t = _validate.labels(true, "true", k)
    a = _validate.labels(adv, "adv", k)
    _validate.same_length(true=t, adv=a)
    return t, a, d


def flip_distances(true: ArrayLike, adv: ArrayLike, D: ArrayLike) -> np.ndarray:
    """``D[true_i, adv_i]`` for every sample (0 where the label did not flip)."""
    t, a, d = _pairs(true, adv, D)
    return d[t, a]


def mean_flip_distance(
    true: ArrayLike, adv: ArrayLike, D: ArrayLike, mask: ArrayLike | None = None
) -> float:
    """Mean class distance ``D[true, adv]`` over the achieved flips
    (``adv != true``) among the samples selected by ``mask`` (all when
    ``None``); NaN when there is no flip."""
    t, a, d = _pairs(true, adv, D)
    keep = t != a
    if mask is not None:
        m = _validate.boolean(mask, "mask", t.size)
        keep &= m
    return float(d[t[keep], a[keep]].mean()) if keep.any() else math.nan


def attack_rate(true: ArrayLike, clean_pred: ArrayLike, adv: ArrayLike) -> float:
    """Share of clean-correct samples (``clean_pred == true``) whose adversarial
    prediction differs from the true label; NaN without clean-correct samples."""
    t = np.asarray(true)
    c = np.asarray(clean_pred)
    a = np.asarray(adv)
    if not (t.shape == c.shape == a.shape) or t.ndim != 1:
        raise LabelflipError(
            f"true, clean_pred and adv must be vectors of one length, got shapes "
            f"{t.shape}, {c.shape}, {a.shape}"
        )
    correct = c == t
    return float((a[correct] != t[correct]).mean()) if correct.any() else math.nan


def mean_squared_perturbation(l2: ArrayLike, height: int, width: int) -> float:
    """LabelFool's ``‖Δ‖`` averaged over samples: ``mean(l2² / (H·W))``, from
    the L2 norms of ``x_adv − x`` (all channels) and the image size; NaN when
    empty."""
    v = _validate.vector(l2, "l2")
    if height < 1 or width < 1:
        raise LabelflipError(f"image size must be positive, got {height}x{width}")
    if v.size == 0:
        return math.nan
    return float(np.mean(v.astype(np.float64) ** 2) / (height * width))
