"""ALMA, the Augmented Lagrangian Method for Adversarial attacks, in L2.

Rony, Granger, Pedersoli & Ben Ayed, "Augmented Lagrangian Adversarial
Attacks" (ICCV 2021), Algorithm 1 with the L2 distance. The minimal-norm
problem ``min_δ ||δ||_2  s.t.  g(x + δ) ≤ 0,  x + δ ∈ [lo, hi]`` (eq. 1) is
solved with a penalty-Lagrangian ``P(g, ρ, μ)`` (eq. 4) whose multiplier
``μ`` and penalty ``ρ`` are adapted per sample while a gradient method
minimises ``||δ||_2 + P(g(x + δ), ρ, μ)`` over ``δ``:

- the constraint ``g`` is the difference of logits ratio, modified to be
  positive exactly when the input is not adversarial (§3.3, after Croce &
  Hein's DLR): untargeted ``g = (z_y - max_{j≠y} z_j + τ_l) / (z_π1 - z_π3)``,
  targeted ``g = (max_{j≠t} z_j - z_t + τ_l) / (z_π1 - (z_π3 + z_π4) / 2)``,
  with ``z_πi`` the ``i``-th largest logit and the tolerance ``τ_l``
  (``logit_tolerance``) putting the adversarial side strictly past the
  boundary; ``g < 0`` counts as adversarial;
- the penalty-Lagrangian is ``P2`` of the paper's table (Birgin et al.):
  ``P2(g) = μ g + μ ρ g² + ρ² g³ / 6`` for ``g ≥ 0`` and
  ``μ g / (1 - ρ g)`` for ``g < 0``;
- multiplier update (Algorithm 1, the exponential moving average of the
  first-order estimate): ``μ ← α μ + (1 - α) ∂P2/∂g (g, ρ, μ)``, clipped to
  ``[1e-6, 1e12]``; penalty update: every ``M = check_steps`` iterations,
  ``ρ ← γ ρ`` for a sample that is not adversarial yet and whose constraint
  did not decrease to ``τ`` times its value ``M`` iterations earlier;
- the first iteration minimises the penalty alone (no distance term);
- the step is RMSProp with momentum (smoothing ``α``, momentum ``α``,
  ``square_avg`` starting at ones); the learning rate ``η`` stays at
  ``lr_init`` until the sample's first adversarial iterate (step ``i*``) and
  then decays exponentially to ``lr_init · lr_reduction`` at the last step:
  ``η_i = lr_init · lr_reduction^((i - i*) / (K - i*))``;
- every iterate is clipped into the box; the result is the adversarial
  iterate of smallest ``||δ||_2`` (``x`` itself where none was found).

Defaults are the reference implementation's (adv_lib's ``alma`` with
``distance='l2'``, penalty P2): 1000 steps, ``lr_init = 0.1``,
``lr_reduction = 0.01``, ``μ_0 = ρ_0 = 1``, ``M = 10``, ``τ = 0.95``,
``γ = 1.2``, ``α = 0.9``, ``τ_l = 1e-4``. One deliberate difference: the
reference writes the targeted tolerance with the other sign (it counts a
point up to ``τ_l`` short of the target's boundary as adversarial); here
both directions require the margin ``τ_l`` past the boundary.

The DLR normalisation needs a third logit: the attack requires at least 3
classes (a 3-class targeted attack uses the third logit for both ``π3`` and
``π4``).

Per-sample horizon (``decay_steps``, labelflip's addition, off by default):
the reference decays every sample's learning rate from its first success
``i*`` until the last step ``K``, so a sample found early spends most of the
budget on a slow decay and none stops before ``K``. With ``decay_steps = H``
the decay runs over ``H`` iterations instead, ``η_i = lr_init ·
lr_reduction^((i - i*) / H)``, and the sample stops at ``i* + H`` (never
after ``K``): the budget ``K`` is a cap, and each sample gets the same
schedule whenever it first succeeds. ``benchmarks/minimal_norm.py`` measures
what it costs in norm (docs/benchmarks.md).

Batched execution: a sample already adversarial at ``x`` is returned
unchanged after one forward pass; the others iterate until their horizon,
each with its own ``μ``, ``ρ`` and learning rate, so on a CPU every
iteration of a cache-sized chunk of samples runs before the next chunk
(:func:`~labelflip.attacks._common.map_chunks`); a stopped sample leaves the
batch the model sees.

Pass counting, per sample: 1 forward for the initial check, then 1 forward +
1 backward per iteration; ``iterations`` is the number of iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from labelflip._settings import Settings, setting
from labelflip.attacks._common import (
    l2_norms,
    prepare_inputs,
    report_progress,
    rows,
)
from labelflip.attacks._registry import register_attack
from labelflip.attacks._result import AttackResult, finalize_counts
from labelflip.attacks.ddn import attack_unfinished
from labelflip.errors import LabelflipError
from labelflip.models.classifier import Classifier


@dataclass(frozen=True)
class ALMASettings(Settings):
    """Settings of :func:`alma` (the reference implementation's L2 defaults)."""

    steps: int = setting(
        1000, gt=0, doc="iterations K, the budget (the best adversarial iterate is kept)"
    )
    lr_init: float = setting(0.1, gt=0.0, doc="initial learning rate")
    lr_reduction: float = setting(
        0.01, gt=0.0, le=1.0, doc="final learning rate / initial (decay after the first success)"
    )
    mu_init: float = setting(1.0, gt=0.0, doc="initial Lagrange multiplier mu")
    rho_init: float = setting(1.0, gt=0.0, doc="initial penalty parameter rho")
    check_steps: int = setting(10, gt=0, doc="M: iterations between checks of the constraint")
    tau: float = setting(0.95, gt=0.0, le=1.0, doc="required constraint improvement per check")
    gamma: float = setting(1.2, ge=1.0, doc="rho growth factor when the constraint stalls")
    alpha: float = setting(
        0.9, ge=0.0, lt=1.0, doc="moving-average weight of mu, RMSProp and momentum"
    )
    logit_tolerance: float = setting(
        1e-4, ge=0.0, doc="logit margin past the boundary that counts as adversarial"
    )
    decay_steps: int | None = setting(
        None,
        gt=0,
        doc="per sample: iterations after its first adversarial over which the learning "
        "rate decays, then the sample stops (none: decay until `steps`, as the reference)",
    )


def p2(g: torch.Tensor, rho: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """The penalty-Lagrangian P2 (Birgin et al.; the paper's table of penalties)."""
    above = mu * g + mu * rho * g.square() + rho.square() * g.pow(3) / 6
    below = mu * g / (1 - rho * g.clamp(max=0))
    return torch.where(g >= 0, above, below)


def p2_slope(g: torch.Tensor, rho: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """``∂P2/∂g``: the first-order estimate of the new multiplier."""
    above = mu + 2 * mu * rho * g + rho.square() * g.square() / 2
    below = mu / (1 - rho * g.clamp(max=0)).square()
    return torch.where(g >= 0, above, below)


def dlr_constraint(
    logits: torch.Tensor, labels: torch.Tensor, targeted: bool, tolerance: float
) -> torch.Tensor:
    """The modified difference of logits ratio ``g`` (module docstring):
    ``g < 0`` iff the input is adversarial with margin ``tolerance``."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    top = logits.topk(min(4, logits.shape[1]), dim=1).values
    third = top[:, min(2, top.shape[1] - 1)]
    if targeted:
        margin = other - own
        scale = top[:, 0] - (third + top[:, -1]) / 2
    else:
        margin = own - other
        scale = top[:, 0] - third
    return (margin + tolerance) / (scale + 1e-8)


@register_attack(
    "alma",
    ALMASettings,
    "ALMA, Augmented Lagrangian minimal perturbation (l2, penalty P2), Rony et al. 2021",
)
def alma(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    s: ALMASettings,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """ALMA L2 (Algorithm 1, penalty P2), targeted when ``target`` is given;
    returns the smallest-L2 adversarial found per sample. Deterministic;
    ``generator`` is accepted for a uniform signature and unused."""
    x0, y, target = prepare_inputs(clf, x, y, target, generator)
    if clf.num_classes < 3:
        raise LabelflipError(
            f"alma needs a model with at least 3 classes (its constraint normalises by the "
            f"third-largest logit), got {clf.num_classes}"
        )
    targeted = target is not None
    labels = target if targeted else y
    best, counts = attack_unfinished(
        clf, x0, labels, targeted, lambda xc, lc: _alma_chunk(clf, xc, lc, s, targeted)
    )
    return finalize_counts(clf, x0, y, best, target, counts)


def _alma_chunk(
    clf: Classifier, x0: torch.Tensor, labels: torch.Tensor, s: ALMASettings, targeted: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """All ALMA iterations for one chunk of samples: the best adversarial of
    each and the iterations it ran. A sample stops at its horizon (``steps``,
    or ``decay_steps`` after its first adversarial iterate); the state of the
    samples still running is kept compact, so the model only sees those."""
    n, dev, dt = len(x0), x0.device, x0.dtype
    steps = s.steps
    best = x0.clone()
    best_norm = torch.full((n,), math.inf, dtype=dt, device=dev)
    iterations = torch.full((n,), steps, dtype=torch.long, device=dev)
    # the running samples: their chunk positions and state
    pos = torch.arange(n, device=dev)
    xr, lab = x0, labels
    delta = torch.zeros_like(x0)
    square_avg = torch.ones_like(x0)
    momentum = torch.zeros_like(x0)
    mu = torch.full((n,), float(s.mu_init), dtype=dt, device=dev)
    rho = torch.full((n,), float(s.rho_init), dtype=dt, device=dev)
    found_at = torch.full((n,), steps + 1, dtype=dt, device=dev)
    end = torch.full((n,), steps, dtype=dt, device=dev)  # the iteration a sample stops at
    prev_g = torch.zeros(n, dtype=dt, device=dev)

    for i in range(steps):
        with torch.enable_grad():
            d = delta.requires_grad_(True)
            g = dlr_constraint(clf(xr + d), lab, targeted, s.logit_tolerance)
            gd = g.detach()
            found = found_at <= i
            if i == 0:
                prev_g = gd
            elif (i + 1) % s.check_steps == 0:
                # ρ grows where no adversarial was found and the constraint stalled
                stalled = ~(found | (gd < s.tau * prev_g))
                rho = torch.where(stalled, s.gamma * rho, rho)
                prev_g = gd
            if i:
                mu = (s.alpha * mu + (1 - s.alpha) * p2_slope(gd, rho, mu)).clamp(1e-6, 1e12)
            penalty = p2(g, rho, mu)
            loss = penalty if i == 0 else l2_norms(d) + penalty
            (grad,) = torch.autograd.grad(loss.sum(), d)
        delta = delta.detach()

        # bookkeeping: the smallest adversarial iterate so far
        adv = gd < 0
        norm = l2_norms(delta)
        better = adv & (norm < best_norm[pos])
        best_norm[pos[better]] = norm[better]
        best[pos[better]] = (xr + delta)[better]
        first = ~found & adv
        found_at = torch.where(first, float(i), found_at)
        if s.decay_steps is not None:
            end = torch.where(first, (found_at + s.decay_steps).clamp(max=steps), end)

        # RMSProp with momentum; the learning rate decays after the first success
        since = (i - found_at).clamp(min=0) / (end - found_at)
        lr = s.lr_init * s.lr_reduction**since
        square_avg = s.alpha * square_avg + (1 - s.alpha) * grad.square()
        momentum = s.alpha * momentum + grad / (square_avg.sqrt() + 1e-8)
        delta = clf.clip(xr + delta - rows(lr, delta) * momentum) - xr
        report_progress(i + 1, steps)  # of this chunk (map_chunks)

        # samples at their horizon stop; the others' state is kept compact
        done = end <= i + 1
        if done.any() and i + 1 < steps:
            iterations[pos[done]] = i + 1
            keep = ~done
            if not keep.any():
                break
            pos, xr, lab, delta, square_avg, momentum = (
                t[keep] for t in (pos, xr, lab, delta, square_avg, momentum)
            )
            mu, rho, found_at, end, prev_g = (t[keep] for t in (mu, rho, found_at, end, prev_g))
    report_progress(steps, steps)
    return best, iterations
