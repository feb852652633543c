"""DeepFool, multi-class (L2 and L∞), batched with per-sample early exit.

Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method
to fool deep neural networks" (CVPR 2016), Algorithm 2. At each iteration the
classifier is linearised around the current point ``x_i`` (eq. 10) and the
step goes to the closest linearised boundary, the affine closed form of
eqs. (8)–(9): with ``f'_k = f_k(x_i) - f_{k̂(x_0)}(x_i)`` and
``w'_k = ∇f_k(x_i) - ∇f_{k̂(x_0)}(x_i)``,

- L2: ``l̂ = argmin_k |f'_k| / ||w'_k||_2``, ``r_i = |f'_l̂| / ||w'_l̂||_2^2 · w'_l̂``;
- L∞ (§3.2, ``p = ∞``, ``q = 1``): ``l̂ = argmin_k |f'_k| / ||w'_k||_1``,
  ``r_i = |f'_l̂| / ||w'_l̂||_1 · sign(w'_l̂)``.

As in the authors' reference code and Foolbox 3 (``L2DeepFoolAttack``,
``LinfDeepFoolAttack``): only the ``candidates`` classes with the largest
initial logits are considered (the original class among them); the overshoot
is applied to the accumulated perturbation, ``x_{i+1} = clip(x_0 + (1 + η)
Σ r_i)``; the distance gets ``+1e-4`` and norms ``+1e-8`` for numerical
stability; at most ``steps`` iterations.

Batched execution: a sample that is adversarial (its prediction differs from
its label) leaves the active batch; there is no Python loop over samples and
no host synchronisation per sample. The gradients of the ``candidates - 1``
logit differences of all active samples come from
:func:`~labelflip.attacks._common.output_vjps`: on an accelerator one forward
and one backward pass over ``candidates - 1`` copies of every active sample,
on a CPU one shared forward pass and a backward pass per candidate (its
docstring says why; the timings are in docs/benchmarks.md).

Pass counting, per sample: 1 forward for the initial logits; then per
iteration 1 forward + 1 backward for the gradients of all its candidates (the
replicated copies, or the per-candidate backward passes, together count as
one, whatever the device) and 1 forward (no gradient) to check
whether the new point is adversarial (skipped after the last allowed
iteration, where the final evaluation decides).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from labelflip._settings import Settings, setting
from labelflip.attacks._common import (
    new_counts,
    output_vjps,
    prepare_inputs,
    report_progress,
    rows,
    sample_chunks,
)
from labelflip.attacks._registry import register_attack
from labelflip.attacks._result import AttackResult, finalize_counts
from labelflip.errors import LabelflipError
from labelflip.models.classifier import Classifier

DEEPFOOL_NORMS = ("l2", "linf")


@dataclass(frozen=True)
class DeepFoolSettings(Settings):
    """Settings of :func:`deepfool` (Foolbox-compatible defaults).
    ``candidates=None`` considers every class."""

    norm: str = setting("l2", choices=DEEPFOOL_NORMS, doc="the norm of the linearised step")
    steps: int = setting(50, gt=0, doc="at most this many steps")
    candidates: int | None = setting(10, ge=2, doc="classes with the largest logits considered")
    overshoot: float = setting(0.02, ge=0.0, doc="eta: x0 + (1 + eta) * sum of steps")


def predict_logits(clf: Classifier, x: torch.Tensor) -> torch.Tensor:
    """Logits of ``x`` without gradients (in CPU-sized chunks on a CPU)."""
    with torch.no_grad():
        return torch.cat([clf(x[c]) for c in sample_chunks(len(x), 1, x.device)])


def candidate_gradients(
    clf: Classifier, x: torch.Tensor, classes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logit differences ``f_{c_j}(x) - f_{c_0}(x)`` for ``j = 1..k-1`` and their
    gradients w.r.t. ``x``, for every row of ``x``: shapes ``(A, k-1)`` and
    ``(A, k-1, *x.shape[1:])``, from :func:`~labelflip.attacks._common.output_vjps`
    (on an accelerator one forward and one backward pass over ``A * (k-1)``
    rows; on a CPU one forward and ``k-1`` backward passes per chunk)."""
    a, k = classes.shape
    v = torch.zeros(a, k - 1, clf.num_classes, device=x.device)
    v.scatter_(2, classes[:, 1:].unsqueeze(2), 1.0)
    v.scatter_(2, classes[:, :1].unsqueeze(1).expand(a, k - 1, 1), -1.0)
    logits, grads = output_vjps(clf, x, v)
    diffs = logits.gather(1, classes[:, 1:]) - logits.gather(1, classes[:, :1])
    return diffs, grads


