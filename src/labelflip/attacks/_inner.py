"""Inner attacks: an attack that runs other registered attacks (``best-of``,
``boundary-profile``) names them in its settings; this module resolves such a
name and its settings table once, with one-line errors, and measures the
results in the outer attack's norm.

An inner attack must be a registered Type II attack, not itself an attack of
attacks, that takes target classes when it is given them and does not
require them when it is not. When its settings
declare a ``norm``, the outer attack's norm is set there (an explicit,
different ``norm`` in its table is refused, and so is a norm it does not
offer); an attack without a ``norm`` setting (ddn, alma, superdeepfool,
cw-l2: L2 attacks) runs as it is and is allowed for the L2 norm only."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from labelflip._settings import rule_of
from labelflip.attacks._registry import ATTACKS, AttackSpec, get_attack
from labelflip.attacks._result import AttackResult
from labelflip.errors import LabelflipError

NORMS = ("l0", "l1", "l2", "linf")

OUTER = frozenset({"best-of", "boundary-profile"})
"""Attacks that run other attacks; none of them may be an inner attack."""


def norm_choices(spec: AttackSpec) -> tuple[str, ...] | None:
    """The norms ``spec``'s ``norm`` setting offers, or ``None`` without one."""
    for f in dataclasses.fields(spec.settings_type):
        if f.name == "norm":
            return tuple(rule_of(f).choices or ())
    return None


def supports(name: str, norm: str) -> bool:
    """Whether the registered attack ``name`` can run in ``norm``."""
    spec = ATTACKS.get(name)
    if spec is None:
        return False
    choices = norm_choices(spec)
    return norm == "l2" if choices is None else norm in choices


def inner_attack(
    owner: str,
    name: object,
    norm: str,
    options: Mapping[str, Any] | None,
    *,
    targeted: bool,
) -> tuple[AttackSpec, Any]:
    """The registered attack ``name`` and its validated settings (``options``
    with ``norm`` set where the attack has a norm setting), for the outer
    attack ``owner``; ``targeted``: whether it will be given target classes."""
    if not isinstance(name, str):
        raise LabelflipError(f"{owner}: an inner attack must be named by a string, got {name!r}")
    try:
        spec = get_attack(name)
    except LabelflipError as e:
        raise LabelflipError(f"{owner}: {e}") from None
    if spec.name in OUTER or spec.kind != "type-ii":
        raise LabelflipError(f"{owner}: '{name}' cannot be an inner attack")
    if not targeted and spec.default_target is not None:
        raise LabelflipError(f"{owner}: '{name}' needs target classes; it cannot run untargeted")
    if targeted and not spec.accepts_target:
        raise LabelflipError(f"{owner}: '{name}' is untargeted; a targeted attack is needed")
    table = dict(options or {})
    choices = norm_choices(spec)
    if choices is None:
        if norm != "l2":
            raise LabelflipError(
                f"{owner}: '{name}' has no norm setting (an L2 attack); it cannot run in {norm}"
            )
    else:
        if norm not in choices:
            raise LabelflipError(f"{owner}: '{name}' does not offer the {norm} norm")
        if table.get("norm", norm) != norm:
            raise LabelflipError(
                f"{owner}: the norm of '{name}' is the outer norm ({norm}), "
                f"got {table['norm']!r} in its settings"
            )
        table["norm"] = norm
    try:
        return spec, spec.settings(table)
    except LabelflipError as e:
        raise LabelflipError(f"{owner}: {e}") from None


def found_norms(r: AttackResult, norm: str) -> torch.Tensor:
    """Per sample, the ``norm`` of a successful adversarial of ``r`` (float64),
    ``inf`` where the attack failed."""
    d = getattr(r, norm).to(torch.float64)
    return torch.where(r.success, d, torch.full_like(d, float("inf")))


def add_counts(total: tuple[torch.Tensor, torch.Tensor, torch.Tensor], r: AttackResult) -> None:
    """Add ``r``'s iterations, forwards and backwards into ``total`` (in place)."""
    for acc, v in zip(total, (r.iterations, r.forwards, r.backwards), strict=True):
        acc += v
