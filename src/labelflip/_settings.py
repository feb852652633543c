"""One settings engine beneath every registry (attacks, target strategies, run
config tables).

A settings type is a frozen dataclass deriving from :class:`Settings` whose
fields are declared once, with their constraints as data in the field's
metadata (as scikit-learn declares parameter constraints)::

    @dataclass(frozen=True)
    class PGDSettings(Settings):
        eps: float | None = setting(None, ge=0.0, doc="budget")
        norm: str = setting("linf", choices=("linf", "l2"))
        steps: int | None = setting(None, gt=0)

Everything else derives from that declaration:

- construction validates (``__post_init__``): the type of every value (ints
  widen to floats; ``None`` only where the annotation allows it), finiteness,
  the declared range and choices, then the class's own cross-field
  :meth:`Settings.check`; a settings object built in Python is validated
  exactly as one parsed from TOML;
- :func:`from_mapping` builds one from a config mapping, with a did-you-mean
  for an unknown key;
- :func:`describe` lists the settings with types, defaults and constraints
  (``labelflip attacks``);
- :func:`keyword_signature` gives an attack function's keyword parameters,
  :func:`keyword_function` the public keyword function itself.

Messages are one line, ``<owner>: <field> must be ..., got <value>``, where
the owner is the class's :attr:`Settings.owner` (e.g. the attack's name).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from labelflip.errors import LabelflipError

_META = "labelflip"


@dataclass(frozen=True)
class Rule:
    """The declared constraints of one setting."""

    doc: str = ""
    choices: tuple[Any, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def text(self) -> str:
        """The constraint in words (``> 0``, ``one of l2, linf``), or ``""``."""
        parts = []
        if self.choices is not None:
            parts.append("one of " + ", ".join(map(str, self.choices)))
        for op, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt)):
            if bound is not None:
                parts.append(f"{op} {bound:g}")
        return ", ".join(parts)


def setting(
    default: Any = dataclasses.MISSING,
    *,
    doc: str = "",
    choices: tuple[Any, ...] | list[Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with declared constraints (see the module docstring)."""
    rule = Rule(doc, tuple(choices) if choices is not None else None, ge, gt, le, lt)
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={_META: rule}
    )


def rule_of(f: dataclasses.Field) -> Rule:
    return f.metadata.get(_META, Rule())


