"""Label flips of multi-label models (JMA paper, §VI-C).

A multi-label decision is a label vector, stored as an integer bitmask
(``Σ_j bit_j 2^j``, :mod:`labelflip.models.encoding`). A flip matrix over
``2^n`` vectors says little; what users read instead:

- :func:`bit_flips`: per label, how many samples had it switched on (0 → 1)
  and off (1 → 0) between the clean and the adversarial decision;
- :func:`bit_success_rate` (the paper's bASR): over targeted samples, the
  share of the bits the target asks to change that did change to the target
  value, averaged over samples; the whole-vector success (ASR) is
  ``adv == target``;
- :func:`changed_bits`: the number of bits each target asks to change;
- :func:`label_swaps`: the multi-label analogue of the flip matrix,
  ``S[i, j]`` = samples on which label ``i`` was switched off *and* label
  ``j`` switched on (e.g. a digit replaced by another): it has the flip
  matrix's shape, so symmetry and the Bowker test apply unchanged.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from labelflip.errors import LabelflipError


def _masks(values: ArrayLike, name: str, n: int) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise LabelflipError(f"{name} must be a 1-D array of integer label bitmasks")
    if a.size and (a.min() < 0 or a.max() >= (1 << n)):
        raise LabelflipError(f"{name} has bitmasks outside [0, 2^{n})")
    return a.astype(np.int64)


def _bits(masks: np.ndarray, n: int) -> np.ndarray:
    return (masks[:, None] >> np.arange(n)) & 1


def changed_bits(source: ArrayLike, target: ArrayLike, n: int) -> np.ndarray:
    """Per sample, the number of labels that differ between ``source`` and ``target``."""
    s, t = _masks(source, "source", n), _masks(target, "target", n)
    if s.shape != t.shape:
        raise LabelflipError("source and target must have the same length")
    return _bits(s ^ t, n).sum(1)


def bit_flips(clean: ArrayLike, adv: ArrayLike, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(on, off)``: per label ``j`` (length ``n``), the number of samples
    whose label ``j`` went 0 → 1 (``on``) and 1 → 0 (``off``) from the clean
    decision to the adversarial one."""
    c, a = _masks(clean, "clean", n), _masks(adv, "adv", n)
    if c.shape != a.shape:
        raise LabelflipError("clean and adv must have the same length")
    cb, ab = _bits(c, n), _bits(a, n)
    on = ((cb == 0) & (ab == 1)).sum(0)
    off = ((cb == 1) & (ab == 0)).sum(0)
    return on, off


def bit_success_rate(source: ArrayLike, adv: ArrayLike, target: ArrayLike, n: int) -> float:
    """bASR: the mean over samples of the fraction of the bits that ``target``
    asks to change (relative to ``source``, the decision the attack started
    from) which ``adv`` has at their target value. Samples whose target asks
    for no change are left out; NaN if none is left."""
    s, a, t = (_masks(v, k, n) for v, k in ((source, "source"), (adv, "adv"), (target, "target")))
    if not s.shape == a.shape == t.shape:
        raise LabelflipError("source, adv and target must have the same length")
    asked = _bits(s ^ t, n)
    reached = asked & (1 - _bits(a ^ t, n))
    k = asked.sum(1)
    keep = k > 0
    if not keep.any():
        return float("nan")
    return float((reached.sum(1)[keep] / k[keep]).mean())


def label_swaps(
    clean: ArrayLike, adv: ArrayLike, n: int, mask: ArrayLike | None = None
) -> np.ndarray:
    """``S`` (n × n, int64): ``S[i, j]`` counts the samples (those in ``mask``,
    if given) whose label ``i`` went 1 → 0 and label ``j`` went 0 → 1 between
    the clean and the adversarial decision; a sample with several labels
    switched each way adds to every such pair. The diagonal is 0."""
    c, a = _masks(clean, "clean", n), _masks(adv, "adv", n)
    if c.shape != a.shape:
        raise LabelflipError("clean and adv must have the same length")
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != c.shape:
            raise LabelflipError("mask must have one entry per sample")
        c, a = c[m], a[m]
    cb, ab = _bits(c, n), _bits(a, n)
    off = (cb == 1) & (ab == 0)
    on = (cb == 0) & (ab == 1)
    return (off.T.astype(np.int64) @ on.astype(np.int64)).astype(np.int64)
