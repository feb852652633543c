"""Fast Minimum-Norm (FMN) attack in L0, L1, L2 and L∞, targeted and untargeted.

Pintor, Roli, Brendel & Biggio, "Fast Minimum-norm Adversarial Attacks through
Adaptive Norm Constraints" (NeurIPS 2021, arXiv:2102.12827), Algorithm 1.

The minimum-norm problem ``min ||δ||_p s.t. L(x + δ) < 0, x + δ ∈ [lo, hi]``
is recast as the search of the smallest radius ``ε`` of an Lp ball in which
the loss can be driven below zero. ``L`` is the logit difference: untargeted
``L = f_y(x) - max_{j≠y} f_j(x)``, targeted ``L = max_{j≠t} f_j(x) - f_t(x)``;
a point is adversarial when the model's decision is ``≠ y`` (``= t``). Each
of the ``K = steps`` iterations ``k = 0..K-1`` spends one forward and one
backward pass at the current point ``x_k = x + δ_k`` and then

1. **bookkeeping**: if ``x_k`` is adversarial and ``||δ_k||_p`` is below the
   best norm so far, ``x_k`` becomes the sample's best adversarial ``δ*``;
2. **ε-step** (cosine-annealed ``γ_k = γ_K + (γ_0 - γ_K)(1 + cos(πk/K))/2``):

   - ``x_k`` adversarial: shrink, ``ε ← min(ε (1 - γ_k), ||δ*||_p)``;
   - not adversarial, an adversarial already found: grow, ``ε ← ε (1 + γ_k)``;
   - none found yet: the linear estimate of the distance to the boundary,
     ``ε ← ||δ_k||_p + |L(x_k)| / ||∇L(x_k)||_q`` with ``q`` the dual
     (Hölder-conjugate) exponent of ``p``: ``q = 2`` for L2, ``q = 1`` for
     L∞ and ``q = ∞`` for L1 — the first-order distance to ``L = 0``
     measured in the norm ``p``; here at least ``(1 + γ_k) ||δ_k||_p``
     (see "Differences" below);
   - L0 (no dual norm, integer ``ε``, starting at 1): shrink to
     ``min(ε - 1, ⌊ε (1 - γ_k)⌋, ||δ*||_0)``, grow to ``max(ε + 1, ⌊ε (1 + γ_k)⌋)``;

   and ``ε`` never exceeds the largest norm the box allows;
3. **δ-step** (Algorithm 1, line 18: the direction has unit L2 norm whatever
   ``p``; step cosine-annealed like ``γ``,
   ``α_k = α_K + (α_0 - α_K)(1 + cos(πk/K))/2``):
   ``δ ← δ - α_k ∇L / ||∇L||_2``, then the projection onto the ε-ball of
   the norm ``p`` and the clipping of ``x + δ`` into the box:

   - L∞: clamp every component to ``[-ε, ε]``;
   - L2: scale ``δ`` down to norm ``ε`` when it is longer;
   - L1: the Euclidean projection onto the L1 ball, by sorting (Duchi,
     Shalev-Shwartz, Singer & Chandra, ICML 2008, Fig. 1): with ``u`` the
     sorted magnitudes and ``ρ`` the largest ``j`` such that
     ``u_j > (Σ_{i≤j} u_i - ε) / j``, soft-threshold every component by
     ``θ = (Σ_{i≤ρ} u_i - ε) / ρ``;
   - L0: hard threshold, keep the ``ε`` components of largest magnitude
     (exactly ``ε``; ties broken by position) and zero the others.

The attack returns ``x + δ*``, the smallest-norm adversarial point it
evaluated (or ``x`` itself where it found none; :func:`finalize` then
reports a failure).

Defaults are the authors' reference code and adv_lib's: 10 steps,
``α_0 = 1``, ``α_K = α_0 / 100``, ``γ_0 = 0.05``, ``γ_K = 0.001`` (Foolbox 3
uses 100 steps, the paper's experiments up to 1000). Step sizes and ``ε``
are in input units, as everywhere in labelflip; the defaults assume inputs
in ``[0, 1]``.

Warm start (:func:`fmn_from_starts`, the references' ``starting_points``):
for each sample whose starting point ``x_1`` is adversarial, a bisection of
``binary_search_steps`` forward passes finds the smallest ``s ∈ [0, 1]`` on a
path from ``x`` (``s = 0``) to ``x_1`` (``s = 1``) that is still
adversarial, and the attack starts there (L0: ``ε`` starts at that point's
L0 norm). The paths move the coordinates of ``x_1 - x`` monotonically, so
they stay in the box: L2 ``s (x_1 - x)``; L∞ ``x_1 - x`` clamped to
``± s ||x_1 - x||_∞``; L1 soft-thresholded by ``(1 - s) ||x_1 - x||_∞``; L0
its ``⌈s ||x_1 - x||_0⌉`` largest components. Samples whose starting point is
not adversarial start from ``x``.

Differences from the paper and the peers, all deliberate:

- before the first adversarial is found, ``ε`` is at least
  ``(1 + γ_k) ||δ_k||_p`` (the growth the paper uses once one is found): on
  a model that is affine near ``x`` the estimate is exact, the step lands on
  the boundary itself, where the decision is a numerical tie, and the
  paper's rule then keeps ``ε`` (and the point) there for every later step,
  never adversarial (tested on affine models). Where the estimate exceeds
  that floor, which is the usual case away from the boundary, the rule is
  the paper's;
- the L0 projection keeps exactly ``ε`` components (adv_lib keeps ties
  too, Foolbox 3.3.4 keeps ``ε + 1``); the L2 projection is onto the ball,
  as in the paper (Foolbox 3.3.4's L2 variant never projects: its factor is
  ``norms / norms``; adv_lib 0.2.8 rescales every ``δ`` to norm ``ε``, onto
  the sphere, then caps its components at 1);
- the warm-start paths are scaled by the start's own extent instead of the
  box width.

As in both peers, the point reached by a last δ-step would never be
evaluated, so it is not taken; and the last iteration, which only checks
its point, runs the model without a gradient (``K`` forward and ``K - 1``
backward passes in all; the peers spend ``K`` backward passes).

Batched execution: on a CPU all steps run per cache-sized chunk of samples
(:func:`~labelflip.attacks._common.map_chunks`); a sample that is adversarial
with ``δ = 0`` (the model already errs) cannot improve and leaves the active
batch after its first step.

Pass counting, per sample: one forward pass per step it took
(``iterations``) and one backward pass per step but the ``K``-th; with a
warm start, one more forward pass to check its starting point and one per
bisection step (only for samples whose start is adversarial). The attack is
deterministic: ``generator`` is accepted for the uniform signature and unused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from labelflip._settings import Settings, setting
from labelflip.attacks._common import map_chunks, new_counts, prepare_inputs, report_progress
from labelflip.attacks._registry import register_attack
from labelflip.attacks._result import AttackResult, finalize_counts
from labelflip.errors import LabelflipError
from labelflip.models.classifier import Classifier

FMN_NORMS = ("l0", "l1", "l2", "linf")

# Dual exponent q of p (1/p + 1/q = 1) for the boundary-distance estimate.
_DUAL = {"l1": math.inf, "l2": 2.0, "linf": 1.0}


@dataclass(frozen=True)
class FMNSettings(Settings):
    """Settings of :func:`fmn` (the authors' and adv_lib's defaults)."""

    norm: str = setting("l2", choices=FMN_NORMS, doc="the norm minimised")
    steps: int = setting(10, gt=0, doc="iterations K (all run; the best adversarial is kept)")
    alpha_init: float = setting(1.0, gt=0.0, doc="alpha_0, the first delta-step length")
    alpha_final: float | None = setting(
        None, gt=0.0, doc="alpha_K, the last delta-step length (alpha_init / 100 when none)"
    )
    gamma_init: float = setting(0.05, gt=0.0, lt=1.0, doc="gamma_0: eps * (1 -/+ gamma) first")
    gamma_final: float = setting(0.001, gt=0.0, lt=1.0, doc="gamma_K, after cosine annealing")

    @property
    def alpha_end(self) -> float:
        return self.alpha_init / 100 if self.alpha_final is None else float(self.alpha_final)


# ------------------------------------------------------------------ norms and balls


def lp_norms(d: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-row norm of a flat (N, D) tensor; L0 counts non-zero entries."""
    if norm == "l0":
        return (d != 0).sum(1).to(d.dtype)
    if norm == "l1":
        return d.abs().sum(1)
    if norm == "l2":
        return d.norm(dim=1)
    return d.abs().amax(1)


