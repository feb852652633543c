"""Carlini & Wagner L2 attack, batched over samples.

Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks"
(IEEE S&P 2017), §V-A: minimise ``||x' - x||_2^2 + c · f6(x')`` over the
change of variables ``x' = a + b · tanh(w)`` (the box ``[lo, hi]`` mapped to
``(-1, 1)``; §IV-B "change of variables"), with the objective
``f6(x') = max(Z(x')_y - max_{i≠y} Z(x')_i + κ, 0)`` (untargeted; targeted:
``max(max_{i≠t} Z(x')_i - Z(x')_t + κ, 0)``) on the logits ``Z``. Adam
minimises it for ``steps`` steps; a binary search over ``c`` per sample
(exponential growth ×10 until an adversarial is found, then bisection) runs
for ``binary_search_steps`` rounds; the smallest-L2 adversarial found over
all steps and all constants is returned (the input itself where none is
found).

Foolbox 3 (``L2CarliniWagnerAttack``) semantics: same defaults, Adam with
bias correction restarted at every binary-search round, ``x`` mapped to tanh
space with a factor 0.999999, an adversarial check that requires the margin
``κ``, and a repeated last round at the upper bound of ``c`` when
``binary_search_steps >= 10``. Two deliberate differences, both making a
sample's result independent of the batch it is attacked in: ``abort_early``
is decided per sample (a sample whose own loss did not decrease by 0.01 %
over a tenth of the steps stops for this round and leaves the active batch)
instead of on the batch's summed loss, and a sample that is already
adversarial at ``x`` (with margin ``κ``) is not optimised at all (its
answer, ``x`` at distance 0, cannot be improved).

Pass counting, per sample: 1 forward for the initial check, then 1 forward +
1 backward per Adam step the sample takes; ``iterations`` is the number of
Adam steps summed over the binary-search rounds.

The optimisation itself (tanh space, Adam, binary search, abort early, best
adversarial) is :func:`tanh_l2_search`, parameterised by the attack term and
the adversarial check; ``ml-cw`` (:mod:`labelflip.attacks.ml_cw`) reuses it
with the per-output hinge loss of ML-C&W.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from labelflip._settings import Settings, setting
from labelflip.attacks._common import (
    map_chunks,
    new_counts,
    prepare_inputs,
    report_progress,
)
from labelflip.attacks._registry import register_attack
from labelflip.attacks._result import AttackResult, finalize_counts
from labelflip.models.classifier import Classifier


@dataclass(frozen=True)
class CarliniWagnerL2Settings(Settings):
    """Settings of :func:`carlini_wagner_l2` (Foolbox-compatible defaults)."""

    binary_search_steps: int = setting(9, ge=1, doc="rounds of the binary search over c")
    steps: int = setting(10000, gt=0, doc="Adam steps per round")
    stepsize: float = setting(0.01, gt=0, doc="Adam's learning rate")
    confidence: float = setting(0.0, ge=0.0, doc="the margin kappa")
    initial_const: float = setting(0.001, gt=0, doc="the first c")
    abort_early: bool = setting(True, doc="stop a round when the loss stalls")


def _margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """``Z_y - max_{i≠y} Z_i`` (untargeted) or ``max_{i≠t} Z_i - Z_t``
    (targeted): the sample is adversarial with confidence κ iff margin + κ < 0."""
    own = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
    others = logits.scatter(1, labels.unsqueeze(1), float("-inf")).amax(1)
    return others - own if targeted else own - others


def _is_adv(margin: torch.Tensor, confidence: float) -> torch.Tensor:
    return margin + confidence < 0


Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``objective(x_batch, idx) -> (term, adversarial)``: for the inputs
``x_batch`` of the samples ``idx`` (positions in the attacked batch), the
per-sample attack term ``f(x') >= 0`` that multiplies ``c`` (differentiable,
one forward pass) and whether each input already counts as adversarial (bool,
no gradient)."""


