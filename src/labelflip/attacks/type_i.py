"""Type I attacks: big changes the classifier does not notice.

Tang et al., "Adversarial Attack Type I: Cheat Classifiers by Significant
Changes" (``papers/type-i-attack.txt``). A Type II attack (the usual kind,
eq. 1) makes a small change that flips the attacked classifier ``f1`` while
the oracle ``f2`` keeps its class; a Type I attack (eq. 2) makes a change
the oracle sees — ``f2(x') ≠ f2(x)`` — while ``f1(x') = f1(x)``: it exploits
features ``f1`` *misses* (§II-A).

- :func:`type_i`: Algorithm 2 on the latent space of a trained SVAE
  (:mod:`labelflip.models.svae`), whose latent classifier ``f2`` stands in for
  the oracle;
- :func:`latent_attack`: eq. 13, a Type I attack on the latent input of any
  generator ``G`` (the SVAE decoder, a GAN...);
- :func:`judge`: success as judged by an *independent* oracle classifier;
- :func:`type_i_attack`: :func:`type_i` under the attack contract of the
  registry (``type-i`` in configs): an :class:`~labelflip.attacks.AttackResult`
  whose ``success`` is the Type I one, with the SVAE's ``f2`` as
  ``attacker_pred`` and the latent midpoint as ``transition``;
  :func:`latent_type_i_attack` likewise for :func:`latent_attack` on the
  SVAE (``latent-type-i``).

Every function is pure: keyword-only settings, randomness only through an
explicit ``torch.Generator``, the caller's tensors never modified. The
optimisation is batched, but the objective is a sum of per-sample terms and
Adam is element-wise, so each sample's result is the one it would get alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from labelflip._settings import Settings, setting
from labelflip.attacks._common import generator_or_default, prepare_inputs, report_progress
from labelflip.attacks._registry import register_attack
from labelflip.attacks._result import AttackResult, finalize_type_i
from labelflip.errors import LabelflipError
from labelflip.models.classifier import Classifier
from labelflip.models.svae import SVAE


@dataclass(frozen=True)
class TypeIResult:
    """One row per sample.

    ``x_adv``: the decoded adversarial images ``f_dec(z)``; ``z``: their
    latent codes, ``z_start`` the codes ``μ(x)`` the search started from;
    ``f1_pred``: the attacked classifier's class for ``x_adv``
    (a success keeps ``y``); ``f2_pred``: the SVAE classifier's class for
    ``z`` (should be ``target``, or ``≠ y`` untargeted); ``f1_keeps`` and
    ``f2_changed`` (``f2_pred == target`` when targeted, else ``≠ y``)
    recomputed from the returned ``x_adv``/``z``; ``success`` both;
    ``iterations``: the step whose iterate is returned; ``k``: the final
    adaptive weight ``k_t`` (eq. 10); ``target`` (``-1`` when untargeted).
    """

    x_adv: torch.Tensor
    z: torch.Tensor
    z_start: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor
    f1_pred: torch.Tensor
    f2_pred: torch.Tensor
    f1_keeps: torch.Tensor
    f2_changed: torch.Tensor
    success: torch.Tensor
    iterations: torch.Tensor
    k: torch.Tensor


@dataclass(frozen=True)
class TypeISettings(Settings):
    """Settings of :func:`type_i_attack` (the ``type-i`` attack of a config),
    the keyword settings of :func:`type_i`. Defaults are the paper's (§IV):
    500 Adam steps at 0.005, ``α`` 0.01, ``γ`` 1e-4, ``β`` 1e-3, ``Ĵ1`` 0.01,
    ``k_t`` clipped to 0.005 (Algorithm 2); ``η``, which the paper does not
    give, is 1e-3. ``min_confidence``: see :func:`type_i` (0 = off)."""

    steps: int = setting(500, gt=0, doc="Adam steps")
    lr: float = setting(0.005, gt=0, doc="Adam's learning rate")
    alpha: float = setting(0.01, ge=0.0, doc="alpha (Algorithm 2)")
    gamma: float = setting(1e-4, ge=0.0, doc="gamma (Algorithm 2)")
    beta: float = setting(1e-3, ge=0.0, doc="beta (Algorithm 2)")
    eta: float = setting(1e-3, ge=0.0, doc="eta (k_t update)")
    j1_target: float = setting(0.01, ge=0.0, doc="J1 hat")
    k_max: float = setting(0.005, ge=0.0, doc="k_t is clipped to this")
    min_confidence: float = setting(0.0, ge=0.0, lt=1.0, doc="f1's least p(y) to count (0: off)")


@dataclass(frozen=True)
class LatentTypeISettings(Settings):
    """Settings of :func:`latent_type_i_attack` (``latent-type-i`` in a
    config), the keyword settings of :func:`latent_attack`; defaults are the
    paper's MNIST values (§IV-E: ``k`` 1e-2, ``ε`` 0.1, Adam at 0.01)."""

    k: float = setting(1e-2, ge=0.0, doc="weight of f1's cross-entropy")
    eps: float = setting(0.1, gt=0, doc="the least squared latent distance")
    steps: int = setting(200, gt=0, doc="Adam steps")
    lr: float = setting(0.01, gt=0, doc="Adam's learning rate")
    init_scale: float = setting(1e-3, gt=0, doc="scale of the Gaussian start around z")


