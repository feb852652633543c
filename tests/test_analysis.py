"""Hand-computed tests for labelflip.analysis (pure numpy/scipy functions)."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelflip import analysis
from labelflip.analysis import (
    BowkerResult,
    SpearmanResult,
    attractor_summary,
    bowker_test,
    class_distribution,
    confusion_matrix,
    flip_distance_correlation,
    flip_matrix,
    landing_shares,
    normalized_entropy,
    per_class_accuracy,
    rank_correlation,
    row_rates,
    symmetry_ci,
    symmetry_score,
    top_attractor,
    top_flips,
)
from labelflip.errors import LabelflipError


def _relabel(a: np.ndarray, perm) -> np.ndarray:
    """Rename class c to perm[c]: B[perm[i], perm[j]] = A[i, j]."""
    perm = np.asarray(perm)
    b = np.empty_like(a)
    b[np.ix_(perm, perm)] = a
    return b


# --------------------------------------------------------------------------- counts


def test_confusion_matrix_and_per_class_accuracy_by_hand():
    c = confusion_matrix([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], 2)
    # (0,0) once, (0,1) once, (1,1) twice, (1,0) once
    np.testing.assert_array_equal(c, [[1, 1], [1, 2]])
    assert c.dtype == np.int64
    # 1/2 and 2/3; a class without samples is NaN
    np.testing.assert_allclose(
        per_class_accuracy([[1, 1, 0], [1, 2, 0], [0, 0, 0]]), [0.5, 2 / 3, np.nan]
    )


def test_confusion_matrix_errors():
    with pytest.raises(LabelflipError, match="length"):
        confusion_matrix([0, 1], [0], 2)
    with pytest.raises(LabelflipError, match=r"\[0, 2\)"):
        confusion_matrix([0, 2], [0, 1], 2)


# --------------------------------------------------------------------------- flips


def test_flip_matrix_by_hand():
    true = [0, 0, 1, 1, 2]
    adv = [1, 0, 0, 2, 2]
    # pairs (0,1) (0,0) (1,0) (1,2) (2,2)
    a = flip_matrix(true, adv, 3)
    np.testing.assert_array_equal(a, [[1, 1, 0], [1, 0, 1], [0, 0, 1]])
    assert a.dtype == np.int64
    # mask keeps samples 0, 2, 3: pairs (0,1) (1,0) (1,2)
    am = flip_matrix(true, adv, 3, mask=np.array([True, False, True, True, False]))
    np.testing.assert_array_equal(am, [[0, 1, 0], [1, 0, 1], [0, 0, 0]])
    # whole-number floats are labels too; no samples gives zeros
    np.testing.assert_array_equal(flip_matrix([0.0, 1.0], [1.0, 1.0], 2), [[0, 1], [0, 1]])
    np.testing.assert_array_equal(flip_matrix([], [], 2), np.zeros((2, 2)))


@pytest.mark.parametrize(
    ("true", "adv", "k", "mask", "match"),
    [
        ([0, 1, 1], [0, 1], 2, None, "length"),
        ([0, 3], [0, 1], 3, None, r"true labels must lie in \[0, 3\), found 3"),
        ([0, 1], [0, -1], 3, None, "adv_pred labels"),
        ([0.5, 1], [0, 1], 2, None, "whole-number"),
        ([np.nan, 1], [0, 1], 2, None, "NaN"),
        ([[0, 1]], [[0, 1]], 2, None, "1-D"),
        (["a", "b"], [0, 1], 2, None, "integer class labels"),
        ([0, 1], [0, 1], 0, None, "at least 1"),
        ([0, 1], [0, 1], 2.0, None, "integer"),
        ([0, 1], [0, 1], 2, [1, 0], "boolean"),
        ([0, 1], [0, 1], 2, np.array([True]), "one entry per sample"),
    ],
)
def test_flip_matrix_errors(true, adv, k, mask, match):
    with pytest.raises(LabelflipError, match=match):
        flip_matrix(true, adv, k, mask=mask)


def test_row_rates_by_hand():
    # row 0: 1/4, 3/4; row 1 has no samples -> zeros, not NaN; row 2: 2/2 on the diagonal
    r = row_rates([[1, 3, 0], [0, 0, 0], [0, 0, 2]])
    np.testing.assert_array_equal(r, [[0.25, 0.75, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert r.dtype == np.float64


@pytest.mark.parametrize(
    ("matrix", "match"),
    [
        ([[1, 2, 3]], "square"),
        ([1, 2], "square"),
        (np.zeros((0, 0)), "square"),
        ([[1, np.nan], [0, 1]], "NaN"),
        ([[1, -1], [0, 1]], "negative"),
        ([["a", "b"], ["c", "d"]], "numeric"),
    ],
)
def test_matrix_errors(matrix, match):
    for fn in (row_rates, symmetry_score, bowker_test, top_flips):
        with pytest.raises(LabelflipError, match=match):
            fn(matrix)


def test_top_flips_by_hand():
    a = np.array([[5, 3, 0], [3, 1, 7], [2, 0, 9]])
    # off-diagonal: (0,1)=3 (0,2)=0 (1,0)=3 (1,2)=7 (2,0)=2 (2,1)=0
    # by count desc, ties (0,1) before (1,0); zero cells are not flips
    assert top_flips(a) == [(1, 2, 7), (0, 1, 3), (1, 0, 3), (2, 0, 2)]
    assert top_flips(a, n=2) == [(1, 2, 7), (0, 1, 3)]
    assert top_flips(a, n=0) == []
    assert all(isinstance(c, int) for _, _, c in top_flips(a))
    assert top_flips([[0.0, 0.5], [0.25, 0.0]]) == [(0, 1, 0.5), (1, 0, 0.25)]
    assert top_flips(np.eye(3, dtype=int)) == []
    with pytest.raises(LabelflipError, match="non-negative integer"):
        top_flips(a, n=-1)


# --------------------------------------------------------------------------- symmetry


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        # one-way: A_sym off-diag = 0.5, 0.5 (|.|=1), A_anti = 0.5, -0.5 (|.|=1) -> 0/2 = 0
        ([[0, 1], [0, 0]], 0.0),
        # symmetric: |A_sym| = 2, |A_anti| = 0 -> 2/2 = 1
        ([[0, 1], [1, 0]], 1.0),
        # |A_sym| = 0.75 + 0.75 = 1.5, |A_anti| = 0.25 + 0.25 = 0.5 -> 1/2 = 0.5
        ([[0, 1], [0.5, 0]], 0.5),
        # the diagonal is ignored: same as [[0,1],[0.5,0]]
        ([[7, 1], [0.5, 3]], 0.5),
    ],
)
def test_symmetry_score_required_cases(matrix, expected):
    assert symmetry_score(matrix) == pytest.approx(expected, abs=1e-12)


def test_symmetry_score_nan_without_off_diagonal_flips():
    assert math.isnan(symmetry_score([[0, 0], [0, 0]]))
    assert math.isnan(symmetry_score(np.diag([4, 5, 6])))
    assert math.isnan(symmetry_score([[3]]))


def test_symmetry_score_3x3_by_hand():
    a = [[9, 4, 0], [2, 9, 1], [0, 3, 9]]
    # A_sym off-diag: (4+2)/2 = 3 twice, (1+3)/2 = 2 twice -> |A_sym| = 10
    # A_anti off-diag: |4-2|/2 = 1 twice, |1-3|/2 = 1 twice -> |A_anti| = 4
    # s = (10 - 4) / (10 + 4) = 3/7  (= (min 2 + min 1) / (max 4 + max 3))
    assert symmetry_score(a) == pytest.approx(3 / 7)


def test_symmetry_score_relabelling_and_scale_invariance():
    a = np.array([[9, 4, 0], [2, 9, 1], [0, 3, 9]])
    for perm in ([1, 2, 0], [2, 1, 0], [0, 2, 1]):
        assert symmetry_score(_relabel(a, perm)) == pytest.approx(3 / 7)
    assert symmetry_score(10 * a) == pytest.approx(3 / 7)


@st.composite
def _matrix_and_perm(draw):
    k = draw(st.integers(min_value=1, max_value=6))
    entries = draw(st.lists(st.integers(0, 50), min_size=k * k, max_size=k * k))
    perm = draw(st.permutations(range(k)))
    return np.array(entries, dtype=np.int64).reshape(k, k), perm


@settings(max_examples=200, deadline=None)
@given(_matrix_and_perm())
def test_symmetry_score_relabelling_property(case):
    a, perm = case
    s, s_perm = symmetry_score(a), symmetry_score(_relabel(a, perm))
    if math.isnan(s):
        assert math.isnan(s_perm)
    else:
        assert 0.0 <= s <= 1.0
        assert s_perm == pytest.approx(s, abs=1e-12)
        # s = sum_{i<j} min(a_ij, a_ji) / sum_{i<j} max(a_ij, a_ji)
        iu = np.triu_indices(a.shape[0], 1)
        lo, hi = np.minimum(a[iu], a.T[iu]), np.maximum(a[iu], a.T[iu])
        assert s == pytest.approx(lo.sum() / hi.sum(), abs=1e-12)
    b, b_perm = bowker_test(a), bowker_test(_relabel(a, perm))
    assert b.df == b_perm.df
    assert b.statistic == pytest.approx(b_perm.statistic)


def _chi2_sf_df1(x: float) -> float:
    # chi-squared survival function, 1 df: P(Z^2 > x) = erfc(sqrt(x/2))
    return math.erfc(math.sqrt(x / 2))


def _chi2_sf_df3(x: float) -> float:
    # 3 df: erfc(sqrt(x/2)) + sqrt(2x/pi) exp(-x/2)
    return math.erfc(math.sqrt(x / 2)) + math.sqrt(2 * x / math.pi) * math.exp(-x / 2)


def test_bowker_3x3_by_hand():
    a = [[5, 3, 4], [1, 4, 0], [0, 2, 6]]
    # pair (0,1): (3-1)^2/(3+1) = 1;  (0,2): (4-0)^2/(4+0) = 4;  (1,2): (0-2)^2/(0+2) = 2
    # statistic = 7, df = 3, p = chi2_3.sf(7) = 0.0718...
    res = bowker_test(a)
    assert isinstance(res, BowkerResult)
    assert res.statistic == pytest.approx(7.0)
    assert res.df == 3
    assert res.p_value == pytest.approx(_chi2_sf_df3(7.0))
    assert res.p_value == pytest.approx(0.0718, abs=1e-4)


def test_bowker_excludes_empty_pairs():
    a = [[1, 2, 0], [0, 1, 0], [0, 0, 1]]
    # only pair (0,1) has flips: (2-0)^2/2 = 2; pairs (0,2), (1,2) are empty -> df = 1
    # p = erfc(sqrt(2/2)) = erfc(1) = 0.1573
    res = bowker_test(a)
    assert (res.statistic, res.df) == (pytest.approx(2.0), 1)
    assert res.p_value == pytest.approx(_chi2_sf_df1(2.0))
    assert res.p_value == pytest.approx(0.157299, abs=1e-6)


def test_bowker_symmetric_and_degenerate():
    # symmetric counts: every term is 0 -> statistic 0, df 1, p = 1
    res = bowker_test([[0, 3], [3, 0]])
    assert (res.statistic, res.df, res.p_value) == (0.0, 1, pytest.approx(1.0))
    # no off-diagonal flips: nothing to test -> statistic 0, df 0, p NaN
    res = bowker_test(np.diag([5, 5, 5]))
    assert (res.statistic, res.df) == (0.0, 0)
    assert math.isnan(res.p_value)
    with pytest.raises(LabelflipError, match="counts"):
        bowker_test([[0, 0.5], [0.25, 0]])
    with pytest.raises(AttributeError):
        res.df = 3  # frozen


def _realistic_labels(seed: int = 1, n: int = 2000, k: int = 10):
    """Mostly symmetric flips between class pairs (2m, 2m+1), plus a catch-all class 0."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, size=n)
    adv = true ^ 1  # partner class
    catch_all = rng.random(n) < 0.3
    adv = np.where(catch_all, 0, adv)
    failed = rng.random(n) < 0.2
    adv = np.where(failed, true, adv)
    return true, adv, k


