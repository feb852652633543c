"""Target strategies for multi-label (and ECOC) models: ``flip-bits`` flips
exactly ``bits`` labels of the prediction (uniform over subsets, seeded),
``random`` draws label vectors other than the prediction and the true one,
and the strategies built on class scores refuse multi-label models."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from labelflip.errors import LabelflipError
from labelflip.models.encoding import (
    OutputEncoding,
    bits_to_index,
    hadamard_codebook,
    index_to_bits,
)
from labelflip.targets import (
    TARGET_STRATEGIES,
    FlipBitsSettings,
    choose_targets,
    flip_bits_target,
    get_strategy,
    random_target,
    strategy_settings_from_mapping,
)

ML5 = OutputEncoding.multilabel(5)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logits(n: int, labels: int, seed: int = 0) -> torch.Tensor:
    """Random per-label logits with no exact zero (decisions are z > 0)."""
    z = torch.randn(n, labels, generator=_gen(seed))
    return torch.where(z == 0, torch.full_like(z, 0.5), z)


def _popcount(v: torch.Tensor) -> torch.Tensor:
    return index_to_bits(v, 31).sum(1)


# --------------------------------------------------------------------- flip-bits


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, -1, -2, -3, -4])
def test_flip_bits_flips_exactly_k_labels_of_the_prediction(bits):
    z = _logits(300, 5)
    pred = ML5.decode(z)
    t = choose_targets({"strategy": "flip-bits", "bits": bits}, z, encoding=ML5, generator=_gen(1))
    assert t.dtype == torch.long and t.shape == (300,)
    assert int(t.min()) >= 0 and int(t.max()) < 32
    k = bits if bits > 0 else 5 + bits
    assert _popcount(t ^ pred).tolist() == [k] * 300
    if k == 5:  # all labels flipped: the complement, no randomness left
        assert torch.equal(t, 31 - pred)


def test_flip_bits_is_uniform_over_subsets():
    enc = OutputEncoding.multilabel(4)
    z = -torch.ones(6000, 4)  # prediction: no label present, so target bits = flipped labels
    t = choose_targets({"strategy": "flip-bits", "bits": 2}, z, encoding=enc, generator=_gen(2))
    subsets = [sum(1 << j for j in c) for c in itertools.combinations(range(4), 2)]
    counts = torch.bincount(t, minlength=16)
    assert set(torch.nonzero(counts).squeeze(1).tolist()) == set(subsets)
    # 6 subsets, 1000 expected each; binomial sd ~ 29
    assert all(abs(int(counts[s]) - 1000) < 150 for s in subsets), counts[subsets]


def test_flip_bits_is_deterministic_under_the_generator():
    z = _logits(50, 5)
    a = choose_targets("flip-bits", z, encoding=ML5, generator=_gen(3))
    b = choose_targets("flip-bits", z, encoding=ML5, generator=_gen(3))
    c = choose_targets("flip-bits", z, encoding=ML5, generator=_gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(9)
    before = torch.random.get_rng_state()
    d = choose_targets("flip-bits", z, encoding=ML5)  # default generator: seed 0
    assert torch.equal(torch.random.get_rng_state(), before)  # global RNG untouched
    assert torch.equal(d, choose_targets("flip-bits", z, encoding=ML5, generator=_gen(0)))
    # the function called directly gives the same as through the registry
    assert torch.equal(a, flip_bits_target(z, encoding=ML5, generator=_gen(3)))


def test_flip_bits_ignores_the_true_labels_but_checks_them():
    z = _logits(20, 5)
    y = torch.randint(0, 32, (20,), generator=_gen(5))
    a = choose_targets("flip-bits", z, labels=y, encoding=ML5, generator=_gen(6))
    assert torch.equal(a, choose_targets("flip-bits", z, encoding=ML5, generator=_gen(6)))
    with pytest.raises(LabelflipError, match=r"labels must lie in \[0, 31\]"):
        choose_targets("flip-bits", z, labels=y + 32, encoding=ML5)


def test_flip_bits_on_a_single_label_and_many_labels():
    one = OutputEncoding.multilabel(1)
    z = torch.tensor([[2.0], [-1.0]])
    assert choose_targets("flip-bits", z, encoding=one).tolist() == [0, 1]
    big = OutputEncoding.multilabel(30)
    z = _logits(8, 30, seed=1)
    t = choose_targets({"strategy": "flip-bits", "bits": -1}, z, encoding=big)
    assert _popcount(t ^ big.decode(z)).tolist() == [29] * 8


@pytest.mark.parametrize(
    "bits,match",
    [
        (6, r"bits=6 does not fit a model with 5 labels \(use 1..5, or -4..-1"),
        (-5, "bits=-5 does not fit"),
        (-7, "bits=-7 does not fit"),
    ],
)
def test_flip_bits_out_of_range_raises_one_line(bits, match):
    with pytest.raises(LabelflipError, match=match) as info:
        choose_targets({"strategy": "flip-bits", "bits": bits}, _logits(3, 5), encoding=ML5)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "table,match",
    [
        ({"strategy": "flip-bits", "bits": 0}, "bits must not be 0"),
        ({"strategy": "flip-bits", "bits": 1.5}, "'bits' must be an integer"),
        ({"strategy": "flip-bits", "bits": True}, "must be an integer"),
        ({"strategy": "flip-bits", "bit": 2}, "unknown setting 'bit'.*did you mean 'bits'"),
    ],
)
def test_flip_bits_settings_raise_one_line(table, match):
    with pytest.raises(LabelflipError, match=match) as info:
        strategy_settings_from_mapping(table)
    assert "\n" not in str(info.value)


def test_flip_bits_settings_from_a_table():
    spec, s = strategy_settings_from_mapping({"strategy": "flip-bits", "bits": -2})
    assert spec is get_strategy("flip-bits") and s == FlipBitsSettings(bits=-2)
    assert strategy_settings_from_mapping("flip-bits")[1] == FlipBitsSettings(bits=1)


def test_flip_bits_refuses_models_without_label_vectors():
    z = torch.randn(3, 4)
    for encoding in (None, OutputEncoding.onehot(4), OutputEncoding.ecoc(hadamard_codebook(4))):
        with pytest.raises(LabelflipError, match="'flip-bits' applies to multi-label models only"):
            choose_targets("flip-bits", z, encoding=encoding)
        with pytest.raises(LabelflipError, match="multi-label models only"):
            flip_bits_target(z, encoding=encoding)


# ------------------------------------------------------------------------ random


def test_random_never_returns_the_prediction_or_the_true_vector():
    z = _logits(2000, 3)
    enc = OutputEncoding.multilabel(3)
    pred = enc.decode(z)
    y = torch.randint(0, 8, (2000,), generator=_gen(7))
    t = choose_targets("random", z, labels=y, encoding=enc, generator=_gen(8))
    assert t.dtype == torch.long and int(t.min()) >= 0 and int(t.max()) < 8
    assert not (t == pred).any() and not (t == y).any()
    t = choose_targets("random", z, encoding=enc, generator=_gen(8))
    assert not (t == pred).any()
    # every other vector occurs (2000 draws over at most 7 values)
    for p in range(8):
        assert set(t[pred == p].tolist()) == set(range(8)) - {p}


def test_random_is_roughly_uniform_over_the_allowed_vectors():
    enc = OutputEncoding.multilabel(3)
    z = torch.tensor([[1.0, -1.0, 1.0]]).repeat(7000, 1)  # prediction 0b101 = 5
    y = torch.full((7000,), 2)
    counts = torch.bincount(random_target(z, labels=y, encoding=enc), minlength=8)
    assert counts[5] == 0 and counts[2] == 0
    allowed = [0, 1, 3, 4, 6, 7]
    assert all(abs(int(counts[v]) - 7000 / 6) < 150 for v in allowed), counts


def test_random_with_one_label_returns_the_other_vector():
    # 2 label vectors: only the prediction is excluded, as with k = 2 classes
    enc = OutputEncoding.multilabel(1)
    z = torch.tensor([[1.0], [-1.0], [0.0]])  # z = 0 is "absent"
    assert choose_targets("random", z, encoding=enc).tolist() == [0, 1, 1]
    y = torch.tensor([0, 1, 1])  # the true vector is not excluded with 2 vectors
    assert choose_targets("random", z, labels=y, encoding=enc).tolist() == [0, 1, 1]


def test_random_on_thirty_labels_needs_no_enumeration():
    enc = OutputEncoding.multilabel(30)
    z = _logits(500, 30, seed=2)
    pred = enc.decode(z)
    t = choose_targets("random", z, labels=pred ^ 1, encoding=enc, generator=_gen(9))
    assert int(t.max()) < 2**30 and not (t == pred).any() and not (t == pred ^ 1).any()
    # the high bits are used: uniform over 2^30 values
    assert float((t >= 2**29).float().mean()) == pytest.approx(0.5, abs=0.1)


def test_random_is_deterministic_for_multilabel():
    z = _logits(40, 5)
    a = choose_targets("random", z, encoding=ML5, generator=_gen(1))
    assert torch.equal(a, choose_targets("random", z, encoding=ML5, generator=_gen(1)))
    assert not torch.equal(a, choose_targets("random", z, encoding=ML5, generator=_gen(2)))
    assert torch.equal(
        choose_targets("random", z, encoding=ML5),
        choose_targets("random", z, encoding=ML5, generator=_gen(0)),
    )


def test_ecoc_and_explicit_onehot_work_as_one_hot():
    scores = torch.randn(30, 4, generator=_gen(3))
    y = torch.randint(0, 4, (30,), generator=_gen(4))
    ecoc = OutputEncoding.ecoc(hadamard_codebook(4))
    d = torch.rand(4, 4, generator=_gen(5))
    for name in ("random", "easiest", "hardest", "nearest", "farthest", "labelfool"):
        want = choose_targets(name, scores, labels=y, distances=d, generator=_gen(6))
        for enc in (ecoc, OutputEncoding.onehot(4)):
            got = choose_targets(
                name, scores, labels=y, distances=d, generator=_gen(6), encoding=enc
            )
            assert torch.equal(got, want), (name, enc.kind)


# --------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "name", [n for n, s in TARGET_STRATEGIES.items() if "multilabel" not in s.encodings]
)
def test_class_score_strategies_refuse_multilabel_models(name):
    strategy = {"strategy": "mapping", "mapping": {"0": 1}} if name == "mapping" else name
    with pytest.raises(LabelflipError) as info:
        choose_targets(strategy, _logits(3, 5), encoding=ML5, distances=torch.zeros(5, 5))
    msg = str(info.value)
    assert msg == (
        f"target strategy '{name}' needs class scores and does not apply to multi-label "
        "models; use random, flip-bits"
    )
    # the function called directly refuses too
    kwargs = {"mapping": {"0": 1}} if name == "mapping" else {}
    with pytest.raises(LabelflipError, match="does not apply to multi-label models"):
        get_strategy(name).fn(_logits(3, 5), encoding=ML5, distances=torch.zeros(5, 5), **kwargs)


def test_registry_encodings():
    multi = {n for n, s in TARGET_STRATEGIES.items() if "multilabel" in s.encodings}
    assert multi == {"random", "flip-bits"}
    assert get_strategy("flip-bits").encodings == ("multilabel",)
    for name, spec in TARGET_STRATEGIES.items():
        if name != "flip-bits":
            assert {"onehot", "ecoc"} <= set(spec.encodings), name


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"logits": torch.zeros(2, 4)}, "logits have 4 columns, but the multilabel model has 5"),
        ({"logits": torch.zeros(5)}, r"shape \(N, labels\)"),
        ({"logits": torch.zeros(2, 5), "labels": torch.tensor([0, 32])}, r"\[0, 31\]"),
        ({"logits": torch.zeros(2, 5), "labels": torch.tensor([0.0, 1.0])}, "integer"),
        ({"logits": torch.zeros(2, 5), "encoding": "multilabel"}, "must be an OutputEncoding"),
        ({"logits": torch.zeros(2, 5), "generator": 1}, "torch.Generator"),
        ({"logits": torch.full((2, 5), math.nan)}, "NaN or Inf"),
    ],
)
def test_bad_multilabel_inputs_raise_one_line(kwargs, match):
    kwargs = {"encoding": ML5, **kwargs}
    for name in ("random", "flip-bits"):
        with pytest.raises(LabelflipError, match=match) as info:
            choose_targets(name, **kwargs)
        assert "\n" not in str(info.value)


def test_ecoc_logits_must_be_class_scores():
    ecoc = OutputEncoding.ecoc(hadamard_codebook(4, 8))  # 4 classes, 8 outputs
    with pytest.raises(LabelflipError, match="logits have 8 columns, but the ecoc model has 4"):
        choose_targets("random", torch.zeros(2, 8), encoding=ecoc)


def test_empty_batches():
    for name in ("random", "flip-bits"):
        t = choose_targets(name, torch.zeros(0, 5), encoding=ML5)
        assert t.shape == (0,) and t.dtype == torch.long


def test_targets_are_bitmasks_the_classifier_decodes():
    # bits_to_index / index_to_bits round trip: flip-bits flips the decoded vector
    z = torch.tensor([[1.0, -2.0, 0.0, 3.0, -0.5]])  # present: labels 0 and 3 -> 0b01001
    assert ML5.decode(z).tolist() == [9]
    t = choose_targets({"strategy": "flip-bits", "bits": 5}, z, encoding=ML5)
    assert index_to_bits(t, 5).tolist() == [[0, 1, 1, 0, 1]]
    assert bits_to_index(index_to_bits(t, 5)).tolist() == t.tolist()
