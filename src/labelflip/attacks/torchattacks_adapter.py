"""Any torchattacks attack, by name, behind labelflip's attack interface.

:func:`torchattacks_attack` runs ``torchattacks.<attack>`` on a
:class:`~labelflip.models.Classifier` and returns the same
:class:`~labelflip.attacks.AttackResult` as the native attacks, built by
:func:`~labelflip.attacks._result.finalize` (``success`` is the model's
verdict on the returned, bounds-clipped ``x_adv``). This is how AutoAttack
(Croce & Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020) and its components
are reached: ``APGD`` (APGD-CE; ``options = {loss = "dlr"}`` for APGD-DLR),
``APGDT`` (APGD-T), ``FAB`` (Croce & Hein, ICML 2020), ``Square``
(Andriushchenko et al., ECCV 2020) and ``AutoAttack`` itself.

torchattacks is an optional extra. It declares torchvision as a dependency
but imports without it: install it with ``pip install --no-deps
torchattacks`` (or ``pip install 'labelflip[torchattacks]'`` where
torchvision installs). It is imported only when an adapter function runs.

Contract with torchattacks:

- inputs are ``(N, C, H, W)`` images in ``[0, 1]`` (torchattacks clamps to
  that box); the Classifier normalises inside, which is what torchattacks
  expects of a model, so no ``set_normalization_used``. A model with other
  bounds is refused;
- the constructor arguments are ``eps`` (the ``eps`` setting) and
  ``options``; ``seed`` and ``n_classes`` are set by labelflip (from the
  generator and the model) and may not be given;
- a target is passed with ``set_mode_targeted_by_function`` (the map returns
  the given targets), for attacks whose modes include ``"targeted"`` (FAB,
  Square, PGD, ...); APGD, APGDT and AutoAttack are untargeted. FAB's
  targeted restarts index per-sample targets by the rows of a sub-batch, so
  targeted FAB runs on the samples the model classifies correctly (the
  others are returned unchanged) with ``n_restarts = 1``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from labelflip._settings import Settings, setting
from labelflip.attacks._common import (
    check_eps,
    new_counts,
    prepare_inputs,
)
from labelflip.attacks._registry import register_attack
from labelflip.attacks._result import AttackResult, finalize_counts
from labelflip.attacks.foolbox_adapter import _library_seed, _seeded_global_rngs
from labelflip.errors import LabelflipError, unknown_name
from labelflip.models.classifier import Classifier

INSTALL_HINT = (
    "the torchattacks adapter needs torchattacks: pip install --no-deps torchattacks "
    "(it declares torchvision but does not need it)"
)
DEFAULT_ATTACK = "APGD"

# Constructor arguments labelflip sets itself, and why.
_RESERVED = {
    "model": "the model is the classifier being attacked",
    "seed": "randomness comes from the run's generator",
    "n_classes": "the number of classes is the model's",
    "eps": "use the eps setting",
}
# torchattacks norm names -> labelflip's, for the budget check.
_NORMS = {"Linf": "linf", "L2": "l2"}


# ---------------------------------------------------------------- torchattacks


def import_torchattacks() -> Any:
    """The ``torchattacks`` module, or a one-line install hint."""
    try:
        import torchattacks
    except ImportError:
        raise LabelflipError(INSTALL_HINT) from None
    return torchattacks


def torchattacks_attack_names() -> list[str]:
    """Names of the attack classes torchattacks exports (wrappers such as
    ``MultiAttack`` and ``LGV`` left out)."""
    ta = import_torchattacks()
    base = ta.attack.Attack
    wrappers = {"MultiAttack", "LGV"}
    return sorted(
        name
        for name in getattr(ta, "__all__", dir(ta))
        if inspect.isclass(getattr(ta, name, None))
        and issubclass(getattr(ta, name), base)
        and name not in wrappers
    )


def attack_class(name: str) -> type:
    """The torchattacks class called ``name`` (one-line error with a suggestion otherwise)."""
    ta = import_torchattacks()
    names = torchattacks_attack_names()
    if not isinstance(name, str) or name not in names:
        raise unknown_name("torchattacks attack", name, names, ignore_case=True)
    return getattr(ta, name)


def constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The constructor's keyword parameters (``model`` included)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p for p in inspect.signature(cls).parameters.values() if p.kind in kinds}


def check_options(name: str, cls: type, eps: float | None, options: Mapping[str, Any]) -> None:
    """Every key of ``options`` must be a constructor keyword of ``cls`` that
    labelflip does not set itself; ``eps`` only for attacks that take one."""
    params = constructor_parameters(cls)
    known = [p for p in params if p not in _RESERVED]
    for key in options:
        if not isinstance(key, str):
            raise LabelflipError(f"torchattacks {name}: option names must be strings, got {key!r}")
        if key in _RESERVED:
            raise LabelflipError(
                f"torchattacks {name}: option '{key}' is set by labelflip ({_RESERVED[key]})"
            )
        if key not in params:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            listed = ", ".join(known) if known else "none"
            raise LabelflipError(
                f"unknown option '{key}' for torchattacks {name}{hint} (known: {listed})"
            )
    if eps is not None and "eps" not in params:
        raise LabelflipError(f"torchattacks {name} takes no eps")


def library_options(name: str) -> list[tuple[str, Any]]:
    """``(option, default)`` of every constructor argument of torchattacks'
    ``name`` that ``options`` may set (for ``labelflip attacks``)."""
    params = constructor_parameters(attack_class(name))
    return [(p, v.default) for p, v in params.items() if p not in _RESERVED]


def attack_norm(cls: type, options: Mapping[str, Any]) -> str | None:
    """``"linf"``/``"l2"`` when the attack's ``norm`` (given or default) is
    one of those, else None."""
    params = constructor_parameters(cls)
    if "norm" not in params:
        return None
    return _NORMS.get(options.get("norm", params["norm"].default))


# -------------------------------------------------------------------- settings


@dataclass(frozen=True)
class TorchattacksSettings(Settings):
    """Settings of :func:`torchattacks_attack`: the name of a class in
    ``torchattacks``, the budget ``eps`` (the constructor's ``eps``; the
    attack's own default when none) and ``options``, the other keyword
    arguments of the constructor (e.g. ``{"norm": "L2", "steps": 100}``)."""

    attack: str = setting(DEFAULT_ATTACK, doc="a class in torchattacks (APGD, APGDT, FAB, ...)")
    eps: float | None = setting(None, ge=0.0, doc="the budget (the attack's default when none)")
    options: dict[str, Any] | None = setting(None, doc="other constructor arguments")

    def check(self) -> None:
        """Resolve the attack and its options (imports torchattacks)."""
        cls = attack_class(self.attack)
        check_options(self.attack, cls, self.eps, self.options or {})


# --------------------------------------------------------------- model wrapper


class _CountingModel(nn.Module):
    """The classifier, counting per attacked sample the forward and backward
    passes torchattacks makes.

    torchattacks calls the model on sub-batches (the samples not yet fooled)
    and does not say which samples they are: each row of a call is
    attributed to the attacked sample nearest to it. The nearest in L2 is
    certain when closer than half the distance from that sample to any
    other one (triangle inequality); rows that are not certain (a large
    perturbation, or duplicate samples) take the nearest in L∞. Totals are
    exact. A backward pass is counted once per forward whose output receives
    a gradient (however many output components are differentiated, as for
    the native attacks).
    """

    def __init__(
        self, clf: Classifier, x0: torch.Tensor, forwards: torch.Tensor, backwards: torch.Tensor
    ) -> None:
        super().__init__()
        self.clf = clf
        self.forwards = forwards
        self.backwards = backwards
        with torch.no_grad():
            self.x0 = x0.detach().flatten(1).float()
            gaps = torch.cdist(self.x0, self.x0)
            gaps.fill_diagonal_(float("inf"))
            self.certain = gaps.amin(1) / 2

    @torch.no_grad()
    def origins(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the attacked sample each row of ``x`` belongs to."""
        rows = x.detach().flatten(1).to(self.x0)
        best, idx = torch.cdist(rows, self.x0).min(1)
        unsure = best >= self.certain[idx]
        if unsure.any():
            far = torch.cdist(rows[unsure], self.x0, p=float("inf"))
            idx[unsure] = far.argmin(1)
        return idx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = self.origins(x)
        ones = torch.ones_like(idx)
        self.forwards.index_add_(0, idx, ones)
        out = self.clf(x)
        if out.requires_grad:
            counted = [False]

            def count_backward(grad: torch.Tensor) -> None:
                if not counted[0]:
                    counted[0] = True
                    self.backwards.index_add_(0, idx, ones)

            out.register_hook(count_backward)
        return out


# ---------------------------------------------------------------------- attack


@register_attack(
    "torchattacks",
    TorchattacksSettings,
    "any torchattacks attack by name: APGD, APGDT, FAB, Square, AutoAttack, ... "
    "(optional extra: pip install --no-deps torchattacks)",
)
def torchattacks_attack(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    s: TorchattacksSettings,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Run ``torchattacks.<attack>(model, eps=eps, **options)`` on ``clf``.

    Randomness: torchattacks draws from torch's global RNG, and most of its
    attacks reseed it with their ``seed`` argument. One draw of
    ``generator`` (a fresh generator seeded with 0 when ``None``) is passed
    as ``seed`` and seeds the global RNGs, inside ``torch.random.fork_rng``
    (and with numpy's state saved), so equal generators give identical
    results and the caller's global RNG states are untouched.

    Counts: ``forwards``/``backwards`` are counted by wrapping the model
    (see :class:`_CountingModel`); ``iterations`` is always 0 (torchattacks
    does not expose it).
    """
    x0, y, target = prepare_inputs(clf, x, y, target, generator)
    cls = attack_class(s.attack)
    options = dict(s.options or {})
    name = f"torchattacks {s.attack}"
    if x0.ndim != 4:
        raise LabelflipError(
            f"{name} needs image batches (N, C, H, W), got shape {tuple(x0.shape)}"
        )
    if tuple(map(float, clf.bounds)) != (0.0, 1.0):
        raise LabelflipError(
            f"{name} works on inputs in [0, 1]; this model's bounds are {tuple(clf.bounds)}"
        )
    norm = attack_norm(cls, options)
    if s.eps is not None and norm is not None:
        check_eps(name, float(s.eps), norm, clf, x0)
    params = constructor_parameters(cls)
    if "n_classes" in params:
        options["n_classes"] = clf.num_classes
    if s.eps is not None:
        options["eps"] = float(s.eps)

    n = len(x0)
    iterations, forwards, backwards = new_counts(n, x0.device)
    x_adv = x0
    if n:
        seed = _library_seed(generator)
        if "seed" in params:
            options["seed"] = seed
        counter = _CountingModel(clf, x0, forwards, backwards).eval()
        rows = torch.arange(n, device=x0.device)
        if target is not None and s.attack == "FAB":
            rows = _fab_targeted_rows(counter, x0, y, options)
        x_adv = x0.clone()
        try:
            with _seeded_global_rngs(seed, x0.device):
                atk = cls(counter, **options)
                atk.set_device(x0.device)
                if target is not None:
                    _set_target(name, atk, target[rows])
                if len(rows):
                    out = atk(x0[rows], y[rows])
                    x_adv[rows] = out.detach().to(x0)
        except (AssertionError, TypeError, ValueError, NotImplementedError, IndexError) as exc:
            raise LabelflipError(f"{name} failed: {type(exc).__name__}: {exc}") from exc
    return finalize_counts(clf, x0, y, x_adv, target, (iterations, forwards, backwards))


def _set_target(name: str, atk: Any, target: torch.Tensor) -> None:
    """Put ``atk`` in targeted mode with the per-sample ``target``."""
    if "targeted" not in getattr(atk, "supported_mode", ()):
        raise LabelflipError(f"{name} does not support a target (it is untargeted)")

    def targets(inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if len(inputs) != len(target):
            raise ValueError("targets asked for a sub-batch; per-sample targets cannot be matched")
        return target

    atk.set_mode_targeted_by_function(targets, quiet=True)


def _fab_targeted_rows(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, options: Mapping[str, Any]
) -> torch.Tensor:
    """The rows targeted FAB may run on (see the module docstring); the
    model call that finds them is counted."""
    if options.get("n_restarts", 1) != 1:
        raise LabelflipError(
            "torchattacks FAB with a target supports n_restarts = 1 only (its targeted "
            "restarts mismatch per-sample targets)"
        )
    if options.get("multi_targeted", False):
        raise LabelflipError(
            "torchattacks FAB: multi_targeted searches the top classes itself; it takes no target"
        )
    with torch.no_grad():
        return torch.nonzero(model(x).argmax(1) == y).squeeze(1)
