"""JMA: the Jacobian-induced Mahalanobis distance attack.

Guo, Tondi & Barni, "A general close-to-optimal targeted adversarial attack
with improved efficiency" (JMA paper, §V and Algorithm 1). JMA reaches any
point of label space: a class of a one-hot model, a codeword of an ECOC
model, any label vector of a multi-label model.

Under the first-order model ``z(x + δ) ≈ z(x) + Jδ`` (eq. 12) of the logits
``z`` (the paper applies JMA at the logits level, §VI), the smallest ``δ``
moving the logits by ``d`` is ``δ = Jᵀ(JJᵀ)⁻¹d`` (Proposition 1, eq. 16) with
``‖δ‖² = dᵀ(JJᵀ)⁻¹d`` (eq. 19). The target region is a polyhedron
``A d ≤ b`` in logit space, so the best displacement minimises the
Jacobian-induced Mahalanobis distance (eq. 20–21)

    min_d ½ dᵀ(JJᵀ)⁻¹d   s.t.   A d ≤ b,

whose Wolfe dual (Theorem 1, eq. 23) is the non-negative quadratic program

    λ* = argmin_{λ≥0} ½ λᵀ A(JJᵀ)Aᵀ λ + bᵀλ,      δ* = −Jᵀ Aᵀ λ*   (eq. 24),

solved batched by the Sequential Coordinate-wise algorithm
(:mod:`labelflip.attacks._nnls`). The constraints per encoding:

- one-hot and ECOC (eq. 9–10): rows ``(c_i − c_t)ᵀ``, ``b_i = zᵀc_t − zᵀc_i``
  for every class ``i ≠ t`` (``c_i = e_i`` for one-hot, the codewords of the
  codebook for ECOC; at the logits level the ECOC decision is linearised as
  ``argmax_k zᵀc_k``, and success is always judged by the model's true
  decision ``argmax_k tanh(z)ᵀc_k``);
- multi-label, the simplified ``n``-constraint form (eq. 27–28):
  ``M = diag(−s_t)``, ``e_j = z_j s_tj`` with ``s_t ∈ {−1, +1}^n`` the target
  label vector, i.e. ``s_tj (z_j + d_j) ≥ 0``.

Algorithm 1, for the active batch at once:

1. the Jacobian ``J`` (n × m) of every active sample, batched by
   :func:`~labelflip.attacks._common.output_vjps` (on an accelerator the
   batch is repeated once per output and one backward pass gives every row;
   on a CPU one forward pass and ``n`` backward passes per chunk);
2. ``A``, ``b``, ``H = A(JJᵀ)Aᵀ``; ``λ*`` by SCA; ``δ* = −JᵀAᵀλ*``;
3. ``x' = clip(x + δ*)``; if the model's decision at ``x'`` is the
   target, a binary search of ``n_bs`` steps on the segment from ``x`` to
   ``x'`` keeps the smallest adversarial point and the sample is done;
   otherwise ``x ← clip(x + ε δ*/‖δ*‖)`` and the loop repeats.

The ``margin`` κ (default 0.01, in logit units) is our addition: every
constraint asks for ``b − κ`` instead of ``b``. Without it the linearised
step lands exactly *on* the boundary, where a tie (one-hot, ECOC) or a
sigmoid score of exactly 0.5 (multi-label) is not yet the target; the binary
search then removes the excess. (Scaling ``δ*`` up instead, as DeepFool's
overshoot does, can push a nearly binding inactive constraint over its
edge.) Iterations are counted as the paper
does (§VI-D, §VII-F): ``(v − 1) + n_bs`` for a success in the ``v``-th loop;
``max_iterations`` bounds that count.

A step can vanish (``δ* = 0``) while the decision is not yet the target. For
ECOC this happens when the logit-level decision ``argmax zᵀc_k`` already says
``t`` but the model's ``argmax tanh(z)ᵀc_k`` does not: a hinge-trained ECOC
model saturates its outputs (|z| near 50 on MNIST), so a few large logits
dominate ``zᵀc_k`` while the decision counts signs. Linearising ``tanh``
instead does not help (its derivative vanishes at such logits), so the
sample continues towards the target *codeword*: the multi-label form
``c_tj (z_j + d_j) ≥ κ`` for every bit (eq. 27–28 with ``s_t = c_t``), a
region inside the target's decision region whatever the saturation.

A step also vanishes where the Jacobian does: a ReLU network has regions
where every unit of a layer is off and the outputs are constant (an ε-step
can land in one). There the sample steps back to its previous point and
halves its own ε. A sample whose first step vanishes (or, for ECOC, whose
codeword step vanishes away from such a region: ``JJᵀ`` lost rank, §VI-D)
stops as a failure rather than spinning. All of this stays within
``max_iterations``.

Pass counting per sample: the Jacobian costs ``n`` forward and ``n``
backward passes (one per output row), each decision check 1 forward, each
binary-search step 1 forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from labelflip._settings import Settings, setting
from labelflip.attacks._common import (
    new_counts,
    output_vjps,
    prepare_inputs,
    report_progress,
    rows,
)
from labelflip.attacks._nnls import sca_nnls
from labelflip.attacks._registry import register_attack
from labelflip.attacks._result import AttackResult, finalize_counts
from labelflip.errors import LabelflipError
from labelflip.models.classifier import Classifier
from labelflip.models.encoding import OutputEncoding

ECOC_REGIONS = ("decision", "codeword")


@dataclass(frozen=True)
class JMASettings(Settings):
    """Settings of :func:`jma`.

    ``eps``: the L2 step (input units) taken along ``δ*`` when the one-shot
    step does not reach the target (Algorithm 1, line 16); the paper's MNIST
    ECOC setting is 0.5. ``max_iterations``: ``n_it,max`` (200 in the paper),
    counting binary-search steps. ``binary_steps``: ``n_bs`` (6 in the paper).
    ``ecoc_region``: for ECOC models, ``decision`` (eq. 9–10: the target
    class's decision region, with the codeword fallback above) or
    ``codeword`` (every bit on the target codeword's side from the start).
    ``margin``: κ above. ``sca_rtol`` / ``sca_max_sweeps``: the SCA
    stopping rule (KKT tolerance relative to ``max |b|``, sweep cap)."""

    eps: float = setting(0.5, gt=0, doc="L2 step along delta* when one step does not reach")
    max_iterations: int = setting(200, gt=0, doc="n_it,max, binary-search steps included")
    binary_steps: int = setting(6, ge=0, doc="n_bs")
    margin: float = setting(0.01, ge=0.0, doc="kappa")
    sca_rtol: float = setting(1e-8, gt=0, doc="SCA KKT tolerance relative to max |b|")
    sca_max_sweeps: int = setting(500, gt=0, doc="SCA sweep cap")
    ecoc_region: str = setting("decision", choices=ECOC_REGIONS, doc="ECOC target region")

    def check(self) -> None:
        if self.binary_steps >= self.max_iterations:
            raise LabelflipError(
                f"jma: binary_steps ({self.binary_steps}) must be below max_iterations "
                f"({self.max_iterations}): the binary search counts as iterations"
            )


def output_jacobian(clf: Classifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw outputs ``z`` (B, n) and their Jacobian ``∂z/∂x`` (B, n, m),
    ``m`` the input size, for every row of ``x``: the ``n`` vector-Jacobian
    products with the unit vectors, batched by
    :func:`~labelflip.attacks._common.output_vjps` (on an accelerator one
    forward and one backward pass over ``n`` copies of the batch; on a CPU one
    forward and ``n`` backward passes per chunk)."""
    n = clf.num_outputs
    eye = torch.eye(n, device=x.device).expand(len(x), n, n)
    z, grads = output_vjps(clf.outputs, x, eye)
    return z, grads.flatten(2)


def constraints(
    encoding: OutputEncoding,
    z: torch.Tensor,
    target: torch.Tensor,
    margin: float = 0.0,
    *,
    codeword: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The target region ``A d ≤ b`` in logit space for logits ``z`` (B, n)
    and target decisions ``target`` (B,): ``A`` (B, K, n), ``b`` (B, K).

    One-hot / ECOC: ``K = l − 1`` rows ``c_i − c_t`` and ``b_i = zᵀc_t − zᵀc_i``
    (eq. 9–10, 21). Multi-label: ``K = n``, ``A = diag(−s_t)``, ``b = z ⊙ s_t``
    (eq. 27–28). ``margin`` is subtracted from ``b``. ``codeword`` (ECOC):
    the multi-label form with ``s_t = c_t``, every bit on the side of the
    target codeword, a subset of the target's decision region."""
    if encoding.kind == "multilabel" or codeword:
        s = encoding.code(target).to(z.dtype)
        return torch.diag_embed(-s), z * s - margin
    if encoding.kind == "ecoc":
        assert encoding.codebook is not None
        codebook = encoding.codebook.to(device=z.device, dtype=z.dtype)
    else:
        codebook = torch.eye(encoding.num_outputs, device=z.device, dtype=z.dtype)
    k = codebook.shape[0]
    others = torch.arange(k, device=z.device).expand(len(target), k)
    others = others[others != target.unsqueeze(1)].view(len(target), k - 1)
    c_t = codebook[target]  # (B, n)
    c_i = codebook[others]  # (B, k-1, n)
    a = c_i - c_t.unsqueeze(1)
    corr = z @ codebook.T  # (B, l)
    b = corr.gather(1, target.unsqueeze(1)) - corr.gather(1, others)
    return a, b - margin


def jma_step(
    encoding: OutputEncoding,
    z: torch.Tensor,
    jac: torch.Tensor,
    target: torch.Tensor,
    *,
    margin: float = 0.0,
    rtol: float = 1e-8,
    max_sweeps: int = 500,
    codeword: bool = False,
) -> torch.Tensor:
    """The one-shot perturbation ``δ* = −JᵀAᵀλ*`` (eq. 24), flat (B, m), for
    logits ``z`` (B, n), Jacobians ``jac`` (B, n, m) and targets (B,)."""
    a, b = constraints(encoding, z.double(), target, margin, codeword=codeword)
    j64 = jac.double()
    gram = j64 @ j64.transpose(1, 2)  # J Jᵀ (B, n, n)
    h = a @ gram @ a.transpose(1, 2)
    h = 0.5 * (h + h.transpose(1, 2))
    lam = sca_nnls(h, b, rtol=rtol, max_sweeps=max_sweeps).lam
    direction = (a.transpose(1, 2) @ lam.unsqueeze(-1)).squeeze(-1)  # Aᵀλ (B, n)
    delta = -(j64.transpose(1, 2) @ direction.unsqueeze(-1)).squeeze(-1)
    return delta.to(jac.dtype)


@register_attack(
    "jma",
    JMASettings,
    "JMA, Jacobian-induced Mahalanobis distance attack (one-hot, ECOC, multi-label; "
    "Algorithm 1), Guo et al. 2024",
    default_target="random",
    encodings=("onehot", "ecoc", "multilabel"),
)
def jma(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    s: JMASettings,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """JMA (Algorithm 1) towards ``target`` (class indices, ECOC classes, or
    multi-label bitmasks) for a one-hot, ECOC or multi-label classifier.

    Deterministic (``generator`` is accepted for the common interface; JMA
    draws no random numbers). See the module docstring for the method."""
    eps, max_iterations, binary_steps = s.eps, s.max_iterations, s.binary_steps
    margin, sca_rtol, sca_max_sweeps, ecoc_region = (
        s.margin,
        s.sca_rtol,
        s.sca_max_sweeps,
        s.ecoc_region,
    )
    x0, y, t = prepare_inputs(clf, x, y, target, generator, multilabel=True)
    if t is None:
        raise LabelflipError(
            'jma is a targeted attack: give target classes (in a config: target = "random")'
        )
    n = x0.shape[0]
    enc = clf.encoding
    iterations, forwards, backwards = new_counts(n, x0.device)
    x_adv = x0.clone()
    with torch.no_grad():
        start = clf.predict(x0)
    forwards += 1
    active = torch.nonzero(start != t).squeeze(1)
    x_cur = x0.clone()
    x_prev = x0.clone()
    step_size = torch.full((n,), float(eps), dtype=x0.dtype, device=x0.device)
    codeword = torch.full(
        (n,), enc.kind == "ecoc" and ecoc_region == "codeword", dtype=torch.bool, device=x0.device
    )
    loops = 0
    max_loops = max_iterations - binary_steps + 1  # (v - 1) + n_bs <= max_iterations
    while active.numel() and loops < max_loops:
        loops += 1
        xa, ta = x_cur[active], t[active]
        z, jac = output_jacobian(clf, xa)
        forwards[active] += clf.num_outputs
        backwards[active] += clf.num_outputs
        delta = torch.empty_like(xa).flatten(1)
        for aim_codeword in (False, True):  # the two constraint forms, one batch each
            group = codeword[active] == aim_codeword
            if bool(group.any()):
                delta[group] = jma_step(
                    enc,
                    z[group],
                    jac[group],
                    ta[group],
                    margin=margin,
                    rtol=sca_rtol,
                    max_sweeps=sca_max_sweeps,
                    codeword=aim_codeword,
                )
        delta = delta.view_as(xa)
        x_try = clf.clip(xa + delta)
        with torch.no_grad():
            reached = clf.predict(x_try) == ta
        forwards[active] += 1
        iterations[active] += 1
        if bool(reached.any()):
            idx = active[reached]
            found = _binary_search(clf, xa[reached], x_try[reached], ta[reached], binary_steps)
            x_adv[idx] = found
            forwards[idx] += binary_steps
            iterations[idx] += binary_steps - 1  # (v - 1) + n_bs
        norms = delta.flatten(1).norm(dim=1)
        stuck = ~reached & (norms <= 1e-12)
        dead = jac.flatten(1).norm(dim=1) <= 1e-12
        back = stuck & dead & (loops > 1)  # step back, halve the step (module docstring)
        switch = stuck & ~dead & ~codeword[active] if enc.kind == "ecoc" else stuck & False
        moving = ~reached & ~stuck
        codeword[active[switch]] = True
        if bool(back.any()):
            x_cur[active[back]] = x_prev[active[back]]
            step_size[active[back]] /= 2
        if bool(moving.any()):
            idx = active[moving]
            x_prev[idx] = xa[moving]
            unit = delta[moving] / rows(norms[moving], delta[moving])
            x_cur[idx] = clf.clip(xa[moving] + rows(step_size[idx], unit) * unit)
        # a sample that neither reached the target nor goes on keeps x_adv = x0 (failure)
        active = active[moving | switch | back]
        report_progress(n - active.numel(), n)  # samples done
    if active.numel():  # out of iterations: return the last point reached
        x_adv[active] = x_cur[active]
    return finalize_counts(clf, x0, y, x_adv, t, (iterations, forwards, backwards))


def _binary_search(
    clf: Classifier, x_lo: torch.Tensor, x_hi: torch.Tensor, target: torch.Tensor, steps: int
) -> torch.Tensor:
    """The point nearest ``x_lo`` found on the segment ``x_lo → x_hi`` (``x_hi``
    decided as ``target``, ``x_lo`` not) by ``steps`` bisections, keeping only
    points the model decides as ``target`` (Algorithm 1, lines 10–13)."""
    lo = torch.zeros(len(x_lo), dtype=x_lo.dtype, device=x_lo.device)
    hi = torch.ones_like(lo)
    d = x_hi - x_lo
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        with torch.no_grad():
            ok = clf.predict(clf.clip(x_lo + rows(mid, d) * d)) == target
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
    return clf.clip(x_lo + rows(hi, d) * d)
