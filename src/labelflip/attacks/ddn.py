"""Decoupled Direction and Norm (DDN), an L2 minimal-perturbation attack.

Rony, Hafemann, Oliveira, Ben Ayed, Sabourin & Granger, "Decoupling
Direction and Norm for Efficient Gradient-Based L2 Adversarial Attacks and
Defenses" (CVPR 2019), Algorithm 1. The perturbation's direction and its
norm are updated separately. With ``δ_0 = 0``, ``x̃_0 = x``, ``ε_0`` the
initial norm and ``m = +1`` (``-1`` when targeted), per iteration ``k``:

- lines 4–6: ``g = m ∇_x̃ J(x̃_{k-1}, y)`` (cross-entropy of the true class;
  of the target when targeted), ``δ_k = δ_{k-1} + α g / ||g||_2``;
- lines 7–11: ``ε_k = (1 - γ) ε_{k-1}`` if ``x̃_{k-1}`` is adversarial, else
  ``(1 + γ) ε_{k-1}``;
- lines 12–13: ``x̃_k = clip(x + ε_k δ_k / ||δ_k||_2)`` (projection onto the
  ``ε_k``-sphere around ``x``, then into the box);
- line 15: the result is the adversarial ``x̃_k`` of smallest ``||x̃_k - x||_2``
  over all iterations (``x`` itself where none was found).

As in the authors' reference implementation (adv_lib's ``ddn``): the step
``α`` follows a cosine schedule from 1 down to 0.01 over the iterations
(§3, "α ... cosine annealing"), ``ε_k`` never exceeds the distance from
``x`` to the farthest corner of the box, and a zero gradient is replaced by
a random Gaussian direction (drawn from ``generator``). The reference also
rounds every iterate to 256 levels (8-bit images); here that is the
``levels`` setting, off by default, since labelflip measures distances to
the model's decision boundary in continuous input space.

Batched execution: a sample that is already adversarial at ``x`` (predicted
other than ``y``, or as its target) is returned unchanged after one forward
pass. The others run all ``steps`` iterations (DDN has no exit criterion:
the norm keeps oscillating around the boundary while the best adversarial
shrinks); samples are independent, so on a CPU every iteration of a
cache-sized chunk of samples runs before the next chunk
(:func:`~labelflip.attacks._common.map_chunks`).

Pass counting, per sample: 1 forward for the initial check, then 1 forward +
1 backward per iteration (the forward both judges ``x̃_{k-1}`` and gives the
gradient); ``iterations`` is the number of iterations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from labelflip._settings import Settings, setting
from labelflip.attacks._common import (
    generator_or_default,
    l2_norms,
    map_chunks,
    new_counts,
    normal,
    prepare_inputs,
    report_progress,
    rows,
)
from labelflip.attacks._registry import register_attack
from labelflip.attacks._result import AttackResult, finalize_counts
from labelflip.attacks.deepfool import predict_logits
from labelflip.models.classifier import Classifier

# The cosine schedule of the step α (adv_lib's reference implementation).
MAX_STEP = 1.0
MIN_STEP = 0.01


@dataclass(frozen=True)
class DDNSettings(Settings):
    """Settings of :func:`ddn`: the reference implementation's defaults,
    except ``levels`` (the reference rounds to 256)."""

    steps: int = setting(100, gt=0, doc="iterations K (all run; the best adversarial is kept)")
    gamma: float = setting(0.05, gt=0.0, lt=1.0, doc="norm factor: eps * (1 -/+ gamma) per step")
    init_norm: float = setting(1.0, gt=0.0, doc="eps_0, the initial norm")
    levels: int | None = setting(None, ge=2, doc="round every iterate to this many values")


def is_adversarial(pred: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Untargeted: the prediction left ``labels`` (the true classes);
    targeted: it equals ``labels`` (the targets)."""
    return pred == labels if targeted else pred != labels


def quantize(x: torch.Tensor, bounds: tuple[float, float], levels: int) -> torch.Tensor:
    """``x`` rounded to ``levels`` equally spaced values spanning ``bounds``."""
    lo, hi = bounds
    scale = (levels - 1) / (hi - lo)
    return lo + ((x - lo) * scale).round() / scale


def already_adversarial(
    clf: Classifier, x0: torch.Tensor, labels: torch.Tensor, targeted: bool
) -> torch.Tensor:
    """Which samples are adversarial before any change (one forward pass)."""
    return is_adversarial(predict_logits(clf, x0).argmax(1), labels, targeted)


