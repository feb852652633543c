"""Target-label strategies for targeted attacks, and their registry.

A strategy chooses one target class per sample from the model's output:
``fn(logits (N, k), *, labels=None, distances=None, generator=None,
class_names=None, **settings) -> (N,) long`` on ``logits``' device. All
strategies are batched (no Python loop over samples) and deterministic given
their inputs (``random`` given its ``torch.Generator``).

Excluded targets, for every strategy except ``mapping`` (an explicit choice
of the user): the current prediction ``argmax(logits)`` (a target equal to it
makes no attack) and, when ``labels`` are given and ``k >= 3``, the true
label. With ``k == 2`` only the prediction is excluded, so that one class
always remains (for a misclassified sample that class is its true label).

Distance-based strategies (``nearest``, ``farthest``) measure from the
*source* class: the true label when ``labels`` are given, else the
prediction; ``distances[a, b]`` is read as the distance from class ``a`` to
class ``b`` (rows are sources). Ties go to the lowest class index.

The ``random``, ``easiest`` and ``hardest`` strategies follow the target
choices of Carlini & Wagner, "Towards Evaluating the Robustness of Neural
Networks" (IEEE S&P 2017), used in their evaluation: the "average case"
(target uniform among the incorrect labels), the "best case" (the least
difficult target) and the "worst case" (the most difficult target). C&W find
the best and worst cases by attacking every target; here the logit is the
cheap proxy for difficulty (highest logit among the allowed classes =
easiest, lowest = hardest). ``labelfool`` is LabelFool's label selection
(Liu, Jiang & Jiang, "LabelFool: A Trick In The Label Space", 2019, §III-A,
eqs. 1–6).
Output encodings: see :mod:`labelflip.targets`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from labelflip._settings import from_mapping, keyword_function
from labelflip.attacks.primitives import generator_or_default
from labelflip.errors import LabelflipError, unknown_name
from labelflip.models.encoding import OutputEncoding, bits_to_index, index_to_bits
from labelflip.targets._inputs import (
    _check_labels,
    _check_logits,
    _masked_argmax,
    _masked_argmin,
    check_distances,
)
from labelflip.targets.settings import (
    DistanceSettings,
    FlipBitsSettings,
    LabelFoolTargetSettings,
    MappingSettings,
    NoSettings,
    ShiftSettings,
)


@dataclass(frozen=True)
class Inputs:
    """What every strategy reads: the model's ``logits`` (N, k) (per-label
    logits for a multi-label model), the true ``labels`` if known, the
    ``distances`` matrix (k, k) a distance-based strategy needs, the
    ``generator`` of its random draws, the ``class_names`` (for ``mapping``)
    and the model's output ``encoding`` (``None`` = one-hot)."""

    logits: Any
    labels: Any = None
    distances: Any = None
    generator: torch.Generator | None = None
    class_names: Sequence[str] | None = None
    encoding: OutputEncoding | None = None


@dataclass(frozen=True)
class TargetStrategy:
    """A registered target strategy: its config ``name``, the implementation
    ``impl(inputs, settings)``, the settings type (declared once), whether it
    needs a class-distance matrix, a description, and the output encodings
    (:mod:`labelflip.models.encoding`) of the models it applies to (it refuses
    the others with a one-line error). ``fn`` is the public keyword function
    ``fn(logits, *, labels, distances, generator, class_names, encoding,
    **settings)`` derived from them."""

    name: str
    impl: Callable[[Inputs, Any], torch.Tensor]
    settings_type: type
    needs_distance: bool
    description: str
    encodings: tuple[str, ...] = ("onehot", "ecoc")
    fn: Callable[..., torch.Tensor] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fn", _keyword_function(self))

    def default_settings(self) -> Any:
        return self.settings_type()

    def choose(self, x: Inputs, settings: Any) -> torch.Tensor:
        """Targets for validated ``settings`` (checks the generator's type)."""
        g = x.generator
        if g is not None and not isinstance(g, torch.Generator):
            raise LabelflipError(f"generator must be a torch.Generator, got {type(g).__name__}")
        return self.impl(x, settings)