def _kinds(tp: Any) -> tuple[Any, bool]:
    """(base type, None allowed) of a field annotation."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(tp)
        base = [a for a in args if a is not type(None)]
        return (base[0] if len(base) == 1 else tp), len(base) != len(args)
    return tp, False


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def type_name(tp: Any) -> str:
    base, optional = _kinds(tp)
    origin = typing.get_origin(base)
    if base in (bool, int, float, str):
        name = base.__name__
    elif origin in (tuple, list):
        name = f"list of {type_name(typing.get_args(base)[0])}"
    elif base is dict or origin is dict:
        name = "table"
    else:
        name = getattr(base, "__name__", str(base))
    return f"{name} or none" if optional else name


def coerce(owner: str, key: str, value: Any, tp: Any, *, setting_word: bool = True) -> Any:
    """``value`` checked against the annotation ``tp`` (bool, int, float, str,
    a tuple of one of those, a mapping; optionally None); ints widen to
    floats, lists to tuples. One-line error otherwise."""
    base, optional = _kinds(tp)
    what = f"setting '{key}'" if setting_word else f"'{key}'"
    if value is None:
        if optional:
            return None
        raise LabelflipError(f"{owner}: {what} must not be empty")
    origin = typing.get_origin(base)
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif base is str:
        ok = isinstance(value, str)
    elif origin is tuple or origin is list:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(base)[:1]
            return tuple(coerce(owner, key, v, item, setting_word=setting_word) for v in value)
        ok = False
    elif base is dict or origin is dict:
        ok = isinstance(value, Mapping)
        if ok:
            value = dict(value)
    else:  # a type the engine does not check (e.g. a tensor in Python use)
        return value
    if not ok:
        word = _TYPE_WORDS.get(base, "a list" if origin in (tuple, list) else "a mapping")
        raise LabelflipError(f"{owner}: {what} must be {word}, got {value!r}")
    return value


def check_rule(owner: str, name: str, value: Any, rule: Rule) -> None:
    """``value`` within the declared ``rule`` (one-line error otherwise)."""
    if value is None:
        return
    if rule.choices is not None:
        if value not in rule.choices:
            choices = [str(c) for c in rule.choices]
            close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise LabelflipError(
                f"{owner}: {name} must be one of {', '.join(choices)}, got {value!r}{hint}"
            )
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise LabelflipError(f"{owner}: {name} must be finite, got {value!r}")
        for op, bound, ok in (
            (">", rule.gt, lambda v, b: v > b),
            (">=", rule.ge, lambda v, b: v >= b),
            ("<", rule.lt, lambda v, b: v < b),
            ("<=", rule.le, lambda v, b: v <= b),
        ):
            if bound is not None and not ok(value, bound):
                raise LabelflipError(f"{owner}: {name} must be {op} {bound:g}, got {value!r}")


@dataclass(frozen=True)
class Settings:
    """Base of every declared settings dataclass: validated on construction.

    ``owner`` names the thing the settings belong to in messages (an
    attack's or strategy's name); subclasses override :meth:`check` for
    constraints across fields and :meth:`resolve` to fill defaults that
    depend on other fields (called before validation)."""

    owner: ClassVar[str] = "settings"

    def __post_init__(self) -> None:
        self.resolve()
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = coerce(self.owner, f.name, getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)
            check_rule(self.owner, f.name, value, rule_of(f))
        self.check()

    def resolve(self) -> None:
        """Fill defaults that depend on other fields (before validation)."""

    def check(self) -> None:
        """Constraints across fields (after every field is valid)."""

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def unknown_key(
    key: str, known: list[str], *, owner: str, name: str, word: str = "setting"
) -> LabelflipError:
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return LabelflipError(
        f"unknown {word} '{key}' for {owner} '{name}'{hint} (known: {', '.join(sorted(known))})"
    )


def from_mapping(
    cls: type,
    mapping: Mapping[str, Any] | None,
    *,
    owner: str,
    name: str,
    extra_keys: tuple[str, ...] = (),
) -> Any:
    """A validated ``cls`` from a config mapping, for the ``owner`` (e.g.
    "attack", "target strategy") called ``name``: an unknown key raises a
    one-line error with a did-you-mean (``extra_keys`` are keys the caller
    consumed and lists as known); missing keys take the defaults."""
    names = field_names(cls)
    known = [*extra_keys, *names]
    for key in dict(mapping or {}):
        if key not in names:
            raise unknown_key(key, known, owner=owner, name=name)
    try:
        return cls(**dict(mapping or {}))
    except TypeError as e:  # pragma: no cover - every field has a default
        raise LabelflipError(f"{owner} '{name}': {e}") from None


def default_of(f: dataclasses.Field, missing: Any = dataclasses.MISSING) -> Any:
    """The field's default (a fresh one from its factory), else ``missing``."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return missing


def describe(cls: type) -> list[dict[str, Any]]:
    """Each setting of ``cls``: name, type, default, constraint, doc."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = default_of(f)
        rule = rule_of(f)
        out.append(
            {
                "name": f.name,
                "type": type_name(hints[f.name]),
                "default": default,
                "constraint": rule.text(),
                "doc": rule.doc,
            }
        )
    return out


def keyword_signature(
    cls: type, *, leading: list[inspect.Parameter], trailing: list[inspect.Parameter]
) -> inspect.Signature:
    """The signature ``(leading..., *, <each setting>=<default>, trailing...)``
    of a function whose keyword settings are ``cls``'s fields."""
    hints = typing.get_type_hints(cls)
    params = list(leading)
    for f in dataclasses.fields(cls):
        default = default_of(f, inspect.Parameter.empty)
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hints[f.name]
            )
        )
    return inspect.Signature([*params, *trailing])


def keyword_function(
    impl: Callable[..., Any],
    cls: type,
    call: Callable[..., Any],
    *,
    leading: list[inspect.Parameter],
    trailing: list[inspect.Parameter],
) -> Callable[..., Any]:
    """The public function of a registered ``impl`` (its name and docstring),
    with the signature :func:`keyword_signature` gives: on every call the
    setting keywords are built into one validated ``cls`` and
    ``call(settings, **the other arguments given)`` runs. A keyword that is
    neither a setting nor a parameter is a ``TypeError`` naming ``impl``."""
    signature = keyword_signature(cls, leading=leading, trailing=trailing)
    names = frozenset(field_names(cls))

    def public(*args: Any, **kwargs: Any) -> Any:
        for key in kwargs:
            if key not in signature.parameters:
                raise TypeError(f"{impl.__name__}() got an unexpected keyword argument {key!r}")
        given = signature.bind_partial(*args, **kwargs).arguments
        settings = cls(**{k: v for k, v in given.items() if k in names})
        return call(settings, **{k: v for k, v in given.items() if k not in names})

    functools.update_wrapper(public, impl)
    del public.__wrapped__  # inspect.signature must show the keyword settings, not impl's
    public.__signature__ = signature  # type: ignore[attr-defined]
    public.__annotations__ = {}
    return public
