"""The attack registry: config names mapped to the attack and its settings
type. An attack registers itself where it is defined::

    @register_attack("pgd", PGDSettings, "Projected Gradient Descent ...")
    def pgd(clf, x, y, s: PGDSettings, *, target, generator) -> AttackResult: ...

The decorated implementation takes its validated settings object; the
decorator returns the public function, whose keyword settings derive from the
settings dataclass (``pgd(clf, x, y, *, eps=..., norm=..., target=None,
generator=None)``, with that signature for ``help`` and ``inspect``). The
runner builds and validates a job's settings once and calls the
implementation per batch.

``foolbox`` runs any Foolbox 3 attack (optional extra); ``foolbox:<Attack>``
is shorthand for it with ``attack`` preset (e.g. ``foolbox:LinfPGD``);
``torchattacks`` and ``torchattacks:<Attack>`` likewise for torchattacks
(e.g. ``torchattacks:APGD``, ``torchattacks:AutoAttack``)."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from labelflip._settings import describe, from_mapping, keyword_function
from labelflip.attacks._result import AttackResult
from labelflip.errors import LabelflipError, unknown_name
from labelflip.models.classifier import Classifier

Implementation = Callable[..., AttackResult]
"""``impl(clf, x, y, settings, *, target, generator, **resources) -> AttackResult``."""


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack: its config ``name``, the implementation taking a
    settings object, the frozen settings dataclass, and a one-line
    description. ``fn`` is the public keyword function derived from them.

    ``accepts_target``: whether the attack takes target classes at all.
    ``default_target``: the target strategy (a name in
    :data:`labelflip.targets.TARGET_STRATEGIES`) used when a config gives this
    attack none; an attack with a default target requires targets.
    ``encodings``: the output encodings (:mod:`labelflip.models.encoding`) of
    the models the attack applies to. ``kind``: ``"type-ii"`` (the model's
    label flips under a small change) or ``"type-i"`` (the image changes
    class while the model keeps its label; judged by an oracle).
    ``needs``: run resources the function takes as keyword arguments besides
    its settings (``"svae"``: the run's SVAE, see ``[svae]`` in a config)."""

    name: str
    impl: Implementation
    settings_type: type
    description: str
    accepts_target: bool = True
    default_target: str | None = None
    encodings: tuple[str, ...] = ("onehot", "ecoc")
    kind: str = "type-ii"
    needs: tuple[str, ...] = ()
    fn: Callable[..., AttackResult] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fn", _keyword_function(self))

    def default_settings(self) -> Any:
        return self.settings_type()

    def settings(self, mapping: Mapping[str, Any] | None = None) -> Any:
        """Validated settings from a config mapping (did-you-mean for an unknown key)."""
        return from_mapping(self.settings_type, mapping, owner="attack", name=self.name)

    def describe(self) -> list[dict[str, Any]]:
        """The attack's settings: name, type, default, constraint, doc."""
        return describe(self.settings_type)

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        settings: Any,
        *,
        target: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> AttackResult:
        """Run with an already validated settings object."""
        return self.impl(
            clf,
            x,
            y,
            settings,
            target=target,
            generator=generator,
            **attack_resources(self, resources),
        )


def _keyword_function(spec: AttackSpec) -> Callable[..., AttackResult]:
    """The public function of ``spec``: keyword settings as the settings
    type's fields (built and validated on every call), plus ``target``,
    ``generator`` and the resources the attack needs."""

    def call(s, clf, x, y, *, target=None, generator=None, **resources):  # type: ignore[no-untyped-def]
        return spec.run(clf, x, y, s, target=target, generator=generator, resources=resources)

    p = inspect.Parameter
    return keyword_function(
        spec.impl,
        spec.settings_type,
        call,
        leading=[p(n, p.POSITIONAL_OR_KEYWORD) for n in ("clf", "x", "y")],
        trailing=[
            p("target", p.KEYWORD_ONLY, default=None),
            p("generator", p.KEYWORD_ONLY, default=None),
            *(p(r, p.KEYWORD_ONLY) for r in spec.needs),
        ],
    )


ATTACKS: dict[str, AttackSpec] = {}
"""Every registered attack by config name (filled as the attack modules import)."""