def tanh_l2_search(
    clf: Classifier,
    x0: torch.Tensor,
    objective: Objective,
    s: CarliniWagnerL2Settings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The C&W L2 optimisation shared by ``cw-l2`` and ``ml-cw``: minimise
    ``||x' - x||_2^2 + c · f(x')`` over ``x' = a + b · tanh(w)`` with Adam
    and a per-sample binary search over ``c`` (module docstring), for the
    attack term ``f`` and adversarial check given by ``objective``, with the
    search settings of ``s`` (its ``confidence`` belongs to the objective).

    Returns ``(best_adv, iterations, forwards, backwards)``: per sample the
    smallest-L2 input the objective called adversarial (``x0`` itself where
    none was found, or where ``x0`` already is adversarial), and the pass
    counts (1 forward for the initial check, then 1 forward + 1 backward per
    Adam step the sample takes)."""
    binary_search_steps, steps, stepsize = s.binary_search_steps, s.steps, s.stepsize
    initial_const, abort_early = s.initial_const, s.abort_early
    n = len(x0)
    dev = x0.device
    iterations, forwards, backwards = new_counts(n, dev)
    best_adv = x0.clone()
    if n == 0:
        return best_adv, iterations, forwards, backwards

    lo, hi = clf.bounds
    a, b = (lo + hi) / 2, (hi - lo) / 2
    w0 = torch.atanh(((x0 - a) / b) * 0.999999)
    x_rec = torch.tanh(w0) * b + a
    best_norm = torch.full((n,), math.inf, dtype=x0.dtype, device=dev)
    every = torch.arange(n, device=dev)

    with torch.no_grad():
        _, done = objective(x0, every)
    forwards += 1
    best_norm[done] = 0.0
    todo = torch.nonzero(~done).squeeze(1)

    consts = torch.full((n,), float(initial_const), dtype=torch.float64, device=dev)
    lower = torch.zeros(n, dtype=torch.float64, device=dev)
    upper = torch.full((n,), math.inf, dtype=torch.float64, device=dev)
    check_every = math.ceil(steps / 10)
    beta1, beta2, adam_eps = 0.9, 0.999, 1e-8

    def gradient(
        d: torch.Tensor, w: torch.Tensor, xr: torch.Tensor, c: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gradient of the loss w.r.t. ``d`` (one forward and one backward pass),
        the loss, the adversarial check and the point evaluated."""
        with torch.enable_grad():
            d = d.requires_grad_(True)
            x_d = torch.tanh(w + d) * b + a
            term, adv = objective(x_d, idx)
            loss = c * term + (x_d - xr).flatten(1).square().sum(1)
            (grad,) = torch.autograd.grad(loss.sum(), d)
        return grad, loss.detach(), adv, x_d.detach()

    for round_ in range(binary_search_steps):
        if todo.numel() == 0:
            break
        if round_ == binary_search_steps - 1 and binary_search_steps >= 10:
            consts = upper.clamp(max=1e10)
        delta = torch.zeros_like(x0)
        m = torch.zeros_like(x0)
        v = torch.zeros_like(x0)
        found = torch.zeros(n, dtype=torch.bool, device=dev)
        prev_loss = torch.full((n,), math.inf, dtype=x0.dtype, device=dev)
        active = todo
        c_all = consts.to(x0.dtype)

        for step in range(steps):
            if active.numel() == 0:
                break
            d_a = delta[active]
            grad, loss, adv, x_a = map_chunks(
                gradient, 1, d_a, w0[active], x_rec[active], c_all[active], active
            )
            iterations[active] += 1
            forwards[active] += 1
            backwards[active] += 1

            # Adam (bias-corrected; every active sample is at the same step t)
            t = step + 1
            m_a = beta1 * m[active] + (1 - beta1) * grad
            v_a = beta2 * v[active] + (1 - beta2) * grad.square()
            m_hat = m_a / (1 - beta1**t)
            v_hat = v_a / (1 - beta2**t)
            m[active] = m_a
            v[active] = v_a
            delta[active] = d_a - stepsize * m_hat / (v_hat.sqrt() + adam_eps)

            # record the point just evaluated (before the update) if it is better
            found[active] |= adv
            norms = (x_a - x0[active]).flatten(1).norm(dim=1)
            better = adv & (norms < best_norm[active])
            idx = active[better]
            best_norm[idx] = norms[better]
            best_adv[idx] = x_a[better]

            if abort_early and step % check_every == 0:
                progress = loss <= 0.9999 * prev_loss[active]
                prev_loss[active] = loss
                active = active[progress]
            report_progress(round_ * steps + step + 1, binary_search_steps * steps)

        upper = torch.where(found, consts, upper)
        lower = torch.where(found, lower, consts)
        consts = torch.where(upper.isinf(), consts * 10, (lower + upper) / 2)

    return best_adv, iterations, forwards, backwards


@register_attack(
    "cw-l2",
    CarliniWagnerL2Settings,
    "Carlini & Wagner L2 attack with binary search over c, Carlini & Wagner 2017",
)
def carlini_wagner_l2(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    s: CarliniWagnerL2Settings,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """C&W L2 (§V-A, tanh change of variables, f6 objective), targeted when
    ``target`` is given. Deterministic; ``generator`` is accepted for a
    uniform signature and unused."""
    x0, y, target = prepare_inputs(clf, x, y, target, generator)
    targeted = target is not None
    labels = target if targeted else y
    kappa = float(s.confidence)

    def objective(xb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        margin = _margin(clf(xb), labels[idx], targeted)
        return (margin + kappa).clamp(min=0), _is_adv(margin.detach(), kappa)

    best_adv, *counts = tanh_l2_search(clf, x0, objective, s)
    iterations, forwards, backwards = counts
    return finalize_counts(clf, x0, y, best_adv, target, (iterations, forwards, backwards))