def test_symmetry_ci_contains_point_estimate_and_is_reproducible():
    true, adv, k = _realistic_labels()
    s = symmetry_score(flip_matrix(true, adv, k))
    assert 0.2 < s < 0.9
    low, high = symmetry_ci(true, adv, k, seed=7)
    assert low < s < high
    assert high - low < 0.2
    assert symmetry_ci(true, adv, k, seed=7) == (low, high)
    assert symmetry_ci(true, adv, k, seed=8) != (low, high)
    # a narrower level gives a narrower interval inside the wider one
    low50, high50 = symmetry_ci(true, adv, k, seed=7, level=0.5)
    assert low <= low50 < high50 <= high


def test_symmetry_ci_matches_a_naive_bootstrap():
    # Reference: draw the same multinomial replicates (non-zero off-diagonal cells in
    # row-major order, then one category for the rest), rebuild each K x K flip
    # matrix, score it with symmetry_score and re-centre the percentile
    # interval on the point estimate: [s - (median - q05), s + (q95 - median)].
    true, adv, k = _realistic_labels(seed=3, n=300, k=4)
    a = flip_matrix(true, adv, k)
    i, j = np.nonzero(a * ~np.eye(k, dtype=bool))
    n = a.sum()
    probs = np.append(a[i, j], n - a[i, j].sum()) / n
    draws = np.random.Generator(np.random.PCG64(5)).multinomial(n, probs, size=200)
    scores = []
    for d in draws:
        m = np.zeros((k, k))
        m[i, j] = d[:-1]
        scores.append(symmetry_score(m))
    scores = np.array(scores)
    scores = scores[~np.isnan(scores)]
    point = symmetry_score(a)
    q_lo, mid, q_hi = np.quantile(scores, [0.05, 0.5, 0.95])
    expected = [max(point - (mid - q_lo), 0.0), min(point + (q_hi - mid), 1.0)]
    got = symmetry_ci(true, adv, k, n_boot=200, level=0.9, seed=5)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_symmetry_ci_contains_an_estimate_the_percentile_interval_misses():
    # A nearly symmetric matrix with many pairs: resampling makes every pair look
    # less balanced, so almost all replicates score below s. The plain percentile
    # interval then lies below s; the re-centred one contains it.
    a = np.array([[0, 20, 20, 20], [21, 0, 20, 20], [20, 20, 0, 19], [20, 20, 20, 0]])
    true = np.repeat(np.arange(4), a.sum(1))
    adv = np.concatenate([np.repeat(np.arange(4), row) for row in a])
    s = symmetry_score(a)
    i, j = np.nonzero(a * ~np.eye(4, dtype=bool))
    n = a.sum()
    reps = np.random.Generator(np.random.PCG64(1)).multinomial(n, a[i, j] / n, 1000)
    naive = []
    for r in reps:
        m = np.zeros((4, 4))
        m[i, j] = r
        naive.append(symmetry_score(m))
    q_lo, q_hi = np.quantile(naive, [0.025, 0.975])
    assert q_hi < s  # the plain percentile interval misses the estimate
    low, high = symmetry_ci(true, adv, 4, seed=0)
    assert low < s < high
    # same lower half-width as the replicates (the upper end is clipped at 1)
    assert s - low == pytest.approx(np.median(naive) - q_lo, abs=0.03)
    assert high == 1.0