@dataclass(frozen=True)
class LatentAttackResult:
    """One row per sample of :func:`latent_attack`: ``z_adv``, ``x_adv =
    G(z_adv)``, ``f1_pred`` on ``x_adv``, ``f1_keeps`` (``== y``),
    ``distance`` ``‖z_adv − z‖²``, ``far`` (``distance ≥ eps``) and
    ``success = f1_keeps & far`` (eq. 12)."""

    z_adv: torch.Tensor
    x_adv: torch.Tensor
    f1_pred: torch.Tensor
    f1_keeps: torch.Tensor
    distance: torch.Tensor
    far: torch.Tensor
    success: torch.Tensor


@dataclass(frozen=True)
class Judgement:
    """Type I success by an independent oracle (paper §IV-B, conditions i–ii):
    ``f1_keeps = f1(x_adv) == y``, ``oracle_changed = oracle(x_adv) ≠ y``,
    ``oracle_target = oracle(x_adv) == target`` (all ``False`` untargeted),
    ``success = f1_keeps & oracle_changed``; ``oracle_pred`` and ``f1_pred``."""

    f1_pred: torch.Tensor
    oracle_pred: torch.Tensor
    f1_keeps: torch.Tensor
    oracle_changed: torch.Tensor
    oracle_target: torch.Tensor
    success: torch.Tensor