def attack_unfinished(
    clf: Classifier,
    x0: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    attack_chunk: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The bookkeeping of a minimal attack with a budget of iterations (DDN,
    ALMA): the samples not already adversarial (one forward pass each) are
    attacked per chunk by ``attack_chunk(x, labels) -> (best, iterations)``,
    the best point and the iterations each sample ran (at most ``steps``),
    each charged one forward and one backward. The others stay ``x0``.
    Returns the best points and the (iterations, forwards, backwards) counts."""
    iterations, forwards, backwards = new_counts(len(x0), x0.device)
    best = x0.clone()
    if len(x0):
        forwards += 1
        todo = torch.nonzero(~already_adversarial(clf, x0, labels, targeted)).squeeze(1)
        if todo.numel():
            best_todo, iters = map_chunks(attack_chunk, 1, x0[todo], labels[todo])
            best[todo] = best_todo
            iterations[todo] += iters
            forwards[todo] += iters
            backwards[todo] += iters
    return best, (iterations, forwards, backwards)


@register_attack(
    "ddn",
    DDNSettings,
    "Decoupled Direction and Norm (l2), minimal perturbation, Rony et al. 2019",
)
def ddn(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    s: DDNSettings,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """DDN (Algorithm 1), targeted when ``target`` is given; returns the
    smallest-L2 adversarial found per sample. ``generator`` only draws the
    random direction that replaces a zero gradient."""
    x0, y, target = prepare_inputs(clf, x, y, target, generator)
    targeted = target is not None
    labels = target if targeted else y
    gen = generator_or_default(generator)
    best, counts = attack_unfinished(
        clf, x0, labels, targeted, lambda xc, lc: _ddn_chunk(clf, xc, lc, s, targeted, gen)
    )
    return finalize_counts(clf, x0, y, best, target, counts)


def _ddn_chunk(
    clf: Classifier,
    x0: torch.Tensor,
    labels: torch.Tensor,
    s: DDNSettings,
    targeted: bool,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All DDN iterations for one chunk of samples: the best adversarial of
    each, and the iterations (all ``steps``)."""
    n = len(x0)
    lo, hi = clf.bounds
    sign = -1.0 if targeted else 1.0
    delta = torch.zeros_like(x0)
    eps = torch.full((n,), float(s.init_norm), dtype=x0.dtype, device=x0.device)
    # the norm never needs to exceed the distance to the farthest corner of the box
    widest = l2_norms(torch.maximum(x0 - lo, hi - x0))
    best = x0.clone()
    best_norm = torch.full((n,), math.inf, dtype=x0.dtype, device=x0.device)
    for k in range(s.steps):
        alpha = MIN_STEP + (MAX_STEP - MIN_STEP) * (1 + math.cos(math.pi * k / s.steps)) / 2
        with torch.enable_grad():
            xk = (x0 + delta).requires_grad_(True)
            logits = clf(xk)
            loss = F.cross_entropy(logits, labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xk)
        xk = xk.detach()
        adv = is_adversarial(logits.detach().argmax(1), labels, targeted)
        norm = l2_norms(delta)
        better = adv & (norm < best_norm)
        best_norm = torch.where(better, norm, best_norm)
        best[better] = xk[better]

        # lines 4-6: a step of length α along the (signed) normalised gradient
        grad = sign * grad
        gnorm = l2_norms(grad)
        flat = gnorm < 1e-12
        if flat.any():
            grad[flat] = normal((int(flat.sum()), *x0.shape[1:]), gen, x0)
            gnorm = l2_norms(grad)
        delta = delta + alpha * grad / rows(gnorm, grad)
        # lines 7-11: shrink the norm after an adversarial iterate, grow it otherwise
        eps = torch.where(adv, (1 - s.gamma) * eps, (1 + s.gamma) * eps).minimum(widest)
        # lines 12-13: onto the eps-sphere around x, then into the box
        delta = delta * rows(eps / l2_norms(delta).clamp_min(1e-12), delta)
        xk = clf.clip(x0 + delta)
        if s.levels is not None:
            xk = quantize(xk, clf.bounds, s.levels)
        delta = xk - x0
        report_progress(k + 1, s.steps)  # of this chunk (map_chunks)
    return best, torch.full((n,), s.steps, dtype=torch.long, device=x0.device)
