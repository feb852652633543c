"""Adversarial training: the inner maximisation, the training loss, and
robust accuracy.

Adversarial training solves Madry et al.'s saddle-point problem ("Towards
Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018, eq. 2.1)

    min_θ ρ(θ),   ρ(θ) = E_(x,y) [ max_{δ ∈ S} L(θ, x + δ, y) ],

with ``S`` the ε-ball of the L∞ or L2 norm (intersected with the input box):
each batch, an attack approximates the inner maximum and the optimiser
steps on the loss at the attacked inputs. The methods (:data:`METHODS`):

- ``fgsm-rs``: Wong, Rice & Kolter, "Fast is better than free: Revisiting
  adversarial training" (ICLR 2020), Algorithm 3: ``δ ~ U(−ε, ε)``,
  ``δ ← δ + α·sign(∇_δ L(x + δ, y))``, ``δ ← max(min(δ, ε), −ε)``, step
  ``α = 1.25 ε`` (their §4.1; ``--alpha 0.375`` at ε = 0.3 in their MNIST
  code). The random start is labelflip's ``random_start_*`` and the step is
  :func:`labelflip.attacks.fgsm.fgsm` from that start, then the projection
  onto the ball and the box. As in their CIFAR code, the start is clipped to
  the box before the gradient (their MNIST code does not clip it).
- ``pgd``: Madry et al.: the inner maximum by PGD from a random start
  (their eq. 2 step), :func:`labelflip.attacks.pgd.pgd` itself; default
  10 steps of ``2.5 ε / steps`` (the rule MadryLab's ``robustness`` library
  recommends, so that the walk can cross the ball from side to side).
- ``trades``: Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan, "Theoretically
  Principled Trade-off between Robustness and Accuracy" (ICML 2019), the
  multi-class TRADES objective (§4, Algorithm 1)

      min_θ E [ CE(f(x), y) + β · max_{x' ∈ B(x, ε)} KL(f(x) ‖ f(x')) ],

  ``f`` the softmax output. The inner maximum starts at ``x + 0.001·N(0, I)``
  and takes ``steps`` steepest-ascent steps of the KL term, each projected
  onto the ball and the box (:func:`kl_ascent`, built from the attacks'
  shared helpers); as in their ``trades.py`` the KL is summed over classes
  and averaged over the batch. β defaults to 6 (the paper's CIFAR-10 value;
  their MNIST script uses 1).

The adversarial examples are generated with the model in **eval mode**
(dropout off, batch-norm statistics frozen: the attacks work on a
:class:`~labelflip.models.classifier.Classifier`, which is always in eval
mode), then the model steps in train mode. TRADES's code does the same
(``model.eval()`` before the inner maximisation, ``model.train()`` after);
Wong et al.'s and Madry et al.'s MNIST networks have no dropout or batch
norm, for which the two modes coincide.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from labelflip.errors import LabelflipError, unknown_name
from labelflip.models.classifier import Classifier

NORMS = ("linf", "l2")

# Robust accuracy: PGD with 40 steps, random start, labelflip's default step
# size (0.01 at ε = 0.3 in L∞, Madry et al.'s MNIST evaluation).
ROBUST_STEPS = 40


@dataclass(frozen=True)
class AdversarialSettings:
    """How a model is adversarially trained.

    ``steps`` and ``step_size`` default per method (``None``): ``fgsm-rs``
    takes one step of ``1.25 ε``; ``pgd`` and ``trades`` take 10 steps of
    ``2.5 ε / steps``. ``beta`` weighs TRADES's KL term. Every epoch the
    robust accuracy on ``val_samples`` held-out training images under PGD
    with ``val_steps`` steps (random start, step ``2.5 ε / val_steps``)
    chooses the epoch that is kept (watching for catastrophic overfitting).

    ``eps_ramp``: over the first ``eps_ramp`` epochs the training budget (and
    the step) grows linearly from 0 to ``eps`` (:meth:`at`), the warm-up of
    Gowal et al. 2018 (IBP) and of MNIST adversarial training generally;
    0 (default) trains at ``eps`` from the first step, as Wong et al."""

    method: str
    eps: float
    norm: str = "linf"
    steps: int | None = None
    step_size: float | None = None
    beta: float | None = None
    val_samples: int = 1000
    val_steps: int = 10
    eps_ramp: float = 0.0

    def resolved(self) -> AdversarialSettings:
        """A copy with the per-method defaults filled in (after :meth:`validate`)."""
        self.validate()
        spec = METHODS[self.method]
        steps = self.steps if self.steps is not None else spec.default_steps
        step = self.step_size
        if step is None:
            step = 1.25 * self.eps if self.method == "fgsm-rs" else 2.5 * self.eps / steps
        beta = self.beta if self.beta is not None else (6.0 if self.method == "trades" else None)
        return replace(self, steps=steps, step_size=float(step), beta=beta)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise unknown_name("adversarial training method", str(self.method), METHODS)
        if self.norm not in NORMS:
            raise unknown_name("norm", str(self.norm), NORMS)
        _positive("adversarial eps", self.eps)
        if self.steps is not None:
            if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
                raise LabelflipError(f"adversarial steps must be an integer >= 1, got {self.steps}")
            if self.method == "fgsm-rs" and self.steps != 1:
                raise LabelflipError(
                    f"fgsm-rs takes exactly one step (got {self.steps} steps); "
                    "use --adversarial pgd for several"
                )
        if self.step_size is not None:
            _positive("adversarial step size", self.step_size)
        if self.beta is not None:
            if self.method != "trades":
                raise LabelflipError("beta only applies to --adversarial trades")
            _positive("TRADES beta", self.beta)
        if self.val_samples < 0:
            raise LabelflipError(f"robust validation samples must be >= 0, got {self.val_samples}")
        if not (isinstance(self.eps_ramp, (int, float)) and 0 <= self.eps_ramp < math.inf):
            raise LabelflipError(f"eps ramp must be a number of epochs >= 0, got {self.eps_ramp}")
        if self.val_steps < 1:
            raise LabelflipError(f"robust validation steps must be >= 1, got {self.val_steps}")

    def at(self, fraction: float) -> AdversarialSettings:
        """The settings at ``fraction`` (0 to 1) of the ε ramp: ``eps`` and
        ``step_size`` scaled by it."""
        if fraction >= 1.0:
            return self
        assert self.step_size is not None
        return replace(self, eps=self.eps * fraction, step_size=self.step_size * fraction)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _positive(name: str, value: object) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (math.isfinite(float(value)) and float(value) > 0):  # type: ignore[arg-type]
        raise LabelflipError(f"{name} must be a positive number, got {value}")


Net = Callable[[torch.Tensor], torch.Tensor]
"""The network in training mode on inputs in the box (normalisation inside)."""


@dataclass(frozen=True)
class Method:
    """One adversarial training method: the inner maximisation ``perturb``
    (eval mode, on the classifier) and the ``loss`` the optimiser steps on
    (train mode), returning the loss and the logits of the attacked inputs."""

    name: str
    description: str
    default_steps: int
    perturb: Callable[
        [Classifier, torch.Tensor, torch.Tensor, AdversarialSettings, torch.Generator],
        torch.Tensor,
    ]
    loss: Callable[
        [Net, torch.Tensor, torch.Tensor, torch.Tensor, AdversarialSettings],
        tuple[torch.Tensor, torch.Tensor],
    ]


def _fgsm_rs(
    clf: Classifier, x: torch.Tensor, y: torch.Tensor, s: AdversarialSettings, gen: torch.Generator
) -> torch.Tensor:
    """Wong et al. 2020, Algorithm 3: random start, one FGSM step of ``α``,
    projection onto the ε-ball and the box."""
    from labelflip.attacks.fgsm import fgsm
    from labelflip.attacks.primitives import (
        project_l2,
        project_linf,
        random_start_l2,
        random_start_linf,
    )

    start = random_start_linf if s.norm == "linf" else random_start_l2
    project = project_linf if s.norm == "linf" else project_l2
    x_start = clf.clip(start(x, s.eps, gen))
    stepped = fgsm(clf, x_start, y, eps=s.step_size, norm=s.norm).x_adv
    return clf.clip(project(stepped, x, s.eps))


def _pgd(
    clf: Classifier, x: torch.Tensor, y: torch.Tensor, s: AdversarialSettings, gen: torch.Generator
) -> torch.Tensor:
    """Madry et al. 2018: PGD from a random start (labelflip's :func:`pgd`)."""
    from labelflip.attacks.pgd import pgd

    res = pgd(
        clf,
        x,
        y,
        eps=s.eps,
        norm=s.norm,
        steps=s.steps,
        abs_stepsize=s.step_size,
        random_start=True,
        generator=gen,
    )
    return res.x_adv


def kl_ascent(
    clf: Classifier,
    x: torch.Tensor,
    x_start: torch.Tensor,
    *,
    eps: float,
    norm: str,
    steps: int,
    step_size: float,
) -> torch.Tensor:
    """TRADES's inner maximisation (Zhang et al. 2019, Algorithm 1): from
    ``x_start``, ``steps`` steepest-ascent steps of ``KL(f(x) ‖ f(x'))`` in
    ``x'`` (sign of the gradient for L∞, unit L2 gradient for L2), each
    projected onto the ε-ball around ``x`` and clipped to the box."""
    from labelflip.attacks.primitives import project_l2, project_linf, steepest_direction

    project = project_linf if norm == "linf" else project_l2
    with torch.no_grad():
        log_p = F.log_softmax(clf(x), dim=1)
    xa = clf.clip(project(x_start, x, eps))
    for _ in range(steps):
        with torch.enable_grad():
            xg = xa.detach().requires_grad_(True)
            kl = F.kl_div(F.log_softmax(clf(xg), dim=1), log_p, reduction="sum", log_target=True)
            (grad,) = torch.autograd.grad(kl, xg)
        xa = clf.clip(project(xa + step_size * steepest_direction(grad, norm), x, eps))
    return xa.detach()


def _trades(
    clf: Classifier, x: torch.Tensor, y: torch.Tensor, s: AdversarialSettings, gen: torch.Generator
) -> torch.Tensor:
    from labelflip.attacks.primitives import normal

    x_start = x + 0.001 * normal(x.shape, gen, x)  # TRADES's start: x + 0.001·N(0, I)
    assert s.steps is not None and s.step_size is not None
    return kl_ascent(clf, x, x_start, eps=s.eps, norm=s.norm, steps=s.steps, step_size=s.step_size)


def _ce_at_adversarial(
    net: Net, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, s: AdversarialSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Madry et al. eq. 2.1 with the inner maximum replaced by the attack:
    the cross-entropy at the adversarial inputs."""
    logits = net(x_adv)
    return F.cross_entropy(logits, y), logits


def _trades_loss(
    net: Net, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, s: AdversarialSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """The TRADES objective: ``CE(f(x), y) + β · KL(f(x) ‖ f(x_adv))`` (KL
    summed over classes, averaged over the batch; gradients through both)."""
    logits_nat = net(x)
    logits_adv = net(x_adv)
    kl = F.kl_div(
        F.log_softmax(logits_adv, dim=1),
        F.log_softmax(logits_nat, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    assert s.beta is not None
    return F.cross_entropy(logits_nat, y) + s.beta * kl, logits_adv


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "fgsm-rs",
            "FGSM from a random start, step 1.25 eps (Wong, Rice & Kolter 2020)",
            1,
            _fgsm_rs,
            _ce_at_adversarial,
        ),
        Method(
            "pgd",
            "PGD from a random start (Madry et al. 2018)",
            10,
            _pgd,
            _ce_at_adversarial,
        ),
        Method(
            "trades",
            "CE + beta * KL to a KL-maximising neighbour (Zhang et al. 2019)",
            10,
            _trades,
            _trades_loss,
        ),
    )
}


def perturb(
    clf: Classifier, x: torch.Tensor, y: torch.Tensor, s: AdversarialSettings, gen: torch.Generator
) -> torch.Tensor:
    """The training inputs of one batch under method ``s.method`` (resolved
    settings): adversarial examples inside the ε-ball around ``x`` and the
    classifier's bounds, computed in eval mode."""
    return METHODS[s.method].perturb(clf, x, y, s, gen)


def adversarial_loss(
    s: AdversarialSettings, net: Net, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss the optimiser steps on and the logits of ``x_adv``."""
    return METHODS[s.method].loss(net, x, x_adv, y, s)


def robust_predictions(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = ROBUST_STEPS,
    step_size: float | None = None,
    batch_size: int = 500,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and adversarial predictions (on the CPU) of ``x`` under
    labelflip's PGD (random start, ``steps`` steps of ``step_size``,
    default labelflip's PGD step for ``eps``), batch by batch on the
    classifier's device, the random starts drawn from one generator seeded
    with ``seed``. ``on_batch(n)`` is called after each batch of ``n``."""
    from labelflip.attacks.pgd import pgd

    if batch_size < 1:
        raise LabelflipError(f"batch size must be >= 1, got {batch_size}")
    dev = clf.mean.device
    gen = torch.Generator().manual_seed(seed)
    clean, adv = [], []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev)
        res = pgd(
            clf,
            xb,
            yb,
            eps=eps,
            norm=norm,
            steps=steps,
            abs_stepsize=step_size,
            random_start=True,
            generator=gen,
        )
        clean.append(res.clean_pred.cpu())
        adv.append(res.adv_pred.cpu())
        if on_batch is not None:
            on_batch(len(xb))
    if not clean:
        empty = torch.empty(0, dtype=torch.long)
        return empty, empty
    return torch.cat(clean), torch.cat(adv)


def robust_accuracy(clf: Classifier, x: torch.Tensor, y: torch.Tensor, **pgd: Any) -> float:
    """Robust accuracy: the share of ``x`` classified right both as given and
    after labelflip's PGD, run by :func:`robust_predictions` with the keywords
    ``pgd`` (``eps`` required; ``norm``, ``steps``, ``step_size``,
    ``batch_size``, ``seed`` as there)."""
    if len(x) == 0:
        return float("nan")
    clean, adv = robust_predictions(clf, x, y, **pgd)
    y = y.cpu()
    return float(((clean == y) & (adv == y)).double().mean())


def adversarial_from_options(
    method: str | None,
    *,
    eps: float | None = None,
    norm: str | None = None,
    steps: int | None = None,
    step_size: float | None = None,
    beta: float | None = None,
    val_samples: int | None = None,
    eps_ramp: float | None = None,
) -> AdversarialSettings | None:
    """The validated settings the ``labelflip train`` options give (``None``
    without ``--adversarial``); one-line errors for options without it and
    for bad values."""
    given = {
        "--adv-eps": eps,
        "--adv-norm": norm,
        "--adv-steps": steps,
        "--adv-step-size": step_size,
        "--trades-beta": beta,
        "--adv-val-samples": val_samples,
        "--adv-eps-ramp": eps_ramp,
    }
    if method is None:
        orphans = [k for k, v in given.items() if v is not None]
        if orphans:
            verb = "goes" if len(orphans) == 1 else "go"
            raise LabelflipError(f"{'/'.join(orphans)} only {verb} with --adversarial METHOD")
        return None
    if method not in METHODS:
        raise unknown_name("adversarial training method", method, METHODS)
    if eps is None:
        raise LabelflipError(
            f"--adversarial {method} needs --adv-eps (e.g. 0.3 for MNIST in linf, "
            "0.0314 = 8/255 for CIFAR-10)"
        )
    s = AdversarialSettings(
        method,
        eps,
        norm or "linf",
        steps,
        step_size,
        beta,
        1000 if val_samples is None else val_samples,
        eps_ramp=0.0 if eps_ramp is None else eps_ramp,
    )
    return s.resolved()
