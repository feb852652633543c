"""Jobs: an ``[[attacks]]`` entry expanded into one job per combination of its
list-valued settings (a grid), each with its target strategy resolved. A
setting the attack declares as a list (best-of's ``attacks``) takes a list as
its value; a list of lists makes it a grid axis."""

from __future__ import annotations

import dataclasses
import itertools
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import UnionType
from typing import Any

from labelflip._text import slug
from labelflip.errors import LabelflipError

TARGET_KEY = "target"  # the job-level setting of an [[attacks]] entry naming its target strategy


@dataclass(frozen=True)
class AttackConfig:
    """One ``[[attacks]]`` entry: the registry name, its settings (list values
    are grid axes) and an optional human label."""

    attack: str
    settings: dict[str, Any] = field(default_factory=dict)
    label: str | None = None


@dataclass(frozen=True)
class JobSpec:
    """One expanded job: a single attack with scalar settings and, for a
    targeted job, its target strategy (``{"strategy": name, **settings}``)."""

    job_id: str
    attack: str
    settings: dict[str, Any]
    label: str
    group: str
    sweep_value: float | None
    target: dict[str, Any] | None = None

    def stored_settings(self) -> dict[str, Any]:
        """The settings recorded in the run's job table (the target strategy under ``target``)."""
        return {**self.settings, "target": self.target} if self.target else dict(self.settings)


def target_spec(attack: str, value: Any) -> dict[str, Any] | None:
    """The normalised target strategy of a job, ``{"strategy": name, **settings}``
    (validated), from its ``target`` setting: a strategy name or a table.
    ``None`` (no target) gives the attack's default strategy, if it has one."""
    from labelflip.attacks import get_attack

    spec = get_attack(attack)
    if value is None:
        default = getattr(spec, "default_target", None)
        if default is None:
            return None
        value = default
    if not getattr(spec, "accepts_target", True):
        raise LabelflipError(f"attack '{attack}' is untargeted; it takes no 'target'")
    if not isinstance(value, (str, Mapping)):
        raise LabelflipError(
            f"'target' must be a strategy name or a table with 'strategy', got {value!r}"
        )
    from labelflip.targets import strategy_settings_from_mapping

    strategy, settings = strategy_settings_from_mapping(value)
    return {"strategy": strategy.name, **dataclasses.asdict(settings)}


def missing_target_distance(
    jobs: list[JobSpec], available: tuple[str, ...] | list[str]
) -> tuple[JobSpec, str] | None:
    """The first job whose target strategy measures with a class distance not
    in ``available``, and that distance's name; ``None`` when all are there."""
    for spec in jobs:
        distance = (spec.target or {}).get("distance")
        if distance is not None and distance not in available:
            return spec, distance
    return None


def list_settings(attack: str) -> frozenset[str]:
    """The settings of ``attack`` declared as lists (a tuple annotation)."""
    from labelflip.attacks import get_attack

    try:
        cls = get_attack(attack).settings_type
    except LabelflipError:
        return frozenset()
    hints = typing.get_type_hints(cls)

    def is_list(tp: Any) -> bool:
        args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, UnionType) else ()
        return any(typing.get_origin(t) in (tuple, list) for t in (tp, *args))

    return frozenset(f.name for f in dataclasses.fields(cls) if is_list(hints[f.name]))


def _is_axis(key: str, value: Any, lists: frozenset[str]) -> bool:
    if not isinstance(value, list):
        return False
    return key not in lists or all(isinstance(v, list) for v in value)


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(_fmt(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):  # e.g. a target table: "nearest semantic"
        return " ".join(_fmt(v) for v in value.values())
    return str(value)


def expand(entry: AttackConfig) -> list[JobSpec]:
    """One job per combination of the entry's list-valued settings (in key order).

    A job id reads like ``pgd-linf-eps0.1``: the attack name, then each
    explicit setting (string values alone, others as key and value). The
    group is the entry's id without the grid keys; the sweep value is the
    grid value when exactly one setting is a list of numbers.
    """
    keys = list(entry.settings)
    lists = list_settings(entry.attack)
    grid = [k for k in keys if _is_axis(k, entry.settings[k], lists)]
    axes = [entry.settings[k] for k in grid]

    def part(k: str, v: Any) -> str:
        if k == TARGET_KEY:
            return "to-" + (_fmt(v) if isinstance(v, str) else part("", v))
        if isinstance(v, Mapping):
            return "-".join(part(kk, vv) for kk, vv in v.items())
        return _fmt(v) if isinstance(v, str) else f"{k}{_fmt(v)}"

    fixed = [part(k, entry.settings[k]) for k in keys if k not in grid]
    group = slug("-".join([entry.attack, *fixed]))
    out = []
    for combo in itertools.product(*axes) if grid else [()]:
        settings = dict(entry.settings)
        settings.update(zip(grid, combo, strict=True))
        jid = slug("-".join([entry.attack, *(part(k, settings[k]) for k in keys)]))
        shown = ", ".join(f"{k}={_fmt(settings[k])}" for k in keys)
        label = entry.label or entry.attack
        label = f"{label} ({shown})" if shown else label
        sweep = None
        if len(grid) == 1 and isinstance(combo[0], (int, float)) and not isinstance(combo[0], bool):
            sweep = float(combo[0])
        target = target_spec(entry.attack, settings.pop(TARGET_KEY, None))
        out.append(JobSpec(jid, entry.attack, settings, label, group, sweep, target))
    return out
