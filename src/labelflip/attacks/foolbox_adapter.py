"""Any Foolbox 3 attack, by name, behind labelflip's attack interface.

:func:`foolbox_attack` runs ``foolbox.attacks.<attack>`` on a
:class:`~labelflip.models.Classifier` and returns the same
:class:`~labelflip.attacks.AttackResult` as the native attacks, built by
:func:`~labelflip.attacks._result.finalize` (so ``success`` is always the
model's verdict on the returned, bounds-clipped ``x_adv``, never Foolbox's).
Foolbox is an optional extra (``pip install 'labelflip[foolbox]'``),
imported only when an adapter function runs.

How the two kinds of Foolbox attacks are run:

- fixed-epsilon attacks (``LinfPGD``, ``FGSM``, ``L2PGD``, ...) need
  ``epsilon``; their output is clipped to the ε-ball of the attack's norm
  (Foolbox's ``clip_perturbation``, as in Foolbox's own ``__call__``);
- minimization attacks (``L2DeepFoolAttack``, ``L2CarliniWagnerAttack``, the
  Brendel & Bethge attacks, ...) take no ``epsilon``; their raw output
  (``epsilons=None`` in Foolbox's terms) is used.

Foolbox's ``run`` is called directly (not ``__call__``), so no model
evaluation is spent on Foolbox's own success check. Failures are reported
as failures, never retried: where Foolbox's C&W or EAD found nothing it
returns an all-zero image, which is replaced by the clean input; the
Brendel & Bethge and Pointwise attacks need an adversarial starting point
(Foolbox's default init attack, or the ``init_attack`` option), and samples
for which the init attack finds none (or that the model already gets wrong)
are returned unchanged instead of making Foolbox's assertion fail the whole
batch. The Brendel & Bethge attacks need ``numba`` installed.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import numbers
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from labelflip._settings import Settings, setting
from labelflip.attacks._common import (
    check_eps,
    generator_or_default,
    new_counts,
    prepare_inputs,
)
from labelflip.attacks._registry import register_attack
from labelflip.attacks._result import AttackResult, finalize_counts
from labelflip.errors import LabelflipError, unknown_name
from labelflip.models.classifier import Classifier

INSTALL_HINT = "the Foolbox adapter needs Foolbox 3: pip install 'labelflip[foolbox]'"
DEFAULT_ATTACK = "L2DeepFoolAttack"

# Foolbox attacks whose output is an all-zero image where nothing was found.
_ZERO_SENTINEL = ("L2CarliniWagnerAttack", "EADAttack")
# Foolbox attacks that assert an adversarial starting point for every sample.
_NEED_START = ("BrendelBethgeAttack", "PointwiseAttack")
# Foolbox attacks that accept a TargetedMisclassification but ignore the
# target when choosing their steps (other untargeted attacks raise).
_UNTARGETED = ("DeepFoolAttack",)


def _is_a(fb_attack: Any, names: tuple[str, ...]) -> bool:
    return any(c.__name__ in names for c in type(fb_attack).__mro__)


# --------------------------------------------------------------------- Foolbox


def import_foolbox() -> Any:
    """The ``foolbox`` module (version 3), or a one-line install hint."""
    try:
        import foolbox
    except ImportError:
        raise LabelflipError(INSTALL_HINT) from None
    version = str(getattr(foolbox, "__version__", ""))
    if not version.startswith("3."):
        raise LabelflipError(f"{INSTALL_HINT} (found Foolbox {version or 'of unknown version'})")
    return foolbox


def foolbox_attack_names() -> list[str]:
    """Names in ``foolbox.attacks`` of concrete attack classes (aliases such as
    ``FGSM`` and ``LinfPGD`` included)."""
    fb = import_foolbox()
    return sorted(
        name
        for name, obj in vars(fb.attacks).items()
        if inspect.isclass(obj)
        and issubclass(obj, fb.attacks.Attack)
        and not inspect.isabstract(obj)
    )


def attack_class(name: str) -> type:
    """The Foolbox attack class called ``name`` (one-line error with a suggestion otherwise)."""
    fb = import_foolbox()
    names = foolbox_attack_names()
    if not isinstance(name, str) or name not in names:
        raise unknown_name("Foolbox attack", name, names, ignore_case=True)
    return getattr(fb.attacks, name)


def attack_kind(cls: type) -> str:
    """``"fixed"`` (fixed-epsilon), ``"minimization"`` or ``"other"`` (e.g. SpatialAttack)."""
    base = import_foolbox().attacks.base
    if issubclass(cls, base.FixedEpsilonAttack):
        return "fixed"
    if issubclass(cls, base.MinimizationAttack):
        return "minimization"
    return "other"


def _option_names(cls: type) -> tuple[list[str], bool]:
    """(constructor keyword names, whether it takes ``**kwargs``)."""
    params = inspect.signature(cls).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [p.name for p in params if p.kind in kinds]
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the annotated type ``hint`` (numbers,
    strings, booleans, ``None``, ``Literal``, unions and classes; anything
    else is taken on trust)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arm) for arm in typing.get_args(hint))
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and origin is None:
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arm) for arm in typing.get_args(hint))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint))


def check_options(name: str, cls: type, options: Mapping[str, Any]) -> None:
    """Every key of ``options`` must be a constructor keyword of ``cls``, and
    its value of the type the constructor annotates (a wrong type fails
    here, when the config is loaded, not when the attack runs)."""
    known, any_key = _option_names(cls)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - annotations we cannot resolve: types unchecked
        hints = {}
    for key, value in options.items():
        if not isinstance(key, str):
            raise LabelflipError(f"Foolbox {name}: option names must be strings, got {key!r}")
        if key not in known and not any_key:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            listed = ", ".join(known) if known else "none"
            raise LabelflipError(
                f"unknown option '{key}' for Foolbox {name}{hint} (known: {listed})"
            )
        if key in hints and not _fits(value, hints[key]):
            wanted = _type_name(hints[key])
            raise LabelflipError(f"Foolbox {name}: option '{key}' must be {wanted}, got {value!r}")


def _construct(name: str, cls: type, options: Mapping[str, Any]) -> Any:
    check_options(name, cls, options)
    try:
        return cls(**options)
    except ImportError as exc:  # e.g. numba for the Brendel & Bethge attacks
        missing = exc.name or str(exc)
        raise LabelflipError(f"Foolbox {name} needs {missing}: pip install {missing}") from None
    except (TypeError, ValueError) as exc:
        raise LabelflipError(f"Foolbox {name}: invalid options {dict(options)!r}: {exc}") from None


def _distance_norm(fb_attack: Any) -> str | None:
    """``"linf"``/``"l2"`` for a fixed-epsilon attack in those norms, else None."""
    p = getattr(getattr(fb_attack, "distance", None), "p", None)
    if p == float("inf"):
        return "linf"
    if p == 2:
        return "l2"
    return None


# -------------------------------------------------------------------- settings


@dataclass(frozen=True)
class FoolboxSettings(Settings):
    """Settings of :func:`foolbox_attack`: the name of a class in
    ``foolbox.attacks``, the budget ``epsilon`` (required for fixed-epsilon
    attacks, not allowed for minimization attacks) and ``options``, the
    keyword arguments of the attack's constructor (e.g. ``{"steps": 100}``)."""

    owner: ClassVar[str] = "foolbox"

    attack: str = setting(DEFAULT_ATTACK, doc="a class in foolbox.attacks")
    epsilon: float | None = setting(None, ge=0.0, doc="budget of a fixed-epsilon attack")
    options: dict[str, Any] | None = setting(None, doc="the attack's constructor arguments")

    def check(self) -> None:
        """Resolve the attack and its options (imports Foolbox)."""
        cls = attack_class(self.attack)
        kind = attack_kind(cls)
        if kind == "fixed" and self.epsilon is None:
            raise LabelflipError(
                f"Foolbox {self.attack} is a fixed-epsilon attack: set epsilon "
                "(the perturbation budget, in input units)"
            )
        if kind != "fixed" and self.epsilon is not None:
            raise LabelflipError(
                f"Foolbox {self.attack} minimises the perturbation and takes no epsilon "
                "(epsilon is for fixed-epsilon attacks such as LinfPGD or FGSM)"
            )
        check_options(self.attack, cls, self.options or {})


