"""The one result type every attack returns, and the one place it is built.

:func:`finalize` is the only code that decides whether an attack succeeded:
it clips the attack's output into the classifier's bounds, evaluates the
model on the clean and on the returned adversarial inputs (under
``torch.no_grad``) and derives ``success`` and the perturbation norms from
those evaluations alone, never from an attack's internal bookkeeping.

All tensors of an :class:`AttackResult` live on the device of the attacked
inputs ``x`` (nothing is moved behind the caller's back); :meth:`AttackResult.cpu`
and :meth:`AttackResult.to_numpy` bring them to the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from labelflip.models.classifier import Classifier

# Per-sample fields, in record order (``x_adv`` first: it is the only non-vector one).
_PER_SAMPLE = (
    "x_adv",
    "y",
    "clean_pred",
    "adv_pred",
    "success",
    "target",
    "l0",
    "l1",
    "l2",
    "linf",
    "iterations",
    "forwards",
    "backwards",
    "attacker_pred",
)


@dataclass(frozen=True, eq=False)
class AttackResult:
    """One row per attacked sample (all tensors have length ``N``).

    - ``x_adv``: the adversarial inputs, clipped into the classifier's bounds,
      same shape and dtype as the attacked ``x``.
    - ``y``: the true labels the attack was given.
    - ``clean_pred`` / ``adv_pred``: the model's predictions on ``x`` and on ``x_adv``.
    - ``success``: untargeted: ``adv_pred != y`` (a sample the model already
      misclassifies counts as a success, as in Foolbox); targeted:
      ``adv_pred == target``. For a Type I attack (:func:`finalize_type_i`)
      the reverse: the model keeps ``y`` while ``attacker_pred`` changes.
    - ``target``: the target classes, or ``None`` for an untargeted attack.
    - ``l0``: number of changed input components; ``l1``, ``l2``, ``linf``:
      norms of ``x_adv - x`` (float64), in input units.
    - ``iterations``: iterations the sample actually used (early-exit attacks
      stop counting when the sample leaves the active batch).
    - ``forwards`` / ``backwards``: model forward / backward passes the attack
      spent on the sample; a sample taking part in one batched pass counts 1,
      and so does one gradient evaluation of several outputs (DeepFool's
      candidates, JMA's Jacobian), whatever the device's strategy.
      The clean and adversarial evaluations done by :func:`finalize` are not
      counted (they are bookkeeping, not attack work).
    - ``attacker_pred``: a Type I attack's own judge of the example (the
      SVAE's latent classifier ``f2``); ``None`` for Type II attacks.
    - ``transition``: a Type I attack's halfway image between the start and
      the result (for the report's gallery); ``None`` otherwise.
    - ``profile``: an attack of attacks' per-sample distances, ``(N, C)``
      float64, ``inf`` where nothing was found: ``boundary-profile``'s
      distance to each class's boundary (``C`` classes), ``best-of``'s norm
      reached by each inner attack (``C`` attacks, in its ``attacks`` order);
      ``None`` otherwise. Not a record column: the runner keeps it in the run
      directory (``profiles/<job>.npy``, :meth:`labelflip.store.RunDir.load_profile`).
    """

    x_adv: torch.Tensor
    y: torch.Tensor
    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    success: torch.Tensor
    target: torch.Tensor | None
    l0: torch.Tensor
    l1: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    iterations: torch.Tensor
    forwards: torch.Tensor
    backwards: torch.Tensor
    attacker_pred: torch.Tensor | None = None
    transition: torch.Tensor | None = None
    profile: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def targeted(self) -> bool:
        return self.target is not None

    def to(self, device: str | torch.device) -> AttackResult:
        """A copy with every tensor moved to ``device``."""
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device) if isinstance(value, torch.Tensor) else value
        return AttackResult(**moved)

    def cpu(self) -> AttackResult:
        return self.to("cpu")

    def to_numpy(self, *, include_x: bool = False) -> dict[str, np.ndarray]:
        """Per-sample columns as numpy arrays (``target`` and ``attacker_pred``
        are -1 when absent).

        ``x_adv`` is left out unless ``include_x`` (it is large).
        """
        out: dict[str, np.ndarray] = {}
        for name in _PER_SAMPLE:
            if name == "x_adv" and not include_x:
                continue
            value = getattr(self, name)
            if value is None:
                value = torch.full_like(self.y, -1)
            out[name] = value.detach().cpu().numpy()
        return out

    def summary(self) -> dict[str, int | float]:
        """Counts as ``int`` (``n``, ``n_success``, total ``forwards`` and
        ``backwards`` passes), the success rate, median norms over the
        successful samples (the usual median: the mean of the two middle
        values for an even count; NaN if none succeeded) and the mean
        iterations as ``float``."""
        n = len(self)
        ok = self.success.bool()
        k = int(ok.sum())
        out: dict[str, int | float] = {
            "n": n,
            "n_success": k,
            "success_rate": k / n if n else math.nan,
        }
        for name in ("l0", "l1", "l2", "linf"):
            v = getattr(self, name)[ok].double()
            out[f"median_{name}"] = float(v.quantile(0.5)) if k else math.nan
        out["mean_iterations"] = float(self.iterations.double().mean()) if n else math.nan
        out["forwards"] = int(self.forwards.sum())
        out["backwards"] = int(self.backwards.sum())
        return out


def perturbation_norms(
    x: torch.Tensor, x_adv: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample l0 (count of changed components), l1, l2 and linf of ``x_adv - x``."""
    d = (x_adv.detach() - x.detach()).flatten(1).double()
    if d.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.float64, device=d.device)
        return torch.zeros(0, dtype=torch.long, device=d.device), empty, empty, empty
    a = d.abs()
    return (d != 0).sum(1), a.sum(1), d.norm(dim=1), a.amax(1)


def finalize(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    *,
    target: torch.Tensor | None,
    iterations: torch.Tensor,
    forwards: torch.Tensor,
    backwards: torch.Tensor,
) -> AttackResult:
    """Build the :class:`AttackResult` of an attack from its raw output ``x_adv``.

    Clips ``x_adv`` into ``clf.bounds``, recomputes the clean and adversarial
    predictions with the model, and derives ``success`` and the norms from them.
    """
    x = x.detach()
    x_adv = clf.clip(x_adv.detach().to(dtype=x.dtype, device=x.device))
    y = y.detach().to(x.device).clone()
    with torch.no_grad():
        clean_pred = clf.predict(x)
        adv_pred = clf.predict(x_adv)
    if target is None:
        success = adv_pred != y
    else:
        target = target.detach().to(x.device).clone()
        success = adv_pred == target
    l0, l1, l2, linf = perturbation_norms(x, x_adv)

    def count(v: torch.Tensor) -> torch.Tensor:
        return v.detach().to(device=x.device, dtype=torch.long).clone()

    return AttackResult(
        x_adv=x_adv,
        y=y,
        clean_pred=clean_pred,
        adv_pred=adv_pred,
        success=success,
        target=target,
        l0=l0,
        l1=l1,
        l2=l2,
        linf=linf,
        iterations=count(iterations),
        forwards=count(forwards),
        backwards=count(backwards),
    )


def finalize_counts(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    target: torch.Tensor | None,
    counts: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> AttackResult:
    """:func:`finalize` with the ``(iterations, forwards, backwards)`` counters
    as one triple (as :func:`~labelflip.attacks._common.new_counts` makes them)."""
    iterations, forwards, backwards = counts
    return finalize(
        clf,
        x,
        y,
        x_adv,
        target=target,
        iterations=iterations,
        forwards=forwards,
        backwards=backwards,
    )


def finalize_type_i(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    *,
    target: torch.Tensor | None,
    attacker_pred: torch.Tensor,
    transition: torch.Tensor | None,
    iterations: torch.Tensor,
    forwards: torch.Tensor,
    backwards: torch.Tensor,
    min_confidence: float = 0.0,
) -> AttackResult:
    """:func:`finalize` for a Type I attack (Tang et al., eq. 2): the model
    must *keep* ``y`` (``adv_pred == y``, evaluated here; with
    ``min_confidence`` > 0 also with at least that softmax probability)
    while the attacker's own classifier moves (``attacker_pred == target``,
    or ``!= y`` untargeted). An independent oracle's verdict is the
    runner's to add."""
    r = finalize_counts(clf, x, y, x_adv, target, (iterations, forwards, backwards))
    a = attacker_pred.detach().to(device=r.y.device, dtype=torch.long).clone()
    changed = a == r.target if r.target is not None else a != r.y
    keeps = r.adv_pred == r.y
    if min_confidence > 0:
        with torch.no_grad():
            p = torch.softmax(clf(r.x_adv).double(), 1).gather(1, r.y[:, None])[:, 0]
        keeps &= p >= min_confidence
    return replace(
        r,
        success=keeps & changed,
        attacker_pred=a,
        transition=None if transition is None else clf.clip(transition.detach().to(x_adv)),
    )