def test_symmetry_ci_respects_mask():
    true, adv, k = _realistic_labels()
    # classes 2..9 without the catch-all landings: only the symmetric pairs remain
    mask = (true >= 2) & (adv != 0)
    low, high = symmetry_ci(true, adv, k, mask=mask, n_boot=200)
    assert symmetry_score(flip_matrix(true, adv, k, mask=mask)) > 0.8
    assert low > 0.7 and high <= 1.0


def test_symmetry_ci_degenerate_cases():
    # no off-diagonal flips at all -> every replicate is NaN
    low, high = symmetry_ci([0, 1, 2], [0, 1, 2], 3)
    assert math.isnan(low) and math.isnan(high)
    # no samples left after the mask
    low, high = symmetry_ci([0, 1], [1, 0], 2, mask=np.array([False, False]))
    assert math.isnan(low) and math.isnan(high)
    # one flip among many failures: replicates without it are NaN and ignored;
    # those with it are one-way (s = 0)
    true = np.zeros(50, dtype=int)
    adv = np.zeros(50, dtype=int)
    adv[0] = 1
    assert symmetry_ci(true, adv, 2, n_boot=200) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_boot": 0}, "n_boot"),
        ({"n_boot": 2.5}, "n_boot"),
        ({"level": 1.0}, "level"),
        ({"level": 0}, "level"),
        ({"mask": [1, 0]}, "boolean"),
        ({"seed": -1}, "seed"),
    ],
)
def test_symmetry_ci_errors(kwargs, match):
    with pytest.raises(LabelflipError, match=match):
        symmetry_ci([0, 1], [1, 0], 2, **kwargs)


