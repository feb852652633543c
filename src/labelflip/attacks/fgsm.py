"""Fast Gradient Sign Method and its L2 variant, the Fast Gradient Method.

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial
Examples" (ICLR 2015), eq. ``x_adv = x + eps * sign(∇_x J(θ, x, y))`` (§3);
the L2 variant ("FGM") steps ``eps * g / ||g||_2``. ``J`` is the
cross-entropy; a targeted attack steps to *decrease* the cross-entropy of the
target class instead. The result is clipped to the classifier's bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from labelflip._settings import Settings, setting
from labelflip.attacks._common import (
    NORMS,
    ce_gradient,
    check_eps,
    new_counts,
    prepare_inputs,
    steepest_direction,
)
from labelflip.attacks._registry import register_attack
from labelflip.attacks._result import AttackResult, finalize_counts
from labelflip.models.classifier import Classifier

DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5}


@dataclass(frozen=True)
class FGSMSettings(Settings):
    """Settings of :func:`fgsm`. ``eps=None`` means the norm's default
    (8/255 for ``linf``, 0.5 for ``l2``); it is resolved on construction."""

    eps: float | None = setting(None, ge=0.0, doc="the step (8/255 linf, 0.5 l2 when none)")
    norm: str = setting("linf", choices=NORMS, doc="the threat model's norm")

    def resolve(self) -> None:
        if self.eps is None and self.norm in DEFAULT_EPS:
            object.__setattr__(self, "eps", DEFAULT_EPS[self.norm])


@register_attack(
    "fgsm",
    FGSMSettings,
    "Fast Gradient Sign Method (linf) / Fast Gradient Method (l2), Goodfellow et al. 2015",
)
def fgsm(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    s: FGSMSettings,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """One gradient step of size ``eps`` (sign step for ``linf``, normalised
    gradient step for ``l2``). Deterministic; ``generator`` is accepted for a
    uniform signature and unused. Counts 1 iteration, 1 forward and 1 backward
    pass per sample."""
    assert s.eps is not None
    x0, y, target = prepare_inputs(clf, x, y, target, generator)
    check_eps("fgsm", s.eps, s.norm, clf, x0)
    iterations, forwards, backwards = new_counts(len(x0), x0.device)
    x_adv = x0
    if len(x0):
        targeted = target is not None
        grad = ce_gradient(clf, x0, target if targeted else y)
        direction = steepest_direction(grad, s.norm)
        x_adv = x0 + (-s.eps if targeted else s.eps) * direction
        iterations += 1
        forwards += 1
        backwards += 1
    return finalize_counts(clf, x0, y, x_adv, target, (iterations, forwards, backwards))
