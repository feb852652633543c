"""The attack registry: config names mapped to the attack function and its
settings type, plus typed construction of settings from a config mapping.

``foolbox`` runs any Foolbox 3 attack (optional extra); ``foolbox:<Attack>``
is shorthand for it with ``attack`` preset (e.g. ``foolbox:LinfPGD``)."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from labelflip.attacks._result import AttackResult
from labelflip.attacks.carlini_wagner import CarliniWagnerL2Settings, carlini_wagner_l2
from labelflip.attacks.deepfool import DeepFoolSettings, deepfool
from labelflip.attacks.fgsm import FGSMSettings, fgsm
from labelflip.attacks.foolbox_adapter import FoolboxSettings, attack_class, foolbox_attack
from labelflip.attacks.jma import JMASettings, jma
from labelflip.attacks.labelfool import LabelFoolSettings, labelfool
from labelflip.attacks.ml_cw import MLCarliniWagnerSettings, ml_carlini_wagner
from labelflip.attacks.pgd import PGDSettings, pgd
from labelflip.attacks.type_i import (
    LatentTypeISettings,
    TypeISettings,
    latent_type_i_attack,
    type_i_attack,
)
from labelflip.errors import LabelflipError, unknown_name
from labelflip.models.classifier import Classifier


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack: its config ``name``, the function, the frozen
    settings dataclass whose fields are the function's keyword settings, and
    a one-line description.

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
    fn: Callable[..., AttackResult]
    settings_type: type
    description: str
    accepts_target: bool = True
    default_target: str | None = None
    encodings: tuple[str, ...] = ("onehot", "ecoc")
    kind: str = "type-ii"
    needs: tuple[str, ...] = ()

    def default_settings(self) -> Any:
        return self.settings_type()


ATTACKS: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        AttackSpec(
            "fgsm",
            fgsm,
            FGSMSettings,
            "Fast Gradient Sign Method (linf) / Fast Gradient Method (l2), Goodfellow et al. 2015",
        ),
        AttackSpec(
            "pgd",
            pgd,
            PGDSettings,
            "Projected Gradient Descent (linf, l2) with random start, Madry et al. 2018",
        ),
        AttackSpec(
            "deepfool",
            deepfool,
            DeepFoolSettings,
            "DeepFool (l2, linf), untargeted minimal perturbation, Moosavi-Dezfooli et al. 2016",
            accepts_target=False,
        ),
        AttackSpec(
            "cw-l2",
            carlini_wagner_l2,
            CarliniWagnerL2Settings,
            "Carlini & Wagner L2 attack with binary search over c, Carlini & Wagner 2017",
        ),
        AttackSpec(
            "ml-cw",
            ml_carlini_wagner,
            MLCarliniWagnerSettings,
            "ML-C&W: C&W L2 with a hinge per output on the target code (multi-label, ECOC, "
            "one-hot), Song et al. 2018 (JMA paper IV-B)",
            default_target="random",
            encodings=("onehot", "ecoc", "multilabel"),
        ),
        AttackSpec(
            "labelfool",
            labelfool,
            LabelFoolSettings,
            "LabelFool sample generation (targeted DeepFool-style, Algorithm 1), Liu et al. 2019",
            default_target="labelfool",
        ),
        AttackSpec(
            "jma",
            jma,
            JMASettings,
            "JMA, Jacobian-induced Mahalanobis distance attack (one-hot, ECOC, multi-label; "
            "Algorithm 1), Guo et al. 2024",
            default_target="random",
            encodings=("onehot", "ecoc", "multilabel"),
        ),
        AttackSpec(
            "type-i",
            type_i_attack,
            TypeISettings,
            "Type I attack: the image changes class, the model keeps its label (SVAE latent "
            "search, Algorithm 2), Tang et al. 2019",
            encodings=("onehot",),
            kind="type-i",
            needs=("svae",),
        ),
        AttackSpec(
            "latent-type-i",
            latent_type_i_attack,
            LatentTypeISettings,
            "Type I attack on a generator's latent space (eq. 13; the SVAE decoder, with f2 "
            "as the auxiliary classifier when targeted), Tang et al. 2019",
            encodings=("onehot",),
            kind="type-i",
            needs=("svae",),
        ),
        AttackSpec(
            "foolbox",
            foolbox_attack,
            FoolboxSettings,
            "any Foolbox 3 attack by name (optional extra: pip install 'labelflip[foolbox]')",
        ),
    )
}

FOOLBOX_PREFIX = "foolbox:"


def get_attack(name: str) -> AttackSpec:
    """The attack registered as ``name`` (a one-line error with a suggestion otherwise).

    ``foolbox:<Attack>`` gives the ``foolbox`` attack with ``attack`` preset to
    ``<Attack>`` (checked against ``foolbox.attacks``).
    """
    if isinstance(name, str) and name.startswith(FOOLBOX_PREFIX):
        return _foolbox_shorthand(name[len(FOOLBOX_PREFIX) :])
    spec = ATTACKS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise unknown_name("attack", str(name), ATTACKS)
    return spec


@functools.cache
def _foolbox_shorthand(attack: str) -> AttackSpec:
    attack_class(attack)  # an unknown name fails here, with a suggestion
    settings_type = dataclasses.make_dataclass(
        "FoolboxSettings",
        [("attack", str, dataclasses.field(default=attack))],
        bases=(FoolboxSettings,),
        frozen=True,
        namespace={"__module__": FoolboxSettings.__module__},
    )
    return AttackSpec(FOOLBOX_PREFIX + attack, foolbox_attack, settings_type, f"Foolbox 3 {attack}")


def _field_kinds(tp: Any) -> tuple[type, bool]:
    """(base type, None allowed) of a settings field annotation."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(tp)
        base = [a for a in args if a is not type(None)]
        return base[0], len(base) != len(args)
    return tp, False