def test_symmetry_ci_is_fast():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 10, size=10_000)
    adv = rng.integers(0, 10, size=10_000)
    start = time.perf_counter()
    symmetry_ci(true, adv, 10, n_boot=1000)
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------- attractors


def test_landing_shares_by_hand():
    adv = [1, 2, 1, 0, 1, 2]
    success = np.array([True, True, True, False, True, False])
    # successful landings: 1, 2, 1, 1 -> counts [0, 3, 1] / 4
    np.testing.assert_array_equal(landing_shares(adv, success, 3), [0.0, 0.75, 0.25])
    # nothing succeeded -> all zeros
    np.testing.assert_array_equal(landing_shares(adv, np.zeros(6, bool), 3), [0.0, 0.0, 0.0])
    with pytest.raises(LabelflipError, match="boolean"):
        landing_shares(adv, [1, 1, 1, 0, 1, 0], 3)
    with pytest.raises(LabelflipError, match="one entry per sample"):
        landing_shares(adv, np.ones(5, bool), 3)


def test_normalized_entropy_by_hand():
    # H = 2 * (0.5 log 2) = log 2; log 2 / log 4 = 0.5 (0 log 0 = 0)
    assert normalized_entropy([0.5, 0.5, 0, 0]) == pytest.approx(0.5)
    assert normalized_entropy([0.25] * 4) == pytest.approx(1.0)
    assert normalized_entropy([0, 1, 0]) == 0.0
    # counts are normalised: [2,1,1] -> (0.5, 0.25, 0.25),
    # H = 0.5 log 2 + 0.5 log 4 = 1.5 log 2 -> 1.5 log 2 / log 3 = 0.946395
    assert normalized_entropy([2, 1, 1]) == pytest.approx(1.5 * math.log(2) / math.log(3))
    assert normalized_entropy([2, 1, 1]) == pytest.approx(0.946395, abs=1e-6)
    assert math.isnan(normalized_entropy([0, 0, 0]))
    for bad, match in (([1.0], "at least 2"), ([0.5, -0.5], "negative"), ([np.nan, 1], "NaN")):
        with pytest.raises(LabelflipError, match=match):
            normalized_entropy(bad)


