"""Best-of: several untargeted minimal-norm attacks per sample, keeping the
smallest successful adversarial.

The best available estimate of a sample's nearest decision boundary is the
smallest adversarial any attack finds: the per-sample minimum over an
ensemble of attacks is the reference of the optimality measure of AttackBench
(Cinà et al., "AttackBench: Evaluating Gradient-based Attacks for Adversarial
Examples", 2024), and Carlini et al. ("On Evaluating Adversarial
Robustness", 2019) recommend reporting the per-example minimum over
attacks. A flip matrix made from best-of's landings measures the model's
nearest boundaries rather than one attack's overshoot (issue 20: DeepFool
lands elsewhere than the smallest adversarial in 41 % of MNIST samples).

Each attack of ``attacks`` runs on the whole batch in turn, with the same
``torch.Generator`` (its state carries from one attack to the next, so the
result is a function of the generator's seed); per sample, the kept
adversarial is the successful one with the smallest ``norm`` (ties: the
earlier attack in ``attacks``); a sample no attack made adversarial keeps
``x`` itself (and :func:`~labelflip.attacks._result.finalize` reports a
failure). Passes and iterations are the sums over the attacks.

Which attack found each kept adversarial is in the result's ``profile``
(``(N, A)``: the norm each attack reached, ``inf`` where it failed), read by
:func:`found_by`. The run's records do not hold it (no record column); the
runner saves the profile as ``profiles/<job>.npy`` in the run directory
(:meth:`labelflip.store.RunDir.load_profile`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from labelflip._settings import Settings, setting
from labelflip.attacks._common import (
    generator_or_default,
    new_counts,
    prepare_inputs,
    progress_part,
)
from labelflip.attacks._inner import NORMS, add_counts, found_norms, inner_attack, supports
from labelflip.attacks._registry import AttackSpec, register_attack
from labelflip.attacks._result import AttackResult, finalize_counts
from labelflip.errors import LabelflipError
from labelflip.models.classifier import Classifier

DEFAULT_ATTACKS = ("deepfool", "superdeepfool", "ddn", "fmn")
"""The default ensemble, limited to the registered attacks that offer the norm."""


@dataclass(frozen=True)
class BestOfSettings(Settings):
    """Settings of :func:`best_of`."""

    attacks: tuple[str, ...] | None = setting(
        None,
        doc="the untargeted attacks run, in order (none: those of deepfool, superdeepfool, "
        "ddn, fmn that offer the norm)",
    )
    norm: str = setting(
        "l2", choices=NORMS, doc="the norm compared (set in every attack with a norm setting)"
    )
    options: dict[str, Any] | None = setting(
        None, doc="settings of the attacks: a table per attack name, e.g. {fmn = {steps = 100}}"
    )

    def resolve(self) -> None:
        if self.attacks is None:
            chosen = tuple(a for a in DEFAULT_ATTACKS if supports(a, self.norm))
            object.__setattr__(self, "attacks", chosen)

    def check(self) -> None:
        if not self.attacks:
            raise LabelflipError(f"{self.owner}: attacks must name at least one attack")
        seen = [a for i, a in enumerate(self.attacks) if a in self.attacks[:i]]
        if seen:
            raise LabelflipError(f"{self.owner}: attack '{seen[0]}' is named twice in attacks")
        for name, table in (self.options or {}).items():
            if name not in self.attacks:
                raise LabelflipError(
                    f"{self.owner}: options names '{name}', which is not in attacks "
                    f"({', '.join(self.attacks)})"
                )
            if not isinstance(table, Mapping):
                raise LabelflipError(
                    f"{self.owner}: options for '{name}' must be a table, got {table!r}"
                )
        self.inner()

    def inner(self) -> list[tuple[AttackSpec, Any]]:
        """Each attack of ``attacks`` with its validated settings."""
        options = self.options or {}
        return [
            inner_attack(self.owner, a, self.norm, options.get(a), targeted=False)
            for a in self.attacks or ()
        ]


@register_attack(
    "best-of",
    BestOfSettings,
    "the smallest successful adversarial of several untargeted minimal attacks, per sample",
    accepts_target=False,
)
def best_of(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    s: BestOfSettings,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Run every attack of ``s.attacks`` on the batch and keep, per sample,
    the successful adversarial with the smallest ``s.norm`` (see the module
    docstring); ``profile[:, a]`` is the norm attack ``a`` reached (``inf``:
    it failed)."""
    if target is not None:
        raise LabelflipError("best-of is an untargeted attack; it takes no target classes")
    x0, y, _ = prepare_inputs(clf, x, y, None, generator)
    gen = generator_or_default(generator)
    attacks = s.inner()
    n = len(x0)
    counts = new_counts(n, x0.device)
    found = torch.full((n, len(attacks)), float("inf"), dtype=torch.float64, device=x0.device)
    best = x0.clone()
    best_norm = torch.full((n,), float("inf"), dtype=torch.float64, device=x0.device)
    for a, (spec, settings) in enumerate(attacks):
        with progress_part(a, len(attacks)):
            r = spec.run(clf, x0, y, settings, generator=gen)
        found[:, a] = found_norms(r, s.norm)
        better = found[:, a] < best_norm  # strict: the earlier attack keeps a tie
        best[better] = r.x_adv[better]
        best_norm = torch.minimum(best_norm, found[:, a])
        add_counts(counts, r)
    result = finalize_counts(clf, x0, y, best, None, counts)
    return replace(result, profile=found)


def found_by(result: AttackResult) -> torch.Tensor:
    """Per sample of a :func:`best_of` result, the position in its
    ``attacks`` of the attack whose adversarial was kept (the first of the
    smallest norms), -1 where no attack succeeded."""
    p = result.profile
    if p is None:
        raise LabelflipError("found_by needs a best-of result (it has no profile)")
    if p.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=p.device)
    smallest, position = p.min(1)
    return torch.where(torch.isfinite(smallest), position, torch.full_like(position, -1))