def coerce_setting(attack: str, key: str, value: Any, tp: Any) -> Any:
    """``value`` checked against the settings field type ``tp`` (bool, int,
    float, str, mapping, optionally None), ints widened to float; a one-line
    error naming ``attack`` and ``key`` otherwise. Shared with the target
    strategies' settings."""
    base, optional = _field_kinds(tp)
    if value is None:
        if optional:
            return None
        raise LabelflipError(f"{attack}: setting '{key}' must not be empty")
    if base is bool:
        if isinstance(value, bool):
            return value
        raise LabelflipError(f"{attack}: setting '{key}' must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise LabelflipError(f"{attack}: setting '{key}' must be an integer, got {value!r}")
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise LabelflipError(f"{attack}: setting '{key}' must be a number, got {value!r}")
    if base is str:
        if isinstance(value, str):
            return value
        raise LabelflipError(f"{attack}: setting '{key}' must be a string, got {value!r}")
    if base is dict or typing.get_origin(base) is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise LabelflipError(f"{attack}: setting '{key}' must be a mapping, got {value!r}")
    return value  # pragma: no cover - every settings field has one of the types above


def build_settings(
    settings_type: type,
    mapping: Mapping[str, Any] | None,
    *,
    owner: str,
    name: str,
    extra_keys: tuple[str, ...] = (),
) -> Any:
    """A validated frozen ``settings_type`` from a config mapping, for the
    ``owner`` (e.g. "attack", "target strategy") called ``name``.

    Unknown keys raise a one-line error with a "did you mean" (``extra_keys``
    are keys the caller consumed and lists as known); values of the wrong
    type and values out of range raise one-line errors too. Missing keys take
    the defaults.
    """
    hints = typing.get_type_hints(settings_type)
    names = [f.name for f in dataclasses.fields(settings_type)]
    known = [*extra_keys, *names]
    kwargs: dict[str, Any] = {}
    for key, value in dict(mapping or {}).items():
        if key not in names:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise LabelflipError(
                f"unknown setting '{key}' for {owner} '{name}'{hint} "
                f"(known: {', '.join(sorted(known))})"
            )
        kwargs[key] = coerce_setting(name, key, value, hints[key])
    settings = settings_type(**kwargs)
    settings.validate()
    return settings


def settings_from_mapping(spec: AttackSpec, mapping: Mapping[str, Any] | None) -> Any:
    """Build and validate ``spec``'s settings from a config mapping
    (:func:`build_settings`)."""
    return build_settings(spec.settings_type, mapping, owner="attack", name=spec.name)


def run_attack(
    name: str,
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: Mapping[str, Any] | None = None,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    resources: Mapping[str, Any] | None = None,
) -> AttackResult:
    """Run the attack registered as ``name`` with settings from a config
    mapping; ``resources`` supplies what the attack ``needs`` (e.g.
    ``{"svae": svae}`` for ``type-i``)."""
    spec = get_attack(name)
    s = settings_from_mapping(spec, settings)
    return spec.fn(
        clf,
        x,
        y,
        target=target,
        generator=generator,
        **attack_resources(spec, resources),
        **dataclasses.asdict(s),
    )


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