def _f2_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per-sample ``J2``: ``−log f2(z)_{y'}`` (eq. 8) when targeted; untargeted,
    ``−log(1 − f2(z)_y)``, which pushes ``f2`` away from ``y`` and, like the
    targeted loss, is bounded below by 0."""
    if target is not None:
        return F.cross_entropy(logits, target, reduction="none")
    logp = F.log_softmax(logits, dim=1)
    p_y = logp.gather(1, y[:, None])[:, 0].exp()
    return -torch.log1p(-p_y.clamp(max=1 - 1e-6))


def type_i(
    clf: Classifier,
    svae: SVAE,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    target: torch.Tensor | int | None = None,
    generator: torch.Generator | None = None,
    **settings: Any,
) -> TypeIResult:
    """Algorithm 2 of Tang et al.: a Type I adversarial example per sample.
    ``settings`` are the keywords of :class:`TypeISettings` (declared and
    validated there).

    ``z₀ = μ(f_enc(x))``, ``k₀ = 0``; for ``t = 1..steps`` one Adam step
    (learning rate ``lr``, §IV: 0.005) on ``z`` minimising eq. 8,

        ``J_SA = J2(z, y') + α(1 − f_dis(z)) + γ‖z‖₂ + k_t J1(f_dec(z), y)``

    (``J_IT`` of §III-B plus the attacked classifier's cross-entropy ``J1``,
    eq. 9), then the adaptive weight of eq. 10,

        ``k_{t+1} = clip(k_t + η(β J1 − J2 + max(J1 − Ĵ1, 0)), 0, k_max)``

    with ``β`` the equilibrium of eq. 11 (§IV: 0.001), ``Ĵ1`` = ``j1_target``
    (§IV: 0.01 for classification). ``η`` is not given in the paper; the
    upper clip is 0.005 in Algorithm 2 and 0.001 in the text of §III-C
    (``k_max`` takes either). ``f_dis`` is the probability ``σ(logit)``.

    ``min_confidence`` (our addition; 0 = off): an iterate counts only if
    ``f1`` gives ``y`` at least this softmax probability. The paper's
    examples keep ``f1`` confident (Fig. 6: 99.41 %; ``Ĵ1 = 0.01`` is
    ``p(y) ≈ 0.99``), while without it the returned iterate often sits just
    inside ``f1``'s decision region, where feature squeezing flags it
    (docs/type-i.md). ``f1_keeps`` then also requires the confidence.

    ``target`` (a class or one per sample) is ``y'``; ``None`` is untargeted:
    ``J2 = −log(1 − f2(z)_y)``. ``y`` is the class ``f1`` must keep. The
    returned iterate is, per sample, the *last* one at which ``f1`` still
    says ``y`` and ``f2`` says the target (``≠ y`` untargeted) — the
    algorithm's own stopping rule is unspecified ("while not converging");
    samples that never get there return the final iterate. ``generator`` is
    accepted for the attack contract (the algorithm draws nothing). Inputs
    are never modified; gradients reach only ``z`` (``clf`` and ``svae``
    stay untouched)."""
    x, y, tgt = prepare_inputs(
        clf, x, y, target if not isinstance(target, int) else None, generator
    )
    n = x.shape[0]
    if isinstance(target, int) and not isinstance(target, bool):
        if not 0 <= target < svae.num_classes:
            raise LabelflipError(f"type-i: target {target} outside [0, {svae.num_classes})")
        tgt = torch.full((n,), target, dtype=torch.long, device=x.device)
    if svae.num_classes != clf.num_classes:
        raise LabelflipError(
            f"type-i: the SVAE has {svae.num_classes} classes but the classifier {clf.num_classes}"
        )
    if tuple(x.shape[1:]) != tuple(svae.input_shape):
        raise LabelflipError(
            f"type-i: input shape {tuple(x.shape[1:])} does not match the SVAE's "
            f"{tuple(svae.input_shape)}"
        )
    if tgt is not None and bool((tgt == y).any()):
        raise LabelflipError("type-i: a target equals the true class; a Type I target must differ")
    s = TypeISettings(**settings)  # the keyword settings, declared there once
    generator_or_default(generator)
    svae = svae.eval()

    def changed(f2p: torch.Tensor) -> torch.Tensor:
        return f2p == tgt if tgt is not None else f2p != y

    def keeps(logits1: torch.Tensor) -> torch.Tensor:
        ok = clf.decode(logits1) == y
        if s.min_confidence > 0:
            p_y = torch.softmax(logits1.double(), 1).gather(1, y[:, None])[:, 0]
            ok &= p_y >= s.min_confidence
        return ok

    with torch.no_grad():
        z0 = svae.encode(x)[0]
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=s.lr)
    k = torch.zeros(n, device=x.device, dtype=z.dtype)
    best = z0.clone()
    best_it = torch.zeros(n, dtype=torch.long, device=x.device)
    for t in range(1, s.steps + 1):
        j2 = _f2_loss(svae.classify(z), y, tgt)
        dis = torch.sigmoid(svae.discriminate(z))
        x_t = svae.decode(z).clamp(*clf.bounds)
        j1 = F.cross_entropy(clf(x_t), y, reduction="none")
        j_sa = j2 + s.alpha * (1.0 - dis) + s.gamma * z.norm(dim=1) + k * j1
        (z.grad,) = torch.autograd.grad(j_sa.sum(), [z])  # no grads into clf/svae
        opt.step()
        with torch.no_grad():
            x_t = svae.decode(z).clamp(*clf.bounds)
            logits1 = clf(x_t)
            logits2 = svae.classify(z)
            j1 = F.cross_entropy(logits1, y, reduction="none")
            j2 = _f2_loss(logits2, y, tgt)
            dk = s.eta * (s.beta * j1 - j2 + (j1 - s.j1_target).clamp_min(0))
            k = (k + dk).clamp(0.0, s.k_max)  # eq. 10
            ok = keeps(logits1) & changed(logits2.argmax(1))
            best[ok] = z[ok]
            best_it[ok] = t
        report_progress(t, s.steps)
    with torch.no_grad():
        never = best_it == 0
        best[never] = z.detach()[never]
        best_it[never] = s.steps
        x_adv = svae.decode(best).clamp(*clf.bounds)
        logits1 = clf(x_adv)
        f1p = clf.decode(logits1)
        f2p = svae.classify(best).argmax(1)
        kept, chg = keeps(logits1), changed(f2p)
    target_out = tgt if tgt is not None else torch.full_like(y, -1)
    return TypeIResult(
        x_adv=x_adv.detach(),
        z=best.detach(),
        z_start=z0,
        y=y.clone(),
        target=target_out.clone(),
        f1_pred=f1p,
        f2_pred=f2p,
        f1_keeps=kept,
        f2_changed=chg,
        success=kept & chg,
        iterations=best_it,
        k=k.detach(),
    )


@register_attack(
    "type-i",
    TypeISettings,
    "Type I attack: the image changes class, the model keeps its label (SVAE latent "
    "search, Algorithm 2), Tang et al. 2019",
    encodings=("onehot",),
    kind="type-i",
    needs=("svae",),
)
def type_i_attack(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    s: TypeISettings,
    *,
    svae: SVAE,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """:func:`type_i` as a registered attack: the settings are those of
    :class:`TypeISettings`; ``svae`` is the run's SVAE (the runner passes it).

    The :class:`~labelflip.attacks.AttackResult` is built by
    :func:`~labelflip.attacks._result.finalize_type_i`: ``adv_pred`` is
    ``f1``'s class for the decoded example, ``success`` means ``f1`` kept
    ``y`` while ``f2`` moved to the target (away from ``y`` untargeted),
    ``attacker_pred`` is ``f2``'s class and ``transition`` the decoded
    midpoint ``f_dec((z₀ + z')/2)`` of the latent path. ``iterations`` is the
    step of the returned iterate; every sample takes part in all ``steps``
    steps, each one forward and backward pass of ``f1`` plus one forward
    pass to check the iterate."""
    r = type_i(clf, svae, x, y, target=target, generator=generator, **s.as_dict())
    with torch.no_grad():
        transition = svae.decode(0.5 * (r.z_start + r.z))
    n = len(r.y)
    return finalize_type_i(
        clf,
        x,
        r.y,
        r.x_adv,
        target=None if target is None else r.target,
        attacker_pred=r.f2_pred,
        transition=transition,
        iterations=r.iterations,
        forwards=torch.full((n,), 2 * s.steps, dtype=torch.long),
        backwards=torch.full((n,), s.steps, dtype=torch.long),
        min_confidence=s.min_confidence,
    )


def latent_attack(
    clf: Classifier,
    generator_fn: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    y: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    aux: Callable[[torch.Tensor], torch.Tensor] | None = None,
    target: torch.Tensor | None = None,
    **settings: Any,
) -> LatentAttackResult:
    """Type I attack on a latent space, eq. 13 of Tang et al. (§III-D);
    ``settings`` are the keywords of :class:`LatentTypeISettings`. It
    minimises over ``z'`` with Adam (learning rate ``lr``, §IV-E: 0.01)

        ``L(z') = k J1(G(z'), y) + max(ε − ‖z' − z‖², 0)``

    (§IV-E on MNIST: ``k = 1e-2``, ``ε = 0.1``), ``J1`` the cross-entropy of
    ``clf`` (eq. 9), ``G`` = ``generator_fn`` (e.g. ``svae.decode``). The
    hinge has zero gradient at ``z' = z``, so ``z'`` starts at ``z`` plus
    Gaussian noise of scale ``init_scale`` drawn from ``generator``. With an
    auxiliary latent classifier ``aux`` (``f_G`` of AC-GAN, or the SVAE's
    ``classify``) and ``target``, ``CE(f_G(z'), target)`` is added (§III-D).
    Returns the final iterate; nothing the caller passed is modified."""
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or not z.dtype.is_floating_point:
        raise LabelflipError("latent-attack: z must be a floating-point (N, d) tensor")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise LabelflipError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if (aux is None) != (target is None):
        raise LabelflipError("latent-attack: a target needs an auxiliary classifier and vice versa")
    s = LatentTypeISettings(**settings)  # the keyword settings, declared there once
    if not isinstance(y, torch.Tensor) or y.shape != (z.shape[0],):
        raise LabelflipError(f"latent-attack: y must be a tensor of shape ({z.shape[0]},)")
    y = y.detach().to(device=z.device, dtype=torch.long)
    if target is not None:
        target = torch.as_tensor(target).to(device=z.device, dtype=torch.long).expand(z.shape[0])
    gen = generator_or_default(generator)
    z0 = z.detach().clone()
    noise = torch.randn(z0.shape, generator=gen, device=gen.device, dtype=z0.dtype)
    zp = (z0 + s.init_scale * noise.to(z0.device)).requires_grad_(True)
    opt = torch.optim.Adam([zp], lr=s.lr)
    for i in range(s.steps):
        x_t = generator_fn(zp).clamp(*clf.bounds)
        loss = s.k * F.cross_entropy(clf(x_t), y, reduction="none")
        loss = loss + (s.eps - (zp - z0).pow(2).sum(1)).clamp_min(0)
        if aux is not None and target is not None:
            loss = loss + F.cross_entropy(aux(zp), target, reduction="none")
        (zp.grad,) = torch.autograd.grad(loss.sum(), [zp])
        opt.step()
        report_progress(i + 1, s.steps)
    with torch.no_grad():
        z_adv = zp.detach()
        x_adv = generator_fn(z_adv).clamp(*clf.bounds)
        f1p = clf.decode(clf(x_adv))
        dist = (z_adv - z0).pow(2).sum(1)
        keeps, far = f1p == y, dist >= s.eps
    return LatentAttackResult(z_adv, x_adv, f1p, keeps, dist, far, keeps & far)


@register_attack(
    "latent-type-i",
    LatentTypeISettings,
    "Type I attack on a generator's latent space (eq. 13; the SVAE decoder, with f2 "
    "as the auxiliary classifier when targeted), Tang et al. 2019",
    encodings=("onehot",),
    kind="type-i",
    needs=("svae",),
)
def latent_type_i_attack(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    s: LatentTypeISettings,
    *,
    svae: SVAE,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """:func:`latent_attack` (eq. 13) as a registered attack on the SVAE's
    latent space: ``z = μ(x)``, ``G`` = the decoder and, when targeted, the
    SVAE's ``f2`` as the auxiliary classifier ``f_G`` (§III-D). The result
    is judged like :func:`type_i_attack`'s: ``success`` when ``f1`` keeps
    ``y`` while ``f2`` moves (to the target, or off ``y``); eq. 12's own
    criterion, ``‖z' − z‖² ≥ ε``, is what the hinge enforces. Every sample
    takes all ``steps`` steps (one forward and backward pass of ``f1``
    each)."""
    x, y, target = prepare_inputs(clf, x, y, target, generator)
    with torch.no_grad():
        z = svae.encode(x)[0]
    r = latent_attack(
        clf, svae.decode, z, y, **s.as_dict(),
        generator=generator, aux=None if target is None else svae.classify, target=target,
    )  # fmt: skip
    with torch.no_grad():
        f2 = svae.classify(r.z_adv).argmax(1)
        transition = svae.decode(0.5 * (z + r.z_adv))
    n = len(y)
    return finalize_type_i(
        clf,
        x,
        y,
        r.x_adv,
        target=target,
        attacker_pred=f2,
        transition=transition,
        iterations=torch.full((n,), s.steps, dtype=torch.long),
        forwards=torch.full((n,), s.steps, dtype=torch.long),
        backwards=torch.full((n,), s.steps, dtype=torch.long),
    )


@torch.no_grad()
def judge(
    oracle: Classifier,
    f1: Classifier,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None = None,
) -> Judgement:
    """Judge Type I examples with an independent ``oracle`` (eq. 2 with the
    oracle as ``f2``): ``f1`` must keep ``y``, the oracle must not.
    ``target`` (``-1`` entries = untargeted) also scores
    ``oracle(x_adv) == target``."""
    if not isinstance(x_adv, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise LabelflipError("judge: x_adv and y must be tensors")
    if y.shape != (x_adv.shape[0],):
        raise LabelflipError(f"judge: y must have shape ({x_adv.shape[0]},), got {tuple(y.shape)}")
    y = y.to(x_adv.device)
    f1p = f1.predict(x_adv).to(x_adv.device)
    op = oracle.predict(x_adv).to(x_adv.device)
    keeps, changed = f1p == y, op != y
    if target is None:
        on_target = torch.zeros_like(keeps)
    else:
        t = torch.as_tensor(target).to(x_adv.device).expand(y.shape[0])
        on_target = (op == t) & (t >= 0)
    return Judgement(f1p, op, keeps, changed, on_target, keeps & changed)
