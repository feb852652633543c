"""Label-stay analysis for Type I attacks (Tang et al., eq. 2): the label-stay
matrix, the Type I rates, and the symmetry/attractor functions applied to the
label-stay matrix unchanged. All expected values are computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labelflip import analysis
from labelflip.analysis import (
    TypeIRates,
    attractor_summary,
    bowker_test,
    flip_matrix,
    label_stay_matrix,
    row_rates,
    symmetry_score,
    top_flips,
    type_i_rates,
    type_i_success,
)
from labelflip.errors import LabelflipError

# Ten samples, K = 3.  Per sample: original class, f1's label and the
# oracle's label of the adversarial example.
#
#   i  true f1 oracle   f1 keeps?  oracle changed?  Type I?
#   0   0   0   1        yes        yes             yes  (0 -> 1)
#   1   0   0   1        yes        yes             yes  (0 -> 1)
#   2   0   0   0        yes        no              no   (diagonal)
#   3   0   2   1        no         yes             no   (f1 moved: not counted)
#   4   1   1   0        yes        yes             yes  (1 -> 0)
#   5   1   1   2        yes        yes             yes  (1 -> 2)
#   6   1   0   1        no         no              no   (not counted)
#   7   2   2   1        yes        yes             yes  (2 -> 1)
#   8   2   2   2        yes        no              no   (diagonal)
#   9   2   2   1        yes        yes             yes  (2 -> 1)
TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
F1 = np.array([0, 0, 0, 2, 1, 1, 0, 2, 2, 2])
ORACLE = np.array([1, 1, 0, 1, 0, 2, 1, 1, 2, 1])
M = np.array(
    [
        [1, 2, 0],
        [1, 0, 1],
        [0, 2, 1],
    ]
)


def test_label_stay_matrix_by_hand():
    m = label_stay_matrix(TRUE, F1, ORACLE, 3)
    assert m.dtype == np.int64 and m.shape == (3, 3)
    np.testing.assert_array_equal(m, M)
    assert m.sum() == 8  # the samples f1 kept: all but 3 and 6
    assert m.sum() - np.trace(m) == 6  # Type I successes


def test_label_stay_matrix_mask_and_float_labels():
    mask = np.array([True] * 5 + [False] * 5)  # samples 0-4
    m = label_stay_matrix(TRUE.astype(float), F1, ORACLE, 3, mask=mask)
    np.testing.assert_array_equal(m, [[1, 2, 0], [1, 0, 0], [0, 0, 0]])


def test_label_stay_matrix_is_the_flip_matrix_of_the_kept_samples():
    keep = F1 == TRUE
    np.testing.assert_array_equal(
        label_stay_matrix(TRUE, F1, ORACLE, 3), flip_matrix(TRUE, ORACLE, 3, mask=keep)
    )


def test_label_stay_matrix_empty_and_no_kept_samples():
    np.testing.assert_array_equal(label_stay_matrix([], [], [], 2), np.zeros((2, 2)))
    np.testing.assert_array_equal(label_stay_matrix([0, 1], [1, 0], [1, 0], 2), np.zeros((2, 2)))


@pytest.mark.parametrize(
    ("true", "f1", "oracle", "k", "mask", "match"),
    [
        ([0, 1], [0], [0, 1], 2, None, "differ in length"),
        ([0, 1], [0, 1], [0, 2], 2, None, r"oracle_adv labels must lie in \[0, 2\)"),
        ([0, 1], [0, 1], [0, 1], 0, None, "num_classes must be at least 1"),
        ([0, 1], [0, 1], [0, 1], 2, [1, 0], "mask must be a boolean array"),
        ([0, 1], [0, 1], [0, 1], 2, [True], "one entry per sample"),
        ([0, np.nan], [0, 1], [0, 1], 2, None, "true contains NaN"),
        ([[0, 1]], [0, 1], [0, 1], 2, None, "1-D array"),
    ],
)
def test_label_stay_matrix_errors(true, f1, oracle, k, mask, match):
    with pytest.raises(LabelflipError, match=match):
        label_stay_matrix(true, f1, oracle, k, mask=mask)


def test_type_i_success_by_hand():
    expected = [True, True, False, False, True, True, False, True, False, True]
    assert type_i_success(TRUE, F1, ORACLE).tolist() == expected


def test_type_i_rates_untargeted_by_hand():
    r = type_i_rates(TRUE, F1, ORACLE)
    assert isinstance(r, TypeIRates)
    # oracle changed: samples 0, 1, 3, 4, 5, 7, 9 (not 2, 6, 8)
    assert (r.n, r.n_f1_keeps, r.n_oracle_changed, r.n_success) == (10, 8, 7, 6)
    assert r.f1_keep_rate == pytest.approx(0.8)
    assert r.oracle_change_rate == pytest.approx(0.7)
    assert r.success_rate == pytest.approx(0.6)
    assert r.n_targeted == 0
    assert math.isnan(r.target_hit_rate) and math.isnan(r.targeted_success_rate)


def test_type_i_rates_targeted_by_hand():
    # the paper's targets (§IV-A): turn an i into an i+1 (mod 3 here);
    # samples 8 and 9 have no target (-1)
    target = np.array([1, 1, 1, 1, 2, 2, 2, 0, -1, -1])
    r = type_i_rates(TRUE, F1, ORACLE, target)
    # targeted samples 0-7; oracle == target at 0, 1, 3, 5
    assert (r.n_targeted, r.n_target_hits) == (8, 4)
    assert r.target_hit_rate == pytest.approx(4 / 8)
    # of those, f1 kept the label at 0, 1, 5 (f1 moved at 3)
    assert r.n_targeted_success == 3
    assert r.targeted_success_rate == pytest.approx(3 / 8)
    # the untargeted rates do not depend on the targets
    assert r.success_rate == pytest.approx(0.6)


def test_type_i_rates_mask_and_empty():
    mask = np.zeros(10, dtype=bool)
    mask[[0, 2, 3, 6]] = True
    r = type_i_rates(TRUE, F1, ORACLE, mask=mask)
    # 0: keep+changed, 2: keep, 3: changed, 6: neither
    assert (r.n, r.n_f1_keeps, r.n_oracle_changed, r.n_success) == (4, 2, 2, 1)
    assert r.success_rate == pytest.approx(0.25)
    empty = type_i_rates([], [], [])
    assert empty.n == 0 and math.isnan(empty.success_rate) and math.isnan(empty.f1_keep_rate)


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ([1, 0], "target equals the original class at sample 1"),
        ([1, -2], "classes or -1"),
        ([1], "differ in length"),
        ([1.5, 0], "whole-number"),
        ([[1, 2]], "1-D array"),
    ],
)
def test_type_i_rates_target_errors(target, match):
    with pytest.raises(LabelflipError, match=match):
        type_i_rates([0, 0], [0, 0], [1, 1], target)


def test_type_i_rates_label_errors():
    with pytest.raises(LabelflipError, match="differ in length"):
        type_i_rates([0, 1], [0, 1, 1], [0, 1])
    with pytest.raises(LabelflipError, match="must lie in"):
        type_i_rates([0, -1], [0, 1], [0, 1])
    with pytest.raises(LabelflipError, match="mask must be a boolean array"):
        type_i_rates([0, 1], [0, 1], [0, 1], mask=[0, 1])


# ---------------------------------------- symmetry and attractors, unchanged


def test_symmetry_functions_apply_to_the_label_stay_matrix():
    m = label_stay_matrix(TRUE, F1, ORACLE, 3)
    # off-diagonal pairs: (0,1): 2 vs 1, (0,2): 0 vs 0, (1,2): 1 vs 2
    # s = sum min / sum max = (1 + 1) / (2 + 2)
    assert symmetry_score(m) == pytest.approx(0.5)
    # Bowker: (2-1)^2/3 + (1-2)^2/3 over 2 informative pairs
    b = bowker_test(m)
    assert b.df == 2 and b.statistic == pytest.approx(2 / 3)
    assert b.p_value == pytest.approx(math.exp(-1 / 3))  # chi2(2).sf(x) = exp(-x/2)
    assert top_flips(m, 3) == [(0, 1, 2), (2, 1, 2), (1, 0, 1)]
    np.testing.assert_allclose(
        row_rates(m), [[1 / 3, 2 / 3, 0], [1 / 2, 0, 1 / 2], [0, 2 / 3, 1 / 3]]
    )


def test_attractor_summary_applies_to_type_i_landings():
    success = type_i_success(TRUE, F1, ORACLE)
    s = attractor_summary(TRUE, ORACLE, success, 3)
    # Type I examples turn into: 1, 1, 0, 2, 1, 1 -> class 1 is the attractor
    assert s["n_success"] == 6
    np.testing.assert_allclose(s["shares"], [1 / 6, 4 / 6, 1 / 6])
    assert (s["top_class"], s["top_share"]) == (1, pytest.approx(4 / 6))
    # the shares are the column sums of the label-stay matrix's off-diagonal
    m = label_stay_matrix(TRUE, F1, ORACLE, 3)
    off = m * ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(s["shares"], off.sum(axis=0) / off.sum())
    # baseline: successes of true class 0, 1, 2 = 2, 2, 2; (6 - 2) / (2 * 6)
    np.testing.assert_allclose(s["baseline_shares"], [1 / 3, 1 / 3, 1 / 3])


def test_exported_from_the_analysis_package():
    for name in ("label_stay_matrix", "type_i_rates", "type_i_success", "TypeIRates"):
        assert name in analysis.__all__ and hasattr(analysis, name)
