"""Detection statistics of a score-based detector of adversarial inputs: the
threshold and the share of inputs it flags, on score vectors (numpy only).

The scores come from :func:`labelflip.detect.squeeze_scores` (feature
squeezing: Xu, Evans & Qi, NDSS 2018), the detector Tang et al. use against
Type I attacks ("Adversarial Attack Type I", §IV-C, Tables I-II). An input
is flagged when its score exceeds the threshold ζ: ``reject x iff score > ζ``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.typing import ArrayLike

from labelflip.analysis import _validate
from labelflip.errors import LabelflipError


def calibrate_threshold(scores_clean: ArrayLike, fpr: float = 0.05) -> float:
    """The threshold ζ that flags (``score > ζ``) at most the share ``fpr`` of
    the clean inputs' scores (Xu et al. 2018: ζ is chosen on legitimate
    examples for a target false-positive rate, 5 % in their experiments).

    As in Xu et al.'s code: sort the ``n`` clean scores and take the
    ``ceil(n · (1 - fpr))``-th smallest. Exactly ``floor(n · fpr)`` clean
    inputs are then flagged when the scores have no ties (fewer with ties
    at ζ); ``fpr = 0`` gives the largest clean score. ``fpr`` lies in
    ``[0, 1)``.
    """
    if isinstance(fpr, bool) or not isinstance(fpr, numbers.Real) or not 0 <= fpr < 1:
        raise LabelflipError(f"fpr must lie in [0, 1), got {fpr!r}")
    v = _validate.vector(scores_clean, "scores_clean")
    if v.size == 0:
        raise LabelflipError("scores_clean is empty: no clean scores to calibrate on")
    # the small slack keeps e.g. 100 * (1 - 0.07) = 93.00000000000001 at 93
    rank = max(math.ceil(v.size * (1 - float(fpr)) - 1e-9), 1)
    return float(np.sort(v)[rank - 1])


def detection_rate(scores: ArrayLike, threshold: float) -> float:
    """Share of inputs flagged as adversarial, ``mean(score > threshold)``
    (Tang et al., Tables I-II); NaN for no scores."""
    if not isinstance(threshold, numbers.Real) or not math.isfinite(threshold):
        raise LabelflipError(f"threshold must be a finite number, got {threshold!r}")
    v = _validate.vector(scores, "scores")
    return float(np.mean(v > threshold)) if v.size else math.nan
