"""Target-label strategies for targeted attacks (design notes: ``targets/``).

A strategy maps the model's logits (and optionally the true labels and a
class-distance matrix) to one target class per sample; pass the result as
``target=`` to any targeted attack:

>>> t = choose_targets("labelfool", clf(x), labels=y, distances=D)   # doctest: +SKIP
>>> result = run_attack("labelfool", clf, x, y, target=t)             # doctest: +SKIP

Registered names: ``random``, ``easiest``, ``hardest`` (Carlini & Wagner
2017's average, best and worst case), ``nearest`` / ``farthest`` (in a
class-distance matrix), ``mapping`` (a fixed source -> target table) and
``labelfool`` (LabelFool's label selection, Liu et al. 2019, eqs. 1–6), and
``flip-bits`` for multi-label models (the predicted label vector with
``bits`` random labels flipped). Pass ``encoding=clf.encoding``: for
multi-label models targets are label-vector bitmasks and only ``random`` and
``flip-bits`` apply. In a config a strategy is a name or a table ``{strategy
= "labelfool", delta1 = 0.9}`` (see :func:`strategy_settings_from_mapping`).

Output encodings (:mod:`labelflip.models.encoding`): every strategy takes an
optional ``encoding`` (an :class:`OutputEncoding`, ``None`` = one-hot). For
one-hot and ECOC models ``logits`` are the class scores the classifier
returns (``clf(x)``: the logits, or the ECOC correlations ``tanh(z)·c_k``)
and all strategies work on them alike. For multi-label models ``logits`` are
the per-label logits ``z`` (N, labels) and targets are label vectors as
bitmasks (``Σ_j bit_j 2^j``, the classifier's decisions); only ``random``
(uniform over the ``2^labels`` vectors, same exclusions) and ``flip-bits``
(the predicted vector with exactly ``bits`` labels flipped, as in the
"k bits flipped" experiments of the JMA paper, §VII, Tables VII–IX) apply
there. The strategies built on class scores (``easiest``, ``hardest``,
``nearest``, ``farthest``, ``mapping``, ``labelfool``) refuse multi-label
models, and ``flip-bits`` refuses the others, with a one-line error; the
registry records this as :attr:`TargetStrategy.encodings`.
"""

from labelflip.targets.strategies import (
    TARGET_STRATEGIES,
    DistanceSettings,
    FlipBitsSettings,
    Inputs,
    LabelFoolTargetSettings,
    MappingSettings,
    NoSettings,
    TargetStrategy,
    check_distances,
    choose_targets,
    easiest_target,
    farthest_target,
    flip_bits_target,
    get_strategy,
    hardest_target,
    labelfool_target,
    mapped_target,
    nearest_target,
    next_target,
    random_target,
    register_strategy,
    resolve_mapping,
    strategy_settings_from_mapping,
)

__all__ = [
    "TARGET_STRATEGIES",
    "Inputs",
    "register_strategy",
    "DistanceSettings",
    "FlipBitsSettings",
    "LabelFoolTargetSettings",
    "MappingSettings",
    "NoSettings",
    "TargetStrategy",
    "check_distances",
    "choose_targets",
    "easiest_target",
    "farthest_target",
    "flip_bits_target",
    "get_strategy",
    "hardest_target",
    "labelfool_target",
    "mapped_target",
    "next_target",
    "nearest_target",
    "random_target",
    "resolve_mapping",
    "strategy_settings_from_mapping",
]
