"""Boundary profile: per sample, the distance to the boundary of every other
class, measured by a targeted minimal-norm attack toward each.

An untargeted minimal attack promises the nearest boundary, but several
classes often lie at nearly the same distance (issue 20: near-optimal
attacks agree on the landing class of an MNIST sample only about 76 % of the
time). The profile measures them all: for each sample ``x`` of label ``y``
and each candidate class ``t ≠ y``, the inner attack (``fmn`` in L2 by
default: Pintor et al. 2021, targeted, Algorithm 1 with
``L = max_{j≠t} f_j - f_t``) estimates

    ``d_t(x) = min ||δ||  s.t.  argmax f(x + δ) = t,  x + δ ∈ [lo, hi]``,

the distance from ``x`` to the region of class ``t`` (for an affine model
whose box does not bind and whose projection onto the ``(y, t)`` hyperplane
is classified ``t``: ``|f_t(x) - f_y(x)| / ||w_t - w_y||_2``, DeepFool's
eq. 4 for one pair of classes). ``profile[i, t]`` is the norm of the inner
attack's successful adversarial, ``inf`` where it failed, for the true class,
and for a class outside ``top_k``; a sample the model already assigns to
``t`` has ``d_t = 0``.

Candidates are every class but ``y`` or, with ``top_k``, the ``top_k``
classes with the largest clean logits besides ``y``. The inner attack runs
once per candidate rank (``N`` rows each, the batch's memory) with the same
``torch.Generator``; passes and iterations are the sums over the ranks plus
the one clean forward pass that orders the candidates.

The returned adversarial is the nearest-class one: per sample, the smallest
``d_t`` (ties: the class with the larger clean logit); the record is then an
untargeted minimal attack's, judged ``adv_pred != y``, whose landing is the
nearest boundary found. The ``(N, K)`` profile is the result's ``profile``;
the runner saves it in the run directory (``profiles/<job>.npy``,
:meth:`labelflip.store.RunDir.load_profile`), and
:mod:`labelflip.analysis.boundary` reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from labelflip._settings import Settings, setting
from labelflip.attacks._common import (
    generator_or_default,
    new_counts,
    prepare_inputs,
    progress_part,
)
from labelflip.attacks._inner import NORMS, add_counts, found_norms, inner_attack
from labelflip.attacks._registry import AttackSpec, register_attack
from labelflip.attacks._result import AttackResult, finalize_counts
from labelflip.attacks.deepfool import predict_logits
from labelflip.errors import LabelflipError
from labelflip.models.classifier import Classifier


@dataclass(frozen=True)
class BoundaryProfileSettings(Settings):
    """Settings of :func:`boundary_profile`."""

    inner: str = setting("fmn", doc="the targeted minimal attack run toward each class")
    norm: str = setting(
        "l2", choices=NORMS, doc="the norm of the distances (set in the inner attack if it has one)"
    )
    top_k: int | None = setting(
        None, ge=1, doc="only the k classes with the largest clean logits (none: every class)"
    )
    options: dict[str, Any] | None = setting(
        None, doc="the inner attack's settings, e.g. {steps = 100}"
    )

    def check(self) -> None:
        self.inner_attack()

    def inner_attack(self) -> tuple[AttackSpec, Any]:
        """The inner attack and its validated settings."""
        if self.options is not None and not isinstance(self.options, Mapping):
            raise LabelflipError(f"{self.owner}: options must be a table, got {self.options!r}")
        return inner_attack(self.owner, self.inner, self.norm, self.options, targeted=True)


@register_attack(
    "boundary-profile",
    BoundaryProfileSettings,
    "distance to every class's boundary by a targeted minimal attack; keeps the nearest",
    accepts_target=False,
)
def boundary_profile(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    s: BoundaryProfileSettings,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """The boundary profile of every sample (see the module docstring):
    ``profile[i, t]`` the distance to class ``t``, the adversarial of the
    nearest class as ``x_adv``."""
    if target is not None:
        raise LabelflipError("boundary-profile is an untargeted attack; it takes no target classes")
    x0, y, _ = prepare_inputs(clf, x, y, None, generator)
    spec, settings = s.inner_attack()
    gen = generator_or_default(generator)
    n, k = len(x0), clf.num_classes
    if k < 2:
        raise LabelflipError(f"boundary-profile needs a model with at least 2 classes, got {k}")
    counts = new_counts(n, x0.device)
    inf = float("inf")
    profile = torch.full((n, k), inf, dtype=torch.float64, device=x0.device)
    best = x0.clone()
    if n:
        logits = predict_logits(clf, x0)
        counts[1].add_(1)
        order = logits.argsort(dim=1, descending=True, stable=True)
        others = order[order != y[:, None]].view(n, k - 1)
        ranks = k - 1 if s.top_k is None else min(s.top_k, k - 1)
        rows = torch.arange(n, device=x0.device)
        nearest = torch.full((n,), inf, dtype=torch.float64, device=x0.device)
        for rank in range(ranks):
            t = others[:, rank]
            with progress_part(rank, ranks):
                r = spec.run(clf, x0, y, settings, target=t, generator=gen)
            d = found_norms(r, s.norm)
            profile[rows, t] = d
            closer = d < nearest  # strict: the class with the larger logit keeps a tie
            best[closer] = r.x_adv[closer]
            nearest = torch.minimum(nearest, d)
            add_counts(counts, r)
    result = finalize_counts(clf, x0, y, best, None, counts)
    return replace(result, profile=profile)