def test_top_attractor_by_hand():
    assert top_attractor([0.0, 0.75, 0.25]) == (1, 0.75)
    assert top_attractor([0.4, 0.2, 0.4]) == (0, 0.4)  # tie -> lowest index
    assert top_attractor([0.0, 0.0]) == (None, 0.0)
    with pytest.raises(LabelflipError, match="empty"):
        top_attractor([])


def test_attractor_summary_by_hand():
    true = [0, 0, 2, 1, 2, 1]
    adv = [1, 2, 1, 0, 1, 2]
    success = np.array([True, True, True, False, True, False])
    out = attractor_summary(true, adv, success, 3)
    assert out["n_success"] == 4
    np.testing.assert_allclose(out["shares"], [0.0, 0.75, 0.25])
    # H = -(0.75 log 0.75 + 0.25 log 0.25) = 0.215762 + 0.346574 = 0.562335;
    # / log 3 (1.098612) = 0.5118595
    assert out["entropy"] == pytest.approx(0.5118595, abs=1e-6)
    assert (out["top_class"], out["top_share"]) == (1, 0.75)
    # true labels of the 4 successes: 0, 0, 2, 2;  baseline[c] = #(true != c) / (2 * 4)
    # c=0: 2/8, c=1: 4/8, c=2: 2/8
    np.testing.assert_allclose(out["baseline_shares"], [0.25, 0.5, 0.25])

    none = attractor_summary(true, adv, np.zeros(6, bool), 3)
    assert none["n_success"] == 0 and none["top_class"] is None
    assert math.isnan(none["entropy"])
    np.testing.assert_array_equal(none["baseline_shares"], [0.0, 0.0, 0.0])
    with pytest.raises(LabelflipError, match="length"):
        attractor_summary(true[:5], adv, success, 3)