_INPUTS = ("labels", "distances", "generator", "class_names", "encoding")


def _keyword_function(spec: TargetStrategy) -> Callable[..., torch.Tensor]:
    """The public function of ``spec``: ``logits``, the optional inputs and
    the keyword settings (built and validated on every call)."""
    p = inspect.Parameter
    return keyword_function(
        spec.impl,
        spec.settings_type,
        lambda s, logits, **inputs: spec.choose(Inputs(logits, **inputs), s),
        leading=[
            p("logits", p.POSITIONAL_OR_KEYWORD),
            *(p(n, p.KEYWORD_ONLY, default=None) for n in _INPUTS),
        ],
        trailing=[],
    )


TARGET_STRATEGIES: dict[str, TargetStrategy] = {}
"""Every registered strategy by config name (filled by :func:`register_strategy`)."""


def register_strategy(
    name: str,
    settings: type,
    description: str,
    *,
    needs_distance: bool = False,
    encodings: tuple[str, ...] = ("onehot", "ecoc"),
) -> Callable[[Callable[[Inputs, Any], torch.Tensor]], Callable[..., torch.Tensor]]:
    """Register the decorated ``impl(inputs, settings)`` as strategy ``name``;
    returns the public keyword function."""

    def decorate(impl: Callable[[Inputs, Any], torch.Tensor]) -> Callable[..., torch.Tensor]:
        spec = TargetStrategy(name, impl, settings, needs_distance, description, encodings)
        TARGET_STRATEGIES[name] = spec
        return spec.fn

    return decorate


def _check_encoding(strategy: str, encoding: object) -> OutputEncoding | None:
    """``encoding`` checked against the encodings ``strategy`` applies to
    (:attr:`TargetStrategy.encodings`; ``None`` is one-hot): a one-line error
    for a wrong type or an encoding the strategy does not apply to."""
    if encoding is not None and not isinstance(encoding, OutputEncoding):
        raise LabelflipError(
            f"encoding must be an OutputEncoding (clf.encoding), got {type(encoding).__name__}"
        )
    kind = "onehot" if encoding is None else encoding.kind
    if kind not in TARGET_STRATEGIES[strategy].encodings:
        if kind == "multilabel":
            usable = ", ".join(
                n for n, spec in TARGET_STRATEGIES.items() if "multilabel" in spec.encodings
            )
            raise LabelflipError(
                f"target strategy '{strategy}' needs class scores and does not apply to "
                f"multi-label models; use {usable}"
            )
        raise LabelflipError(
            f"target strategy '{strategy}' applies to multi-label models only, not {kind} "
            "(pass encoding=clf.encoding for a multi-label model)"
        )
    return encoding