def linearised_steps(
    clf: Classifier,
    x0: torch.Tensor,
    active: torch.Tensor,
    counts: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    steps: int,
    overshoot: float,
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    stays: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The loop DeepFool (Algorithm 2) and LabelFool (Algorithm 1) share: each
    sample at the positions ``active`` adds its linearised step
    ``step(x_active, active)`` to the sum of its steps, moves to
    ``clip(x0 + (1 + overshoot) * sum)`` and stays active while
    ``stays(prediction, active)``; at most ``steps`` steps (the point after the
    last one is not checked). A step costs the sample one iteration, one
    forward and one backward pass, a check one forward pass (added into
    ``counts``, the (iterations, forwards, backwards) counters). Returns the
    points reached (``x0`` for a sample never active)."""
    iterations, forwards, backwards = counts
    x_adv = x0.clone()
    scale = 1.0 + overshoot
    p_total = torch.zeros_like(x0)
    for k in range(steps):
        if active.numel() == 0:
            break
        p_new = p_total[active] + step(x_adv[active], active)
        p_total[active] = p_new
        xa = clf.clip(x0[active] + scale * p_new)
        x_adv[active] = xa
        iterations[active] += 1
        forwards[active] += 1
        backwards[active] += 1
        if k + 1 == steps:
            break
        still = stays(predict_logits(clf, xa).argmax(1), active)
        forwards[active] += 1
        active = active[still]
        report_progress(len(x0) - active.numel(), len(x0))  # samples done
    return x_adv


@register_attack(
    "deepfool",
    DeepFoolSettings,
    "DeepFool (l2, linf), untargeted minimal perturbation, Moosavi-Dezfooli et al. 2016",
    accepts_target=False,
)
def deepfool(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    s: DeepFoolSettings,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Untargeted DeepFool (Algorithm 2; eqs. 8–9 per linearised step, §3.2 for
    L∞). Deterministic; ``generator`` is accepted for a uniform signature and
    unused. ``iterations`` is the number of steps a sample took (0 for a
    sample already misclassified)."""
    if target is not None:
        raise LabelflipError("deepfool is an untargeted attack; it takes no target classes")
    x0, y, _ = prepare_inputs(clf, x, y, None, generator)
    counts = new_counts(len(x0), x0.device)
    k = clf.num_classes if s.candidates is None else min(s.candidates, clf.num_classes)
    if k < 2:
        raise LabelflipError(f"deepfool needs a model with at least 2 classes, got {k}")
    linf = s.norm == "linf"

    logits = predict_logits(clf, x0)
    counts[1].add_(1)  # the clean forward pass
    classes = logits.argsort(dim=1, descending=True)[:, :k]
    active = torch.nonzero(logits.argmax(1) == y).squeeze(1)

    def step(xa: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """The step onto the nearest linearised boundary (eqs. 8–9; §3.2 for L∞)."""
        diffs, grads = candidate_gradients(clf, xa, classes[active])
        flat = grads.flatten(2)
        gnorm = flat.abs().sum(2) if linf else flat.norm(dim=2)  # (A, k-1)
        dist = diffs.abs() / (gnorm + 1e-8)
        best = dist.argmin(1, keepdim=True)
        d = dist.gather(1, best).squeeze(1) + 1e-4
        g = grads[torch.arange(len(active), device=x0.device), best.squeeze(1)]
        if linf:
            return rows(d, g) * g.sign()
        return rows(d / (gnorm.gather(1, best).squeeze(1) + 1e-8), g) * g

    x_adv = linearised_steps(
        clf, x0, active, counts, steps=s.steps, overshoot=s.overshoot, step=step,
        stays=lambda pred, active: pred == y[active],
    )  # fmt: skip
    return finalize_counts(clf, x0, y, x_adv, None, counts)