# --------------------------------------------------------------- model wrapper


class _CountingModel(nn.Module):
    """The classifier, counting per sample the model calls made on it.

    ``rows`` are the samples of the attacked batch currently handed to
    Foolbox (``None``: all of them); every call counts one forward pass for
    each of them, and one backward pass too when it is made with gradients
    enabled on an input that requires them.
    """

    def __init__(self, clf: Classifier, forwards: torch.Tensor, backwards: torch.Tensor) -> None:
        super().__init__()
        self.clf = clf
        self.forwards = forwards
        self.backwards = backwards
        self.rows: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        backward = torch.is_grad_enabled() and x.requires_grad
        if self.rows is None:
            self.forwards += 1
            if backward:
                self.backwards += 1
        else:
            self.forwards[self.rows] += 1
            if backward:
                self.backwards[self.rows] += 1
        return self.clf(x)


def _library_seed(generator: torch.Generator | None) -> int:
    """The seed of a library's global RNGs for one attack call: one draw of
    the attack's generator (:func:`generator_or_default`)."""
    gen = generator_or_default(generator)
    return int(torch.randint(2**62, (1,), generator=gen, device=gen.device))


@contextlib.contextmanager
def _seeded_global_rngs(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG (CPU, and ``device`` if it is a GPU) and
    numpy's global RNG, restoring the caller's states afterwards."""
    devices = [device] if device.type == "cuda" else []
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.random.default_generator.manual_seed(seed)
            if devices:
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(seed)
            np.random.seed(seed % 2**32)
            yield
    finally:
        np.random.set_state(np_state)


# ---------------------------------------------------------------------- attack


@register_attack(
    "foolbox",
    FoolboxSettings,
    "any Foolbox 3 attack by name (optional extra: pip install 'labelflip[foolbox]')",
)
def foolbox_attack(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    s: FoolboxSettings,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Run the Foolbox 3 attack ``foolbox.attacks.<attack>(**options)``.

    The classifier is wrapped as ``foolbox.PyTorchModel(clf, bounds=clf.bounds)``
    (it normalises inside, so no preprocessing). The criterion is
    ``Misclassification(y)``, or ``TargetedMisclassification(target)``; an
    attack that does not support targeting raises a one-line error. See the
    module docstring for fixed-epsilon vs minimization attacks and how
    failures are reported.

    Randomness: Foolbox draws from the global torch (and, in a few attacks,
    numpy) RNGs. The attack runs with those seeded from one draw of
    ``generator`` (a fresh generator seeded with 0 when ``None``) and the
    caller's global RNG states are restored afterwards, so equal generators
    give identical results and the global RNGs are left untouched.

    Counts (approximate; Foolbox does not report them): ``forwards`` is the
    number of model calls made while the sample was part of the batch handed
    to Foolbox (Foolbox attacks evaluate the whole batch in every call), and
    ``backwards`` the number of those calls made with gradients enabled on an
    input requiring them (each such call is assumed to be followed by one
    backward pass). ``iterations`` is always 0: Foolbox does not expose it.
    """
    x0, y, target = prepare_inputs(clf, x, y, target, generator)
    fb = import_foolbox()
    cls = attack_class(s.attack)
    kind = attack_kind(cls)
    fb_attack = _construct(s.attack, cls, s.options or {})
    if target is not None and _is_a(fb_attack, _UNTARGETED):
        raise LabelflipError(f"Foolbox {s.attack} does not support a target (it is untargeted)")
    eps = None if s.epsilon is None else float(s.epsilon)
    norm = _distance_norm(fb_attack)
    if eps is not None and norm is not None:
        check_eps(f"Foolbox {s.attack}", eps, norm, clf, x0)

    n = len(x0)
    iterations, forwards, backwards = new_counts(n, x0.device)
    x_adv = x0
    if n:
        seed = _library_seed(generator)
        counter = _CountingModel(clf, forwards, backwards).eval()
        fmodel = fb.PyTorchModel(counter, bounds=clf.bounds, device=x0.device)
        # Foolbox asserts that its inputs lie in the bounds (ours allow 1e-6 slack)
        xs = clf.clip(x0).clone()
        labels = (target if target is not None else y).clone()
        try:
            with _seeded_global_rngs(seed, x0.device):
                x_adv = _run(
                    fb, fb_attack, kind, fmodel, counter, xs, labels, target is not None, eps
                )
        except (TypeError, ValueError, NotImplementedError) as exc:
            if target is not None and "criterion" in str(exc):
                raise LabelflipError(
                    f"Foolbox {s.attack} does not support a target ({exc})"
                ) from exc
            raise LabelflipError(f"Foolbox {s.attack} failed: {type(exc).__name__}: {exc}") from exc
    return finalize_counts(clf, x0, y, x_adv, target, (iterations, forwards, backwards))


def _criterion(fb: Any, labels: torch.Tensor, targeted: bool) -> Any:
    if targeted:
        return fb.criteria.TargetedMisclassification(labels)
    return fb.criteria.Misclassification(labels)


def _run(
    fb: Any,
    fb_attack: Any,
    kind: str,
    fmodel: Any,
    counter: _CountingModel,
    xs: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    eps: float | None,
) -> torch.Tensor:
    """The attack's output for the (non-empty) batch ``xs``."""
    criterion = _criterion(fb, labels, targeted)
    if kind == "fixed":
        xp = fb_attack.run(fmodel, xs, criterion, epsilon=eps)
        return fb_attack.distance.clip_perturbation(xs, xp, eps).detach()
    if kind == "other":
        return fb_attack.run(fmodel, xs, criterion).detach()
    if _is_a(fb_attack, _NEED_START):
        return _run_from_starting_points(fb, fb_attack, fmodel, counter, xs, labels, targeted)
    xp = fb_attack.run(fmodel, xs, criterion, early_stop=None).detach()
    if type(fb_attack).__name__ in _ZERO_SENTINEL:
        # "nothing found": an all-zero image; return the clean input instead
        nothing = (xp.flatten(1) == 0).all(1) & (xs.flatten(1) != 0).any(1)
        xp = torch.where(nothing.view(-1, *[1] * (xs.ndim - 1)), xs, xp)
    return xp


def _run_from_starting_points(
    fb: Any,
    fb_attack: Any,
    fmodel: Any,
    counter: _CountingModel,
    xs: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
) -> torch.Tensor:
    """Brendel & Bethge / Pointwise: draw starting points with the init
    attack (Foolbox's default when none is given) and run the attack only on
    samples that have an adversarial starting point and are not adversarial
    already; the others are returned unchanged (failures, or samples the model
    already gets wrong)."""
    init = fb_attack.init_attack or fb.attacks.LinearSearchBlendedUniformNoiseAttack()
    criterion = _criterion(fb, labels, targeted)
    starts = init.run(fmodel, xs, criterion).detach()
    with torch.no_grad():
        pred_start = counter(starts).argmax(1)
        pred_clean = counter(xs).argmax(1)
    if targeted:
        ok, already = pred_start == labels, pred_clean == labels
    else:
        ok, already = pred_start != labels, pred_clean != labels
    rows = torch.nonzero(ok & ~already).squeeze(1)
    out = xs.clone()
    if len(rows):
        counter.rows = rows
        try:
            sub = fb_attack.run(
                fmodel,
                xs[rows],
                _criterion(fb, labels[rows], targeted),
                starting_points=starts[rows],
                early_stop=None,
            )
        finally:
            counter.rows = None
        out[rows] = sub.detach()
    return out