def _prepare(
    strategy: str, logits: object, labels: object, encoding: object
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(logits, labels, prediction, allowed mask (N, k)) after the input checks,
    for a strategy on class scores (one-hot or ECOC ``encoding``)."""
    enc = _check_encoding(strategy, encoding)
    z = _check_logits(logits, enc)
    n, k = z.shape
    y = _check_labels(labels, n, k, z.device)
    pred = z.argmax(1)
    rows = torch.arange(n, device=z.device)
    allowed = torch.ones(n, k, dtype=torch.bool, device=z.device)
    allowed[rows, pred] = False
    if y is not None and k >= 3:
        allowed[rows, y] = False
    return z, y, pred, allowed


@register_strategy(
    "random",
    NoSettings,
    "uniform among the classes (label vectors) other than the prediction and the "
    "true label (Carlini & Wagner 2017, average case)",
    needs_distance=False,
    encodings=("onehot", "ecoc", "multilabel"),
)
def random_target(x: Inputs, s: NoSettings) -> torch.Tensor:
    """Uniform among the allowed classes: C&W's "average case". One draw per
    sample from ``generator`` (a fresh one seeded with 0 when ``None``) on the
    generator's device, so equal generators give equal targets.

    For a multi-label ``encoding``: uniform among the ``2^labels`` label
    vectors other than the predicted one (``z_j > 0``) and, with ``labels``
    and at least 2 labels, the true one; returned as bitmasks (see
    :func:`_random_label_vectors`)."""
    enc = _check_encoding("random", x.encoding)
    gen = generator_or_default(x.generator)
    if enc is not None and enc.kind == "multilabel":
        return _random_label_vectors(x.logits, x.labels, enc, gen)
    z, _, _, allowed = _prepare("random", x.logits, x.labels, enc)
    u = torch.rand(len(z), generator=gen, device=gen.device, dtype=torch.float64).to(z.device)
    count = allowed.sum(1)
    rank = (u * count).long().clamp(max=count - 1)  # which allowed class, 0-based
    position = allowed.long().cumsum(1) - 1  # rank of every allowed class in its row
    return (allowed & (position == rank.unsqueeze(1))).long().argmax(1)


def _random_label_vectors(
    logits: object, labels: object, encoding: OutputEncoding, gen: torch.Generator
) -> torch.Tensor:
    """Uniform among the label vectors (bitmasks in ``[0, 2^L)``) other than
    the prediction and, for ``L >= 2``, the true vector, without listing the
    ``2^L`` vectors: one uniform draw picks a rank ``r`` among the ``m``
    allowed values (``m = 2^L - 1`` or ``2^L - 2``), mapped to the ``r``-th
    allowed value in increasing order by skipping the excluded values, the
    smaller first (as ``random`` does for classes)."""
    z = _check_logits(logits, encoding)
    n = z.shape[0]
    k = encoding.num_classes
    y = _check_labels(labels, n, k, z.device)
    pred = encoding.decode(z)
    other = pred if y is None or k < 3 else y
    lo, hi = torch.minimum(pred, other), torch.maximum(pred, other)
    two = (hi != lo).long()
    count = k - 1 - two
    u = torch.rand(n, generator=gen, device=gen.device, dtype=torch.float64).to(z.device)
    rank = (u * count).long().clamp(max=count - 1)
    value = rank + (rank >= lo).long()
    return value + two * (value >= hi).long()


@register_strategy(
    "flip-bits",
    FlipBitsSettings,
    "multi-label: the predicted label vector with `bits` random labels flipped "
    "(JMA paper, Tables VII-IX)",
    needs_distance=False,
    encodings=("multilabel",),
)
def flip_bits_target(x: Inputs, s: FlipBitsSettings) -> torch.Tensor:
    """The predicted label vector of a multi-label model with exactly
    ``bits`` labels flipped (``bits < 0``: all but ``-bits`` of the ``L``
    labels), the flipped labels a uniform random subset per sample: the
    ``bits`` smallest of ``L`` uniform draws from ``generator`` (seed 0 when
    ``None``). The JMA paper's "k bits flipped" targets (§VII, Tables VII–IX)
    flip the ground-truth vector; here the prediction is the source, so that
    every target is exactly ``bits`` labels away from the model's current
    decision (the two agree on correctly classified samples). ``labels``
    (bitmasks) are checked but not excluded: only a misclassified sample can
    get its true vector as target. Returns bitmasks (N,)."""
    bits = s.bits
    enc = _check_encoding("flip-bits", x.encoding)
    assert enc is not None
    z = _check_logits(x.logits, enc)
    n, size = z.shape
    _check_labels(x.labels, n, enc.num_classes, z.device)
    k = bits if bits > 0 else size + bits
    if not 1 <= k <= size:
        raise LabelflipError(
            f"flip-bits: bits={bits} does not fit a model with {size} labels "
            f"(use 1..{size}, or -{size - 1}..-1 to count from the number of labels)"
        )
    gen = generator_or_default(x.generator)
    u = torch.rand((n, size), generator=gen, device=gen.device, dtype=torch.float64)
    chosen = u.argsort(dim=1, stable=True)[:, :k]
    flip = torch.zeros(n, size, dtype=torch.long, device=gen.device).scatter(1, chosen, 1)
    pred_bits = index_to_bits(enc.decode(z), size)
    return bits_to_index(pred_bits ^ flip.to(z.device))


@register_strategy(
    "easiest",
    NoSettings,
    "highest logit after the prediction (Carlini & Wagner 2017, best case)",
    needs_distance=False,
)
def easiest_target(x: Inputs, s: NoSettings) -> torch.Tensor:
    """The allowed class with the highest logit (usually the runner-up): C&W's
    "best case", with the logit as the proxy for how easy a target is."""
    z, _, _, allowed = _prepare("easiest", x.logits, x.labels, x.encoding)
    return _masked_argmax(z, allowed)


@register_strategy(
    "hardest",
    NoSettings,
    "lowest logit (Carlini & Wagner 2017, worst case)",
    needs_distance=False,
)
def hardest_target(x: Inputs, s: NoSettings) -> torch.Tensor:
    """The allowed class with the lowest logit: C&W's "worst case", with the
    logit as the proxy for how hard a target is."""
    z, _, _, allowed = _prepare("hardest", x.logits, x.labels, x.encoding)
    return _masked_argmin(z, allowed)


def _source_distances(strategy: str, x: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    z, y, pred, allowed = _prepare(strategy, x.logits, x.labels, x.encoding)
    d = check_distances(strategy, x.distances, z.shape[1], z.device)
    source = pred if y is None else y
    return d[source], allowed


@register_strategy(
    "nearest",
    DistanceSettings,
    "class nearest to the true (else predicted) class in a class-distance matrix",
    needs_distance=True,
)
def nearest_target(x: Inputs, s: DistanceSettings) -> torch.Tensor:
    """The allowed class nearest to the source class: ``argmin_i
    distances[source, i]`` (ties: lowest index)."""
    d, allowed = _source_distances("nearest", x)
    return _masked_argmin(d, allowed)


@register_strategy(
    "farthest",
    DistanceSettings,
    "class farthest from the true (else predicted) class in a class-distance matrix",
    needs_distance=True,
)
def farthest_target(x: Inputs, s: DistanceSettings) -> torch.Tensor:
    """The allowed class farthest from the source class: ``argmax_i
    distances[source, i]`` (ties: lowest index)."""
    d, allowed = _source_distances("farthest", x)
    return _masked_argmax(d, allowed)


@register_strategy(
    "next",
    ShiftSettings,
    "the class `shift` (default 1) after the true class, mod k: i -> i+1 "
    "(Tang et al., Type I attack, §IV-A)",
    needs_distance=False,
)
def next_target(x: Inputs, s: ShiftSettings) -> torch.Tensor:
    """``(source + shift) mod k``, the source being the true class (the
    prediction without ``labels``): the "change an i into an i+1" targets of
    Tang et al.'s Type I experiments (§IV-A). A shift that is a multiple of
    ``k`` would make every target its own source and is refused."""
    z, y, pred, _ = _prepare("next", x.logits, x.labels, x.encoding)
    k = z.shape[1]
    if s.shift % k == 0:
        raise LabelflipError(f"next: shift {s.shift} is a multiple of the {k} classes")
    source = pred if y is None else y
    return (source + s.shift) % k


def _resolve_class(what: str, value: str | int, names: Sequence[str]) -> int:
    k = len(names)
    if isinstance(value, int) and not isinstance(value, bool):
        index = value
    elif value in names:
        return names.index(value)
    elif value.strip().lstrip("-").isdigit():
        index = int(value)
    else:
        raise unknown_name(f"class in mapping {what}", value, names)
    if not 0 <= index < k:
        raise LabelflipError(f"mapping: class index {value!r} ({what}) is not in [0, {k - 1}]")
    return index


def resolve_mapping(
    mapping: Mapping[str | int, str | int], class_names: Sequence[str]
) -> dict[int, int]:
    """``mapping`` (source -> target, by index or class name) as class indices.
    A name is looked up first; a string of digits that is no class name is an
    index. A target equal to its source, or two entries for one source with
    different targets, raise a one-line error."""
    names = list(class_names)
    out: dict[int, int] = {}
    for key, value in mapping.items():
        src = _resolve_class("key", key, names)
        dst = _resolve_class("value", value, names)
        if dst == src:
            raise LabelflipError(
                f"mapping: class '{names[src]}' is mapped to itself; a target must differ "
                "from its source"
            )
        if out.get(src, dst) != dst:
            raise LabelflipError(
                f"mapping: class '{names[src]}' is mapped twice, to '{names[out[src]]}' "
                f"and '{names[dst]}'"
            )
        out[src] = dst
    return out


@register_strategy(
    "mapping",
    MappingSettings,
    "a fixed source -> target class table",
    needs_distance=False,
)
def mapped_target(x: Inputs, s: MappingSettings) -> torch.Tensor:
    """A fixed source -> target table (source: the true label when ``labels``
    are given, else the prediction). The table is the user's explicit choice,
    so the prediction is not excluded: a sample already predicted as its
    mapped target gets that target anyway (the attack then has nothing to
    do). A source class missing from the table raises a one-line error.
    ``class_names`` (default ``"0"``, ``"1"``, ...) resolve names in the table."""
    z, y, pred, _ = _prepare("mapping", x.logits, x.labels, x.encoding)
    k = z.shape[1]
    if x.class_names is None:
        names = [str(i) for i in range(k)]
    else:
        names = [str(c) for c in x.class_names]
        if len(names) != k:
            raise LabelflipError(f"{len(names)} class names given for logits with {k} classes")
    table = resolve_mapping(s.mapping, names)
    lookup = torch.full((k,), -1, dtype=torch.long)
    for src, dst in table.items():
        lookup[src] = dst
    lookup = lookup.to(z.device)
    source = pred if y is None else y
    target = lookup[source]
    missing = torch.unique(source[target < 0]).tolist()
    if missing:
        listed = ", ".join(f"'{names[c]}'" for c in missing)
        raise LabelflipError(f"mapping: no target for source class {listed}")
    return target


@register_strategy(
    "labelfool",
    LabelFoolTargetSettings,
    "LabelFool label selection, eqs. 1-6 (Liu et al. 2019)",
    needs_distance=True,
)
def labelfool_target(x: Inputs, s: LabelFoolTargetSettings) -> torch.Tensor:
    """LabelFool's label selection (§III-A, eqs. 1–6) on ``p̂ = softmax(logits)``.

    - ``p̂_1 > δ1`` (eq. 6, first case): ``ĝ = argmax p̂`` (eq. 1) and
      ``t = argmin_i D[ĝ, i]`` (eq. 2);
    - otherwise: ``S = {j : p̂_j > δ2}`` (eq. 3) and ``t = argmin_i Σ_{j∈S}
      p̂_j D[j, i]`` (eqs. 4–5), the expected distance to ``g ~ p̂``.

    The argmins run over the allowed classes only: unlike eq. 5 we exclude
    the current prediction ``ĝ`` (and the true label when ``labels`` are
    known), since a target equal to the current class makes no attack. The
    source is always the model's estimate (``ĝ`` and ``p̂``, as in the paper);
    ``labels`` only add the exclusion. ``D`` is read with rows as sources
    (``D[a, b]``: from ``a`` to ``b``); the paper's Hausdorff distance is
    symmetric, where the orientation does not matter. ``ĝ`` is always counted
    in ``S`` (it is whenever ``p̂_1 > δ2``), so that ``S`` is never empty.
    Batched; ties go to the lowest class index.
    """
    z, _, pred, allowed = _prepare("labelfool", x.logits, x.labels, x.encoding)
    n, k = z.shape
    d = check_distances("labelfool", x.distances, k, z.device)
    p = z.double().softmax(1)
    rows = torch.arange(n, device=z.device)
    confident = p[rows, pred] > s.delta1
    # eq. 2: distances from the estimated ground truth ĝ
    nearest = d[pred]
    # eqs. 3-5: expected distance under p̂ restricted to S
    in_s = p > s.delta2
    in_s[rows, pred] = True
    expected = (p * in_s) @ d
    score = torch.where(confident.unsqueeze(1), nearest, expected)
    return _masked_argmin(score, allowed)


def get_strategy(name: str) -> TargetStrategy:
    """The strategy registered as ``name`` (a one-line error with a suggestion otherwise)."""
    spec = TARGET_STRATEGIES.get(name) if isinstance(name, str) else None
    if spec is None:
        raise unknown_name("target strategy", str(name), TARGET_STRATEGIES)
    return spec


def strategy_settings_from_mapping(
    mapping: str | Mapping[str, Any],
) -> tuple[TargetStrategy, Any]:
    """The strategy and its validated settings from a config value: a plain
    name (default settings) or a mapping like ``{"strategy": "labelfool",
    "delta1": 0.9}``. Unknown keys raise a one-line error with a "did you
    mean"; wrong types and out-of-range values raise one-line errors."""
    if isinstance(mapping, str):
        mapping = {"strategy": mapping}
    if not isinstance(mapping, Mapping):
        raise LabelflipError(
            f"a target strategy must be a name or a table with a 'strategy' key, got {mapping!r}"
        )
    rest = dict(mapping)
    if "strategy" not in rest:
        raise LabelflipError(
            f"target strategy table needs a 'strategy' key (one of "
            f"{', '.join(sorted(TARGET_STRATEGIES))}), got keys {sorted(map(str, rest))}"
        )
    spec = get_strategy(rest.pop("strategy"))
    settings = from_mapping(
        spec.settings_type, rest, owner="target strategy", name=spec.name, extra_keys=("strategy",)
    )
    return spec, settings


def choose_targets(
    strategy: str | Mapping[str, Any],
    logits: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    distances: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    class_names: Sequence[str] | None = None,
    encoding: OutputEncoding | None = None,
) -> torch.Tensor:
    """Target classes ``(N,)`` (long, on ``logits``' device) chosen by
    ``strategy`` (a name or a config mapping, see
    :func:`strategy_settings_from_mapping`) from the model's ``logits``.

    ``labels``: true labels, excluded as targets (``k >= 3``) and the source
    of the distance-based strategies; ``distances``: the ``(k, k)`` finite
    class-distance matrix the strategy needs (a one-line error if it needs
    one and gets none); ``generator``: randomness of ``random`` (seed 0 when
    ``None``); ``class_names``: for ``mapping``; ``encoding``: the model's
    output encoding (``clf.encoding``; ``None`` = one-hot). For a
    multi-label model ``logits`` are the per-label logits ``clf(x)``, and
    ``labels`` and the returned targets are label-vector bitmasks; only
    ``random`` and ``flip-bits`` apply (a one-line error otherwise).

    >>> t = choose_targets("labelfool", clf(x), distances=D)   # doctest: +SKIP
    >>> labelfool(clf, x, y, target=t)                          # doctest: +SKIP
    """
    spec, settings = strategy_settings_from_mapping(strategy)
    enc = _check_encoding(spec.name, encoding)
    z = _check_logits(logits, enc)
    if spec.needs_distance:
        distances = check_distances(spec.name, distances, z.shape[1], z.device)
    return spec.choose(Inputs(z, labels, distances, generator, class_names, enc), settings)
