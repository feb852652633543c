"""Target-label strategies on hand-made logits with hand-computed expectations:
exclusions, ties, k = 2, random draws, distance orientation, mappings, both
branches of LabelFool's eq. 6, the registry and its error messages."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import torch

from labelflip.errors import LabelflipError
from labelflip.targets import (
    TARGET_STRATEGIES,
    LabelFoolTargetSettings,
    MappingSettings,
    choose_targets,
    get_strategy,
    labelfool_target,
    strategy_settings_from_mapping,
)

NAMES = ["cat", "dog", "car", "truck"]

# Strategies on class scores (one-hot models); the multi-label ones
# (flip-bits) are tested in test_targets_multilabel.py.
ONEHOT = [n for n, spec in TARGET_STRATEGIES.items() if "onehot" in spec.encodings]


def _t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def _choose(strategy, logits, **kw) -> list[int]:
    out = choose_targets(strategy, logits, **kw)
    assert out.dtype == torch.long and out.shape == (len(logits),)
    return out.tolist()


# An asymmetric distance matrix: D[a, b] is the distance from a to b.
D_ASYM = torch.tensor(
    [
        [0.0, 1.0, 5.0, 3.0],
        [2.0, 0.0, 1.0, 4.0],
        [4.0, 6.0, 0.0, 2.0],
        [1.0, 3.0, 7.0, 0.0],
    ]
)

# A symmetric matrix for LabelFool's eq. 6 (see test_labelfool_second_branch).
D_LF = torch.tensor(
    [
        [0.0, 1.0, 3.0, 2.0],
        [1.0, 0.0, 4.0, 6.0],
        [3.0, 4.0, 0.0, 1.0],
        [2.0, 6.0, 1.0, 0.0],
    ]
)
# softmax(log p + c) = p: p̂ = (0.5, 0.1, 0.395, 0.005), prediction 0, p̂_1 = 0.5
P_UNSURE = torch.tensor([[0.5, 0.1, 0.395, 0.005]])
UNSURE = P_UNSURE.log() + 7.0


# --------------------------------------------------------- logit-based strategies


def test_easiest_and_hardest_exclude_the_prediction_and_the_label():
    z = _t([5, 4, 3, 2, 1])
    assert _choose("easiest", z) == [1]
    assert _choose("hardest", z) == [4]
    assert _choose("easiest", z, labels=torch.tensor([1])) == [2]  # misclassified: skip y
    assert _choose("easiest", z, labels=torch.tensor([0])) == [1]  # label == prediction
    assert _choose("hardest", z, labels=torch.tensor([4])) == [3]
    # the prediction is not always class 0; batched rows are independent
    z = _t([1, 9, 3, 2], [0, 1, 2, 3])
    assert _choose("easiest", z, labels=torch.tensor([2, 3])) == [3, 2]
    assert _choose("hardest", z, labels=torch.tensor([0, 3])) == [3, 0]


def test_ties_go_to_the_lowest_index():
    assert _choose("easiest", _t([5, 2, 2, 0])) == [1]
    assert _choose("hardest", _t([5, 0, 3, 0])) == [1]
    assert _choose("easiest", _t([1, 1, 0])) == [1]  # tied prediction: argmax is 0
    d = torch.tensor([[0.0, 2.0, 1.0, 1.0], [1, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]])
    z = _t([9, 0, 0, 0])
    assert _choose("nearest", z, distances=d) == [2]
    assert _choose("farthest", z, distances=d) == [1]
    assert _choose("farthest", z, distances=torch.ones(4, 4)) == [1]


@pytest.mark.parametrize("name", [n for n in ONEHOT if n not in ("mapping", "next")])
def test_two_classes_always_leave_the_other_class(name):
    z = _t([2, 1], [1, 2], [0, 3])
    d = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    kw = {"distances": d} if get_strategy(name).needs_distance else {}
    assert _choose(name, z, **kw) == [1, 0, 0]
    # the true label is only excluded for k >= 3: a misclassified sample's target is its label
    assert _choose(name, z, labels=torch.tensor([0, 0, 1]), **kw) == [1, 0, 0]


# ----------------------------------------------------------------------- next


def test_next_shifts_the_true_class_else_the_prediction():
    z = _t([0, 5, 1, 0], [9, 0, 0, 0], [0, 0, 0, 7])
    assert _choose("next", z, labels=torch.tensor([1, 2, 3])) == [2, 3, 0]
    assert _choose("next", z) == [2, 1, 0]  # no labels: the prediction is the source
    shifted = choose_targets({"strategy": "next", "shift": -1}, z, labels=torch.tensor([1, 2, 0]))
    assert shifted.tolist() == [0, 1, 3]
    with pytest.raises(LabelflipError, match="multiple of the 4 classes"):
        choose_targets({"strategy": "next", "shift": 8}, z)
    with pytest.raises(LabelflipError, match="'shift' must be an integer"):
        choose_targets({"strategy": "next", "shift": 1.5}, z)


# ----------------------------------------------------------------------- random


def test_random_is_deterministic_for_equal_generators():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200, 10, generator=g)
    a = choose_targets("random", z, generator=torch.Generator().manual_seed(3))
    b = choose_targets("random", z, generator=torch.Generator().manual_seed(3))
    c = choose_targets("random", z, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # None means a fresh generator seeded with 0; the global RNG is not touched
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    d = choose_targets("random", z)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(d, choose_targets("random", z, generator=torch.Generator().manual_seed(0)))


def test_random_never_picks_an_excluded_class():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3000, 6, generator=g)
    y = torch.randint(0, 6, (3000,), generator=g)
    t = choose_targets("random", z, labels=y, generator=g)
    assert (t != z.argmax(1)).all() and (t != y).all()
    assert ((t >= 0) & (t < 6)).all()
    t = choose_targets("random", z, generator=g)
    assert (t != z.argmax(1)).all()


def test_random_is_roughly_uniform():
    n = 12000
    z = _t([9, 0, 0, 0, 0]).expand(n, 5)
    y = torch.full((n,), 1)
    t = choose_targets("random", z, labels=y, generator=torch.Generator().manual_seed(5))
    counts = torch.bincount(t, minlength=5).tolist()
    assert counts[0] == counts[1] == 0
    for c in counts[2:]:
        assert abs(c - n / 3) < 0.05 * n / 3, counts
    # without labels: uniform over the 4 classes other than the prediction
    counts = torch.bincount(choose_targets("random", z), minlength=5).tolist()
    assert counts[0] == 0 and all(abs(c - n / 4) < 0.05 * n / 4 for c in counts[1:]), counts


# --------------------------------------------------------- distance strategies


def test_nearest_and_farthest_measure_from_the_label_else_the_prediction():
    z = _t([9, 0, 0, 0])
    # no labels: source = prediction 0, row D[0] = (0, 1, 5, 3) over {1, 2, 3}
    assert _choose("nearest", z, distances=D_ASYM) == [1]
    assert _choose("farthest", z, distances=D_ASYM) == [2]
    # label 2: source = 2, row D[2] = (4, 6, 0, 2) over {1, 3} (0 = prediction, 2 = label)
    assert _choose("nearest", z, labels=torch.tensor([2]), distances=D_ASYM) == [3]
    assert _choose("farthest", z, labels=torch.tensor([2]), distances=D_ASYM) == [1]
    # label 3 == source 3 with prediction 1: row D[3] = (1, 3, 7, 0) over {0, 2}
    z = _t([0, 9, 0, 0])
    assert _choose("nearest", z, labels=torch.tensor([3]), distances=D_ASYM) == [0]
    assert _choose("farthest", z, labels=torch.tensor([3]), distances=D_ASYM) == [2]
    # the distance setting names the matrix; the strategy only uses the one given
    spec = {"strategy": "nearest", "distance": "semantic"}
    assert _choose(spec, z, labels=torch.tensor([3]), distances=D_ASYM) == [0]


def test_distances_may_come_as_nested_lists_and_follow_the_logits_dtype():
    z = _t([9, 0, 0, 0]).double()
    assert _choose("nearest", z, distances=D_ASYM.tolist()) == [1]


# ----------------------------------------------------------------------- mapping


def test_mapping_by_index_and_by_class_name():
    z = _t([9, 0, 0, 0], [0, 9, 0, 0], [0, 0, 9, 0], [0, 0, 0, 9])
    by_index = {"strategy": "mapping", "mapping": {"0": 2, "1": "3", "2": 0, "3": "1"}}
    assert _choose(by_index, z) == [2, 3, 0, 1]
    by_name = {"strategy": "mapping", "mapping": {"cat": "dog", "dog": "cat", "car": 3, "3": "car"}}
    assert _choose(by_name, z, class_names=NAMES) == [1, 0, 3, 2]
    # the source is the true label when labels are given
    y = torch.tensor([2, 2, 3, 0])
    assert _choose(by_name, z, labels=y, class_names=NAMES) == [3, 3, 2, 1]
    # an explicit table may name the current prediction (the attack has nothing to do)
    assert _choose(by_name, z[:1], labels=torch.tensor([1]), class_names=NAMES) == [0]


@pytest.mark.parametrize(
    "mapping,match",
    [
        ({"cat": "dog"}, "no target for source class 'car'"),
        ({"cat": "cat", "car": "dog"}, "'cat' is mapped to itself"),
        ({"2": 2, "cat": 1}, "'car' is mapped to itself"),
        ({"cat": "truk", "car": 0}, "did you mean 'truck'"),
        ({"cat": 7, "car": 0}, r"not in \[0, 3\]"),
        ({"cat": "dog", "0": "car", "car": 1}, "'cat' is mapped twice"),
        ({}, "non-empty"),
        ({"cat": 1.5}, "class name or index"),
    ],
)
def test_bad_mappings_raise_one_line(mapping, match):
    z = _t([9, 0, 0, 0], [0, 0, 9, 0])
    with pytest.raises(LabelflipError, match=match) as info:
        choose_targets({"strategy": "mapping", "mapping": mapping}, z, class_names=NAMES)
    assert "\n" not in str(info.value)


def test_mapping_settings_come_from_a_config_table():
    spec, s = strategy_settings_from_mapping({"strategy": "mapping", "mapping": {"cat": "dog"}})
    assert spec.name == "mapping" and s == MappingSettings(mapping={"cat": "dog"})
    with pytest.raises(LabelflipError, match="must be a mapping"):
        strategy_settings_from_mapping({"strategy": "mapping", "mapping": "cat->dog"})


# --------------------------------------------------------------------- LabelFool


def test_labelfool_first_branch_nearest_to_the_prediction():
    # p̂_1 = e^5 / (e^5 + 3) = 0.98 > δ1 = 0.8: eq. 2 from ĝ = 0, D[0] = (0, 1, 3, 2)
    z = _t([5, 0, 0, 0])
    assert _choose("labelfool", z, distances=D_LF) == [1]
    # the true label (when known and != ĝ) is excluded too: then D[0, 3] = 2 < D[0, 2] = 3
    assert _choose("labelfool", z, labels=torch.tensor([1]), distances=D_LF) == [3]
    # the same confident logits with ĝ = 2: D[2] = (3, 4, 0, 1)
    assert _choose("labelfool", _t([0, 0, 5, 0]), distances=D_LF) == [3]


def test_labelfool_second_branch_expected_distance_over_s():
    # p̂ = (0.5, 0.1, 0.395, 0.005), p̂_1 = 0.5 <= δ1 = 0.8.
    # δ2 = 0.01: S = {0, 1, 2}; Σ_{j∈S} p̂_j D[j, i] over i = 1, 2, 3:
    #   i=1: 0.5*1 + 0.1*0 + 0.395*4 = 2.08
    #   i=2: 0.5*3 + 0.1*4 + 0.395*0 = 1.90   <- argmin
    #   i=3: 0.5*2 + 0.1*6 + 0.395*1 = 1.995
    assert _choose("labelfool", UNSURE, distances=D_LF) == [2]
    # δ2 = 0.2: S = {0, 2}: i=1: 2.08, i=2: 1.5, i=3: 1.395 <- argmin
    spec = {"strategy": "labelfool", "delta2": 0.2}
    assert _choose(spec, UNSURE, distances=D_LF) == [3]
    # δ1 = 0.4 < p̂_1: first branch, D[0] = (0, 1, 3, 2) -> 1
    assert _choose({"strategy": "labelfool", "delta1": 0.4}, UNSURE, distances=D_LF) == [1]
    # the label 2 is excluded: argmin over {1, 3} -> 3 (1.995 < 2.08)
    assert _choose("labelfool", UNSURE, labels=torch.tensor([2]), distances=D_LF) == [3]
    # S always holds ĝ: with δ2 = 1 the expected distance is p̂_1 D[0, i] -> 1
    assert _choose({"strategy": "labelfool", "delta2": 1.0}, UNSURE, distances=D_LF) == [1]


def test_labelfool_branches_per_row_in_one_batch():
    z = torch.cat([UNSURE, _t([5, 0, 0, 0]), UNSURE, _t([0, 0, 5, 0])])
    assert _choose("labelfool", z, distances=D_LF) == [2, 1, 2, 3]


def _labelfool_reference(z, d, delta1, delta2, labels=None):
    """Eqs. 1-6 written per sample, independent of the batched code."""
    out = []
    for i, row in enumerate(z.double().softmax(1)):
        p = row.tolist()
        k = len(p)
        g = max(range(k), key=lambda j: (p[j], -j))
        allowed = [c for c in range(k) if c != g and (labels is None or c != int(labels[i]))]
        if p[g] > delta1:
            score = {c: float(d[g, c]) for c in allowed}
        else:
            s = [j for j in range(k) if p[j] > delta2 or j == g]
            score = {c: sum(p[j] * float(d[j, c]) for j in s) for c in allowed}
        out.append(min(allowed, key=lambda c: (score[c], c)))
    return out


def test_labelfool_batched_matches_a_per_sample_reference():
    g = torch.Generator().manual_seed(2)
    z = 3 * torch.randn(300, 7, generator=g)
    y = torch.randint(0, 7, (300,), generator=g)
    a = torch.rand(7, 7, generator=g)
    d = a + a.T
    for delta1, delta2 in ((0.8, 0.01), (0.5, 0.1), (0.95, 0.0)):
        spec = {"strategy": "labelfool", "delta1": delta1, "delta2": delta2}
        assert _choose(spec, z, distances=d) == _labelfool_reference(z, d, delta1, delta2)
        assert _choose(spec, z, labels=y, distances=d) == _labelfool_reference(
            z, d, delta1, delta2, y
        )


# ---------------------------------------------------------------------- registry


def test_every_strategy_returns_long_targets_on_the_logits_device():
    z = _t([3, 1, 2, 0], [0, 4, 1, 2]).double()
    table = {"strategy": "mapping", "mapping": {"0": 1, "1": 2}}
    for name in ONEHOT:
        strategy = table if name == "mapping" else name
        out = choose_targets(strategy, z, distances=D_LF)
        assert out.dtype == torch.long and out.shape == (2,) and out.device == z.device
        if name != "mapping":
            assert (out != z.argmax(1)).all(), name
        empty = choose_targets(strategy, z[:0], distances=D_LF)
        assert empty.shape == (0,) and empty.dtype == torch.long


def test_strategy_signatures_match_their_settings():
    for spec in TARGET_STRATEGIES.values():
        params = inspect.signature(spec.fn).parameters
        fields = {f.name: f for f in dataclasses.fields(spec.settings_type)}
        keyword = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert keyword - set(fields) == {
            "labels",
            "distances",
            "generator",
            "class_names",
            "encoding",
        }
        for name, f in fields.items():
            if f.default is not dataclasses.MISSING:
                assert params[name].default == f.default, (spec.name, name)
        if spec.name != "mapping":  # its table has no valid default: it is required
            assert spec.default_settings() is not None
        assert spec.needs_distance == ("distance" in fields), spec.name


def test_settings_from_a_name_or_a_table():
    spec, s = strategy_settings_from_mapping("labelfool")
    assert spec is get_strategy("labelfool") and s == LabelFoolTargetSettings()
    spec, s = strategy_settings_from_mapping({"strategy": "labelfool", "delta1": 0.9, "delta2": 0})
    assert s == LabelFoolTargetSettings(delta1=0.9, delta2=0.0)
    assert isinstance(s.delta2, float)
    # calling the function directly validates too
    with pytest.raises(LabelflipError, match="delta1 must be <= 1"):
        labelfool_target(UNSURE, distances=D_LF, delta1=2.0)


@pytest.mark.parametrize(
    "strategy,match",
    [
        ("labelfoo", "unknown target strategy 'labelfoo'; did you mean 'labelfool'"),
        ("nearst", "did you mean 'nearest'"),
        ({"strategy": "randm"}, "did you mean 'random'"),
        ({"delta1": 0.9}, "needs a 'strategy' key"),
        ({"strategy": "labelfool", "delta_1": 0.9}, "unknown setting 'delta_1'.*'delta1'"),
        ({"strategy": "labelfool", "delta1": "high"}, "delta1' must be a number"),
        ({"strategy": "labelfool", "delta1": True}, "must be a number"),
        ({"strategy": "labelfool", "delta1": 1.5}, "delta1 must be <= 1"),
        ({"strategy": "labelfool", "delta2": -0.1}, "delta2 must be >= 0"),
        ({"strategy": "labelfool", "delta2": math.nan}, "finite"),
        ({"strategy": "labelfool", "distance": ""}, "distance must be the name"),
        ({"strategy": "nearest", "distance": 3}, "must be a string"),
        ({"strategy": "random", "seed": 3}, "unknown setting 'seed' for target strategy 'random'"),
        (3, "must be a name or a table"),
    ],
)
def test_bad_strategies_raise_one_line(strategy, match):
    with pytest.raises(LabelflipError, match=match) as info:
        choose_targets(strategy, UNSURE, distances=D_LF)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "'labelfool' needs a class-distance matrix"),
        ({"distances": torch.zeros(3, 3)}, r"shape \(4, 4\)"),
        ({"distances": torch.full((4, 4), math.nan)}, "NaN or Inf"),
        ({"distances": torch.zeros(4, 4, dtype=torch.bool)}, "real numbers"),
        ({"distances": D_LF, "labels": torch.tensor([4])}, r"must lie in \[0, 3\]"),
        ({"distances": D_LF, "labels": torch.tensor([0.0])}, "integer"),
        ({"distances": D_LF, "labels": torch.tensor([0, 1])}, "shape"),
    ],
)
def test_bad_inputs_raise_one_line(kwargs, match):
    with pytest.raises(LabelflipError, match=match) as info:
        choose_targets("labelfool", UNSURE, **kwargs)
    assert "\n" not in str(info.value)


def test_bad_logits_and_generators():
    with pytest.raises(LabelflipError, match="nearest' needs a class-distance matrix"):
        choose_targets("nearest", UNSURE)
    with pytest.raises(LabelflipError, match=r"shape \(N, k\)"):
        choose_targets("easiest", torch.zeros(4))
    with pytest.raises(LabelflipError, match="k >= 2"):
        choose_targets("easiest", torch.zeros(4, 1))
    with pytest.raises(LabelflipError, match="NaN or Inf"):
        choose_targets("easiest", _t([1, math.inf]))
    with pytest.raises(LabelflipError, match="floating-point"):
        choose_targets("easiest", torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(LabelflipError, match="torch.Generator"):
        choose_targets("random", UNSURE, generator=0)
