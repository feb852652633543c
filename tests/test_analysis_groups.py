"""Within-group flips (analysis/groups.py) on hand-computed flip matrices."""

import math

import numpy as np
import pytest

from labelflip.analysis import groups
from labelflip.errors import LabelflipError


def test_group_ids_in_first_appearance_order():
    assert groups.group_ids(["animal", "vehicle", "animal", "x"]).tolist() == [0, 1, 0, 2]


def test_share_and_uniform_null_by_hand():
    # 4 classes, groups {0, 1} and {2, 3}; flips 0->1: 3, 0->2: 1, 1->0: 2,
    # 2->3: 4, 3->1: 2 (and a diagonal that must not count)
    A = np.zeros((4, 4))
    A[0, 1], A[0, 2], A[1, 0], A[2, 3], A[3, 1] = 3, 1, 2, 4, 2
    A[np.diag_indices(4)] = 50
    r = groups.within_group_flips(A, ["a", "a", "b", "b"])
    assert (r.n_flips, r.n_within) == (12, 9)
    assert r.share == pytest.approx(0.75)
    # every class has 1 of its 3 other classes in its group
    assert r.expected_uniform == pytest.approx(1 / 3)
    # P(Binomial(12, 1/3) >= 9) = (220*8 + 66*4 + 12*2 + 1) / 3**12
    assert r.p_uniform == pytest.approx(2049 / 3**12, rel=1e-9)


def test_margins_null_reproduces_a_quasi_independent_matrix():
    # off-diagonal m_ij = a_i * b_j with a = (1, 2, 3), b = (1, 1, 2): the fit is the matrix
    A = np.array([[0, 1, 2], [2, 0, 4], [3, 3, 0]], dtype=float)
    m = groups.quasi_independence(A)
    np.testing.assert_allclose(m, A, atol=1e-8)
    r = groups.within_group_flips(A, [0, 0, 1])
    # rows 0 and 1 stay in group {0, 1} with probability 1/3 (1/3 and 2/6), row 2 never
    assert r.expected_margins == pytest.approx((3 / 3 + 6 / 3) / 15)
    assert r.share == pytest.approx(3 / 15)  # the data equal the null


def test_margins_null_follows_attractors_where_uniform_does_not():
    # every flip lands in class 3 (a catch-all), whose group holds classes 2 and 3:
    # under margins only class 2's flips can stay within, and they all do
    A = np.zeros((4, 4))
    A[0, 3], A[1, 3], A[2, 3] = 5, 5, 5
    r = groups.within_group_flips(A, [0, 0, 1, 1])
    assert r.share == pytest.approx(5 / 15)
    assert r.expected_uniform == pytest.approx(1 / 3)
    assert r.expected_margins == pytest.approx(5 / 15)
    assert r.p_margins == pytest.approx(1.0)


def test_upper_tail_of_a_sum_of_binomials():
    n, p = np.array([1, 1]), np.array([0.5, 0.25])
    assert groups._upper_tail(n, p, 0) == pytest.approx(1.0)
    assert groups._upper_tail(n, p, 1) == pytest.approx(1 - 0.5 * 0.75)
    assert groups._upper_tail(n, p, 2) == pytest.approx(0.125)


def test_no_flips_gives_nan():
    r = groups.within_group_flips(np.eye(3) * 7, [0, 0, 1])
    assert r.n_flips == 0 and math.isnan(r.share) and math.isnan(r.p_margins)


@pytest.mark.parametrize(
    "A, g, msg",
    [
        (np.zeros((3, 3)), [0, 1], "one group per class"),
        (np.full((2, 2), 0.5), [0, 1], "whole-number"),
        (np.zeros((2, 3)), [0, 1], "square"),
    ],
)
def test_bad_input_is_one_clear_error(A, g, msg):
    with pytest.raises(LabelflipError, match=msg):
        groups.within_group_flips(A, g)