def register_attack(
    name: str,
    settings: type,
    description: str,
    *,
    accepts_target: bool = True,
    default_target: str | None = None,
    encodings: tuple[str, ...] = ("onehot", "ecoc"),
    kind: str = "type-ii",
    needs: tuple[str, ...] = (),
) -> Callable[[Implementation], Callable[..., AttackResult]]:
    """Register the decorated implementation as attack ``name`` (see the
    module docstring); returns the public keyword function. The settings
    type's ``owner`` (the name in its messages) becomes ``name`` unless the
    class sets its own."""

    def decorate(impl: Implementation) -> Callable[..., AttackResult]:
        if name in ATTACKS:
            raise ValueError(f"attack {name!r} is registered twice")
        if "owner" not in vars(settings):
            settings.owner = name  # type: ignore[attr-defined]
        spec = AttackSpec(
            name,
            impl,
            settings,
            description,
            accepts_target,
            default_target,
            tuple(encodings),
            kind,
            tuple(needs),
        )
        ATTACKS[name] = spec
        return spec.fn

    return decorate


FOOLBOX_PREFIX = "foolbox:"
TORCHATTACKS_PREFIX = "torchattacks:"

# Shorthand prefix -> (the attack it presets, the adapter module whose
# attack_class checks the name, how descriptions name the library).
SHORTHANDS = {
    FOOLBOX_PREFIX: ("foolbox", "labelflip.attacks.foolbox_adapter", "Foolbox 3"),
    TORCHATTACKS_PREFIX: ("torchattacks", "labelflip.attacks.torchattacks_adapter", "torchattacks"),
}


def get_attack(name: str) -> AttackSpec:
    """The attack registered as ``name`` (a one-line error with a suggestion otherwise).

    ``foolbox:<Attack>`` gives the ``foolbox`` attack with ``attack`` preset to
    ``<Attack>`` (checked against ``foolbox.attacks``); ``torchattacks:<Attack>``
    likewise for ``torchattacks`` (e.g. ``torchattacks:APGD``).
    """
    for prefix in SHORTHANDS:
        if isinstance(name, str) and name.startswith(prefix):
            return _shorthand(prefix, name[len(prefix) :])
    spec = ATTACKS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise unknown_name("attack", str(name), ATTACKS)
    return spec


@functools.cache
def _shorthand(prefix: str, attack: str) -> AttackSpec:
    base_name, module, library = SHORTHANDS[prefix]
    importlib.import_module(module).attack_class(attack)  # an unknown name fails here
    base = ATTACKS[base_name]
    (preset,) = [f for f in dataclasses.fields(base.settings_type) if f.name == "attack"]
    settings_type = dataclasses.make_dataclass(
        base.settings_type.__name__,
        [("attack", str, dataclasses.field(default=attack, metadata=preset.metadata))],
        bases=(base.settings_type,),
        frozen=True,
        namespace={"__module__": base.settings_type.__module__},
    )
    return dataclasses.replace(
        base,
        name=prefix + attack,
        settings_type=settings_type,
        description=f"{library} {attack}",
    )


def settings_from_mapping(spec: AttackSpec, mapping: Mapping[str, Any] | None) -> Any:
    """Build and validate ``spec``'s settings from a config mapping."""
    return spec.settings(mapping)


def run_attack(
    name: str,
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: Mapping[str, Any] | Any | None = None,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    resources: Mapping[str, Any] | None = None,
) -> AttackResult:
    """Run the attack registered as ``name`` with settings from a config
    mapping (or a settings object of its type); ``resources`` supplies what
    the attack ``needs`` (e.g. ``{"svae": svae}`` for ``type-i``)."""
    spec = get_attack(name)
    s = settings if isinstance(settings, spec.settings_type) else spec.settings(settings)
    return spec.run(clf, x, y, s, target=target, generator=generator, resources=resources)


def attack_resources(spec: AttackSpec, resources: Mapping[str, Any] | None) -> dict[str, Any]:
    """The resources ``spec`` needs, taken from ``resources`` (a one-line
    error naming what is missing)."""
    have = dict(resources or {})
    missing = [r for r in spec.needs if have.get(r) is None]
    if missing:
        raise LabelflipError(
            f"attack '{spec.name}' needs {', '.join(missing)} (in a config: the "
            f"[{missing[0]}] table)"
        )
    return {r: have[r] for r in spec.needs}