def _dual_norms(g: torch.Tensor, q: float) -> torch.Tensor:
    if q == 1.0:
        return g.abs().sum(1)
    if q == 2.0:
        return g.norm(dim=1)
    return g.abs().amax(1)


def project_l1_ball(d: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``d`` (N, D) onto the L1 ball of
    radius ``eps`` (N,) (Duchi et al. 2008, Fig. 1); rows inside stay."""
    a = d.abs()
    outside = a.sum(1) > eps
    if not bool(outside.any()):
        return d
    u = a.sort(dim=1, descending=True).values
    css = u.cumsum(1)
    e = torch.where(outside, eps, 0.0).unsqueeze(1)  # finite in every row
    j = torch.arange(1, u.shape[1] + 1, device=d.device, dtype=d.dtype)
    rho = ((u * j > css - e) * j).amax(1).clamp_min(1)  # ≥ 1 (ε = 0: θ = u_1)
    theta = (css.gather(1, (rho.long() - 1).unsqueeze(1)) - e) / rho.unsqueeze(1)
    projected = (a - theta).clamp_min(0) * d.sign()
    return torch.where(outside.unsqueeze(1), projected, d)


def keep_largest(d: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rows of ``d`` (N, D) with all but their ``k`` (N,) largest-magnitude
    entries set to zero (the L0 projection; ties broken by position)."""
    k = k.long().clamp(0, d.shape[1])
    kmax = int(k.max()) if len(k) else 0
    if kmax == d.shape[1] and bool((k == kmax).all()):
        return d
    idx = d.abs().topk(kmax, dim=1).indices
    keep = torch.arange(kmax, device=d.device).unsqueeze(0) < k.unsqueeze(1)
    mask = torch.zeros(d.shape, dtype=torch.bool, device=d.device).scatter_(1, idx, keep)
    return torch.where(mask, d, d.new_zeros(()))


def project_ball(d: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Project each row of the flat ``d`` (N, D) onto the ``norm`` ball of
    radius ``eps`` (N,); ``eps = inf`` leaves a row unchanged."""
    if norm == "linf":
        e = eps.unsqueeze(1)
        return torch.maximum(torch.minimum(d, e), -e)
    if norm == "l2":
        factor = (eps / d.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
        return d * factor.unsqueeze(1)
    if norm == "l1":
        return project_l1_ball(d, eps)
    return keep_largest(d, eps)


def path_point(d1: torch.Tensor, s: torch.Tensor, norm: str) -> torch.Tensor:
    """A perturbation on the path from 0 (``s = 0``) to ``d1`` (``s = 1``) that
    the warm start bisects (rows of the flat ``d1``, ``s`` per row)."""
    s = s.unsqueeze(1)
    if norm == "l2":
        return s * d1
    a = d1.abs()
    if norm == "linf":
        e = s * a.amax(1, keepdim=True)
        return torch.maximum(torch.minimum(d1, e), -e)
    if norm == "l1":
        return (a - (1 - s) * a.amax(1, keepdim=True)).clamp_min(0) * d1.sign()
    return keep_largest(d1, torch.ceil(s.squeeze(1) * (d1 != 0).sum(1)))


# ---------------------------------------------------------------------------- attack


def _margin_and_gradient(
    clf: Classifier, x: torch.Tensor, labels: torch.Tensor, targeted: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decisions, the loss ``L`` (negative iff the decision is adversarial,
    ties aside) and ``∇_x L``: one forward and one backward pass."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        scores = clf(xg)
        own = scores.gather(1, labels.unsqueeze(1)).squeeze(1)
        others = scores.scatter(1, labels.unsqueeze(1), -math.inf).amax(1)
        loss = others - own if targeted else own - others
        (grad,) = torch.autograd.grad(loss.sum(), xg)
    return clf.decode(scores.detach()), loss.detach(), grad


def _is_adversarial(pred: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    return pred == labels if targeted else pred != labels


@register_attack(
    "fmn",
    FMNSettings,
    "Fast Minimum-Norm attack (l0, l1, l2, linf), minimal perturbation, Pintor et al. 2021",
)
def fmn(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    s: FMNSettings,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """FMN (Pintor et al. 2021, Algorithm 1; the module docstring has the
    equations): the smallest-norm adversarial found in ``steps`` iterations,
    per sample, in ``norm`` (``l0``, ``l1``, ``l2`` or ``linf``), starting
    from ``x``. ``target=None`` is untargeted. Deterministic (``generator``
    is unused)."""
    x0, y, target = prepare_inputs(clf, x, y, target, generator)
    return _attack(clf, x0, y, target, x0, s, None)


def fmn_from_starts(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    starting_points: torch.Tensor,
    settings: FMNSettings | None = None,
    *,
    binary_search_steps: int = 10,
    target: torch.Tensor | None = None,
) -> AttackResult:
    """FMN warm-started from ``starting_points`` (same shape as ``x``, inside
    the bounds; e.g. another attack's ``x_adv``): for the samples whose start
    is adversarial, ``binary_search_steps`` bisection steps towards ``x``
    first (module docstring); the others start from ``x``."""
    s = FMNSettings() if settings is None else settings
    if not isinstance(s, FMNSettings):
        raise LabelflipError(f"fmn: settings must be FMNSettings, got {type(s).__name__}")
    if isinstance(binary_search_steps, bool) or not isinstance(binary_search_steps, int):
        raise LabelflipError(
            f"fmn: binary_search_steps must be an integer, got {binary_search_steps!r}"
        )
    if binary_search_steps < 0:
        raise LabelflipError(f"fmn: binary_search_steps must be >= 0, got {binary_search_steps}")
    x0, y, target = prepare_inputs(clf, x, y, target)
    labels = y if target is None else target
    start, searched = _warm_start(
        clf, x0, labels, starting_points, s.norm, binary_search_steps, target is not None
    )
    extra = 1 + searched.long() * binary_search_steps
    return _attack(clf, x0, y, target, start, s, extra)


def _attack(
    clf: Classifier,
    x0: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    start: torch.Tensor,
    s: FMNSettings,
    extra_forwards: torch.Tensor | None,
) -> AttackResult:
    targeted = target is not None
    labels = target if targeted else y
    iterations, forwards, backwards = new_counts(len(x0), x0.device)
    if extra_forwards is not None:
        forwards += extra_forwards
    x_adv = x0
    if len(x0):
        x_adv, its, grads = map_chunks(
            lambda xc, sc, lc: _fmn_chunk(clf, xc, sc, lc, s, targeted), 1, x0, start, labels
        )
        iterations += its
        forwards += its
        backwards += grads
    return finalize_counts(clf, x0, y, x_adv, target, (iterations, forwards, backwards))


def _warm_start(
    clf: Classifier,
    x0: torch.Tensor,
    labels: torch.Tensor,
    starting_points: object,
    norm: str,
    binary_search_steps: int,
    targeted: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(start points, which samples were bisected): the bisection of the
    module docstring for samples whose starting point is adversarial."""
    if not isinstance(starting_points, torch.Tensor) or not starting_points.dtype.is_floating_point:
        raise LabelflipError("fmn: starting_points must be a floating-point torch tensor")
    if tuple(starting_points.shape) != tuple(x0.shape):
        raise LabelflipError(
            f"fmn: starting_points must have the shape of x {tuple(x0.shape)}, "
            f"got {tuple(starting_points.shape)}"
        )
    x1 = starting_points.detach().to(device=x0.device, dtype=x0.dtype)
    if not len(x0):
        return x0, torch.zeros(0, dtype=torch.bool, device=x0.device)
    clf.check_inputs(x1)
    x1 = clf.clip(x1)
    with torch.no_grad():
        ok = _is_adversarial(clf.predict(x1), labels, targeted)
    d1 = (x1 - x0).flatten(1)
    lower = torch.zeros(len(x0), dtype=x0.dtype, device=x0.device)
    upper = torch.ones_like(lower)
    idx = torch.nonzero(ok).squeeze(1)
    if len(idx):
        for _ in range(binary_search_steps):
            mid = (lower[idx] + upper[idx]) / 2
            xm = x0[idx] + path_point(d1[idx], mid, norm).view_as(x0[idx])
            with torch.no_grad():
                adv = _is_adversarial(clf.predict(xm), labels[idx], targeted)
            upper[idx] = torch.where(adv, mid, upper[idx])
            lower[idx] = torch.where(adv, lower[idx], mid)
    d = torch.where(ok.unsqueeze(1), path_point(d1, upper, norm), torch.zeros_like(d1))
    return clf.clip(x0 + d.view_as(x0)), ok


def _fmn_chunk(
    clf: Classifier,
    x0: torch.Tensor,
    start: torch.Tensor,
    labels: torch.Tensor,
    s: FMNSettings,
    targeted: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``s.steps`` iterations on one chunk of samples: (best points,
    iterations and backward passes per sample)."""
    p = s.norm
    lo, hi = clf.bounds
    n, shape = len(x0), x0.shape[1:]
    out = x0.clone()
    its = torch.zeros(n, dtype=torch.long, device=x0.device)
    grads = torch.zeros(n, dtype=torch.long, device=x0.device)  # backward passes
    rows = torch.arange(n, device=x0.device)  # chunk rows still active

    flat0 = x0.flatten(1)
    xa = start.flatten(1).clone()  # current point, always inside the box
    if p == "l0":
        worst = torch.full((n,), float(flat0.shape[1]), dtype=x0.dtype, device=x0.device)
        eps = lp_norms(xa - flat0, p).clamp_min(1.0)
    else:
        worst = lp_norms(torch.maximum(flat0 - lo, hi - flat0), p)
        eps = torch.full((n,), math.inf, dtype=x0.dtype, device=x0.device)
    best = flat0.clone()
    best_norm = torch.full((n,), math.inf, dtype=x0.dtype, device=x0.device)
    found = torch.zeros(n, dtype=torch.bool, device=x0.device)
    alpha_end = s.alpha_end

    for k in range(s.steps):
        report_progress(k, s.steps)  # of this chunk (map_chunks)
        cosine = (1 + math.cos(math.pi * k / s.steps)) / 2
        alpha = alpha_end + (s.alpha_init - alpha_end) * cosine
        gamma = s.gamma_final + (s.gamma_init - s.gamma_final) * cosine

        last = k + 1 == s.steps
        its[rows] += 1
        grads[rows] += 0 if last else 1
        if last:  # only the bookkeeping is left: no gradient needed
            with torch.no_grad():
                pred = clf.decode(clf(xa.view(-1, *shape)))
        else:
            pred, loss, grad = _margin_and_gradient(clf, xa.view(-1, *shape), labels, targeted)
            grad = grad.flatten(1)
        delta = xa - flat0
        dnorm = lp_norms(delta, p)
        adv = _is_adversarial(pred, labels, targeted)
        better = adv & (dnorm < best_norm)
        best_norm = torch.where(better, dnorm, best_norm)
        best = torch.where(better.unsqueeze(1), xa, best)
        found |= adv
        if last:
            break

        # ε-step
        if p == "l0":
            shrink = torch.minimum(eps - 1, torch.floor(eps * (1 - gamma)))
            shrink = torch.minimum(shrink, best_norm)
            grow = torch.maximum(eps + 1, torch.floor(eps * (1 + gamma)))
            eps = torch.where(adv, shrink, grow).clamp_min(0)
        else:
            boundary = loss.abs() / _dual_norms(grad, _DUAL[p]).clamp_min(1e-12)
            # at least (1 + γ) past the current norm: no stall on an exact tie
            estimate = torch.maximum(dnorm + boundary, dnorm * (1 + gamma))
            eps = torch.where(
                adv,
                torch.minimum(eps * (1 - gamma), best_norm),
                torch.where(found, eps * (1 + gamma), estimate),
            )
        eps = torch.minimum(eps, worst)

        # δ-step: descend L along the unit-L2 gradient, project, clip
        step = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
        delta = project_ball(delta - alpha * step, eps, p)
        xa = (flat0 + delta).clamp(lo, hi)

        # a sample adversarial at δ = 0 cannot do better: it leaves
        keep = best_norm > 0
        if not bool(keep.all()):
            out.view(n, -1)[rows[~keep]] = best[~keep]
            rows, flat0, xa, labels = rows[keep], flat0[keep], xa[keep], labels[keep]
            eps, worst, best, best_norm, found = (
                t[keep] for t in (eps, worst, best, best_norm, found)
            )
            if not len(rows):
                break

    out.view(n, -1)[rows] = best
    return out, its, grads
