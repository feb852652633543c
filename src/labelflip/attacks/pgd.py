"""Projected Gradient Descent (PGD) in L∞ and L2.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models
Resistant to Adversarial Attacks" (ICLR 2018), eq. (2):
``x^{t+1} = Π_{x+S}(x^t + α sign(∇_x L(θ, x^t, y)))``, with a random start in
the ε-ball. As in Foolbox 3 (``LinfPGD``/``L2PGD``): the loss is the
cross-entropy, the L∞ step uses the gradient's sign and the L2 step the
per-sample L2-normalised gradient; each step is followed by the projection
onto the ε-ball and then by clipping to the classifier's bounds; the final
iterate is returned (no early stop). A targeted attack descends the
cross-entropy of the target class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from labelflip._settings import Settings, setting
from labelflip.attacks._common import (
    NORMS,
    ce_gradient,
    check_eps,
    generator_or_default,
    map_chunks,
    new_counts,
    prepare_inputs,
    project_l2,
    project_linf,
    random_start_l2,
    random_start_linf,
    report_progress,
    steepest_direction,
)
from labelflip.attacks._registry import register_attack
from labelflip.attacks._result import AttackResult, finalize_counts
from labelflip.models.classifier import Classifier

# Norm-dependent defaults (Foolbox 3.3: LinfPGD and L2PGD).
DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5}
DEFAULT_STEPS = {"linf": 40, "l2": 50}
DEFAULT_REL_STEPSIZE = {"linf": 0.01 / 0.3, "l2": 0.025}


@dataclass(frozen=True)
class PGDSettings(Settings):
    """Settings of :func:`pgd`. ``None`` means the norm's default, resolved on
    construction: eps 8/255 (linf) or 0.5 (l2); steps 40 (linf) or 50 (l2);
    rel_stepsize 0.01/0.3 (linf) or 0.025 (l2). The step size is
    ``abs_stepsize`` if given, else ``rel_stepsize * eps``."""

    eps: float | None = setting(None, ge=0.0, doc="the budget (8/255 linf, 0.5 l2 when none)")
    norm: str = setting("linf", choices=NORMS, doc="the threat model's norm")
    steps: int | None = setting(None, gt=0, doc="iterations (40 linf, 50 l2 when none)")
    rel_stepsize: float | None = setting(None, gt=0, doc="step size relative to eps")
    abs_stepsize: float | None = setting(None, gt=0, doc="step size in input units")
    random_start: bool = setting(True, doc="start from a uniform draw in the eps-ball")

    def resolve(self) -> None:
        if self.norm in NORMS:
            for name, table in (
                ("eps", DEFAULT_EPS),
                ("steps", DEFAULT_STEPS),
                ("rel_stepsize", DEFAULT_REL_STEPSIZE),
            ):
                if getattr(self, name) is None:
                    object.__setattr__(self, name, table[self.norm])

    @property
    def stepsize(self) -> float:
        if self.abs_stepsize is not None:
            return float(self.abs_stepsize)
        return float(self.rel_stepsize) * float(self.eps)  # type: ignore[arg-type]


@register_attack(
    "pgd",
    PGDSettings,
    "Projected Gradient Descent (linf, l2) with random start, Madry et al. 2018",
)
def pgd(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    s: PGDSettings,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """PGD with ``steps`` iterations (Madry et al. 2018, eq. 2).

    The random start is drawn from ``generator`` (a fresh generator seeded
    with 0 when ``None``; the global RNG is never used). Counts ``steps``
    iterations, forwards and backwards per sample."""
    x0, y, target = prepare_inputs(clf, x, y, target, generator)
    eps_ = float(s.eps)  # type: ignore[arg-type]
    n_steps = int(s.steps)  # type: ignore[arg-type]
    check_eps("pgd", eps_, s.norm, clf, x0)
    iterations, forwards, backwards = new_counts(len(x0), x0.device)
    targeted = target is not None
    labels = target if targeted else y
    step = -s.stepsize if targeted else s.stepsize
    project = project_linf if s.norm == "linf" else project_l2

    x_adv = x0
    if len(x0):
        if s.random_start:
            gen = generator_or_default(generator)
            start = random_start_linf if s.norm == "linf" else random_start_l2
            x_adv = clf.clip(start(x0, eps_, gen))

        def iterate(xa: torch.Tensor, xc: torch.Tensor, lc: torch.Tensor) -> tuple[torch.Tensor]:
            for k in range(n_steps):
                direction = steepest_direction(ce_gradient(clf, xa, lc), s.norm)
                xa = clf.clip(project(xa + step * direction, xc, eps_))
                report_progress(k + 1, n_steps)  # of this chunk (map_chunks)
            return (xa,)

        # samples are independent: on a CPU all steps run per cache-sized chunk
        (x_adv,) = map_chunks(iterate, 1, x_adv, x0, labels)
        iterations += n_steps
        forwards += n_steps
        backwards += n_steps
    return finalize_counts(clf, x0, y, x_adv, target, (iterations, forwards, backwards))