# --------------------------------------------------------------------------- correlation


def test_class_distribution_by_hand():
    # counts [1, 1, 3, 0] / 5
    np.testing.assert_allclose(class_distribution([0, 2, 2, 1, 2], 4), [0.2, 0.2, 0.6, 0.0])
    np.testing.assert_array_equal(class_distribution([], 3), [0.0, 0.0, 0.0])
    with pytest.raises(LabelflipError, match=r"\[0, 4\)"):
        class_distribution([0, 4], 4)


def test_rank_correlation_by_hand():
    res = rank_correlation([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert isinstance(res, SpearmanResult)
    # rank differences -1, 1, -1, 1, 0: sum d^2 = 4; rho = 1 - 6*4/(5*(25-1)) = 0.8
    assert res.rho == pytest.approx(0.8)
    # t = rho sqrt((n-2)/(1-rho^2)) = 0.8 sqrt(3/0.36) = 4/sqrt(3), df = 3;
    # Student t_3 two-sided: p = 1 - (2/pi) (x/(1+x^2) + atan x), x = t/sqrt(3) = 4/3
    #   = 1 - (2/pi) (12/25 + atan(4/3)) = 0.104088
    assert res.p_value == pytest.approx(1 - 2 / math.pi * (12 / 25 + math.atan(4 / 3)))
    assert rank_correlation([3, 2, 1], [10, 20, 30]).rho == pytest.approx(-1.0)


def test_rank_correlation_constant_is_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for a, b in (([1, 1, 1], [1, 2, 3]), ([1, 2, 3], [5, 5, 5]), ([1], [2]), ([], [])):
            res = rank_correlation(a, b)
            assert math.isnan(res.rho) and math.isnan(res.p_value)
        rank_correlation([1, 2, 3], [3, 2, 1])  # perfect: p = 0, no divide warning
    with pytest.raises(LabelflipError, match="length"):
        rank_correlation([1, 2, 3], [1, 2])
    with pytest.raises(LabelflipError, match="NaN"):
        rank_correlation([1, np.nan, 3], [1, 2, 3])
    with pytest.raises(LabelflipError, match="1-D"):
        rank_correlation([[1, 2]], [[1, 2]])


def test_flip_distance_correlation_by_hand():
    a = [[0, 3, 1], [2, 0, 2], [1, 1, 0]]
    # row rates: [0, .75, .25], [.5, 0, .5], [.5, .5, 0]
    # symmetrised upper: (0,1) = (.75+.5)/2 = .625, (0,2) = (.25+.5)/2 = .375, (1,2) = .5
    d = [[0, 1, 3], [1, 0, 2], [3, 2, 0]]  # upper: 1, 3, 2
    # ranks: rates 3, 1, 2 vs distances 1, 3, 2 -> d = 2, -2, 0, sum d^2 = 8
    # rho = 1 - 6*8/(3*8) = -1: closer classes flip more
    assert flip_distance_correlation(a, d).rho == pytest.approx(-1.0)

    a4 = np.array([[0, 4, 2, 2], [4, 0, 1, 3], [2, 1, 0, 5], [2, 3, 5, 0]])
    # row sums 8, 8, 8, 10: rates row 3 = [.2, .3, .5, 0]
    # symmetrised upper: (0,1) = (4/8 + 4/8)/2 = .5      (0,2) = (2/8 + 2/8)/2 = .25
    #                    (0,3) = (2/8 + 2/10)/2 = .225   (1,2) = (1/8 + 1/8)/2 = .125
    #                    (1,3) = (3/8 + 3/10)/2 = .3375  (2,3) = (5/8 + 5/10)/2 = .5625
    # ranks: 5, 3, 2, 1, 4, 6
    d4 = np.array([[0, 1, 2, 3], [0, 0, 4, 5], [0, 0, 0, 6], [0, 0, 0, 0]]) * 2.0
    # only the upper triangle is given; (D + D^T)/2 upper = 1, 2, 3, 4, 5, 6 -> ranks 1..6
    # d = 4, 1, -1, -3, -1, 0: sum d^2 = 28; rho = 1 - 6*28/(6*35) = 0.2
    res = flip_distance_correlation(a4, d4)
    assert res.rho == pytest.approx(0.2)
    # D and D^T are the same after symmetrising
    assert flip_distance_correlation(a4, d4.T) == res


def test_flip_distance_correlation_errors():
    a = np.ones((3, 3))
    with pytest.raises(LabelflipError, match="differ in shape"):
        flip_distance_correlation(a, np.ones((4, 4)))
    with pytest.raises(LabelflipError, match="D must be a non-empty square"):
        flip_distance_correlation(a, np.ones((3, 2)))
    with pytest.raises(LabelflipError, match="D contains NaN"):
        flip_distance_correlation(a, [[0, 1, np.nan], [1, 0, 1], [1, 1, 0]])
    # constant distances: no ranking -> NaN, not an error
    assert math.isnan(flip_distance_correlation([[0, 2, 1], [1, 0, 1], [3, 1, 0]], a).rho)


def test_analysis_does_not_import_torch():
    code = "import sys, labelflip.analysis; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_entropy_of_a_single_landing_class_is_plus_zero():
    import math

    h = normalized_entropy([0.0, 3.0, 0.0])
    assert h == 0.0 and math.copysign(1.0, h) == 1.0  # shown as 0.0, not -0.0


# ---------------------------------------------------------------- label space

D3 = np.array([[0.0, 0.2, 0.9], [0.2, 0.0, 0.5], [0.9, 0.5, 0.0]])


def test_flip_distances_and_mean_by_hand():
    true = [0, 0, 1, 2, 2]
    adv = [1, 0, 2, 0, 2]
    assert analysis.flip_distances(true, adv, D3).tolist() == [0.2, 0.0, 0.5, 0.9, 0.0]
    # flips: 0->1 (0.2), 1->2 (0.5), 2->0 (0.9); non-flips are left out of the mean
    assert analysis.mean_flip_distance(true, adv, D3) == pytest.approx((0.2 + 0.5 + 0.9) / 3)
    mask = np.array([True, True, True, False, True])
    assert analysis.mean_flip_distance(true, adv, D3, mask) == pytest.approx(0.35)
    assert math.isnan(analysis.mean_flip_distance([0, 1], [0, 1], D3))


def test_flip_distance_errors():
    with pytest.raises(LabelflipError, match="labels must lie"):
        analysis.flip_distances([0, 3], [1, 1], D3)
    with pytest.raises(LabelflipError, match="square"):
        analysis.mean_flip_distance([0], [1], np.zeros((2, 3)))
    with pytest.raises(LabelflipError, match="boolean"):
        analysis.mean_flip_distance([0], [1], D3, mask=[1])


def test_attack_rate_counts_clean_correct_samples_only():
    true = [0, 1, 2, 2]
    clean = [0, 1, 1, 2]  # sample 2 misclassified before the attack: left out
    adv = [1, 1, 0, 0]
    assert analysis.attack_rate(true, clean, adv) == pytest.approx(2 / 3)
    assert math.isnan(analysis.attack_rate([0], [1], [1]))
    with pytest.raises(LabelflipError, match="one length"):
        analysis.attack_rate([0, 1], [0], [0, 1])


def test_mean_squared_perturbation_is_labelfools_measure():
    # 2x2 RGB image, one pixel changed by (0.1, 0.2, 0.2): ||Δ_p||² = 0.09,
    # ||Δ|| = 0.09 / 4 pixels; l2 of that perturbation is 0.3
    assert analysis.mean_squared_perturbation([0.3], 2, 2) == pytest.approx(0.0225)
    assert analysis.mean_squared_perturbation([0.3, 0.0], 2, 2) == pytest.approx(0.01125)
    assert math.isnan(analysis.mean_squared_perturbation([], 2, 2))
    with pytest.raises(LabelflipError, match="image size"):
        analysis.mean_squared_perturbation([1.0], 0, 2)
