"""analysis.boundary on a hand-made profile whose every answer is worked out
below by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labelflip.analysis import (
    boundary_distance_correlation,
    boundary_margin,
    class_boundary_matrix,
    lands_at_nearest,
    nearest_boundary,
    nearest_landing_matrix,
    nearest_landing_rate,
)
from labelflip.errors import LabelflipError

INF, NAN = math.inf, math.nan

# Six samples, three classes. Row n: distance to the boundary of each class.
P = np.array(
    [
        [INF, 1.0, 2.0],  # true 0: nearest 1, second 2.0 -> margin 1.0, relative 1.0
        [INF, 3.0, 0.5],  # true 0: nearest 2, second 3.0 -> margin 2.5, relative 5.0
        [INF, 2.0, 2.0],  # true 0: a tie -> nearest 1 (the first), margin 0
        [0.4, INF, INF],  # true 1: nearest 0, no second -> margin inf
        [INF, INF, INF],  # true 2: nothing found -> no nearest, margin NaN
        [NAN, NAN, NAN],  # true 2: row never written -> left out everywhere
    ]
)
TRUE = np.array([0, 0, 0, 1, 2, 2])


def test_nearest_boundary():
    assert nearest_boundary(P).tolist() == [1, 2, 1, 0, -1, -1]
    assert nearest_boundary(np.zeros((0, 3))).shape == (0,)


def test_class_boundary_matrix_is_the_median_per_true_class():
    b = class_boundary_matrix(P, TRUE)
    # class 0 (rows 0-2): column 1 median(1, 3, 2) = 2; column 2 median(2, 0.5, 2) = 2
    # class 1 (row 3): 0.4 to class 0, inf to class 2
    # class 2 (row 4; row 5 is not written): inf, inf
    expected = np.array([[NAN, 2.0, 2.0], [0.4, NAN, INF], [INF, INF, NAN]])
    np.testing.assert_array_equal(b, expected)
    # without row 1: column 1 median(1, 2) = 1.5, column 2 median(2, 2) = 2
    mask = np.array([True, False, True, True, True, True])
    np.testing.assert_array_equal(class_boundary_matrix(P, TRUE, mask)[0], [NAN, 1.5, 2.0])
    # a class without samples has a NaN row; an even count with one failure
    # in the two middle values has median inf
    two = np.array([[INF, 1.0, INF], [INF, 2.0, 3.0]])
    b2 = class_boundary_matrix(two, np.array([0, 0]))
    np.testing.assert_array_equal(b2[0], [NAN, 1.5, INF])
    assert np.isnan(b2[1:]).all()


def test_nearest_landing_matrix_counts_the_nearest_classes():
    # rows 0, 2 -> (0, 1); row 1 -> (0, 2); row 3 -> (1, 0); rows 4, 5 have none
    expected = np.array([[0, 2, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(nearest_landing_matrix(P, TRUE), expected)
    mask = np.array([False, True, True, True, True, True])
    assert nearest_landing_matrix(P, TRUE, mask)[0].tolist() == [0, 1, 1]


def test_boundary_margin_absolute_and_relative():
    np.testing.assert_array_equal(boundary_margin(P), [1.0, 2.5, 0.0, INF, NAN, NAN])
    np.testing.assert_array_equal(boundary_margin(P, relative=True), [1.0, 5.0, 0.0, INF, NAN, NAN])
    # a misclassified sample: d1 = 0 < d2 -> relative inf; d1 = d2 = 0 -> 0
    zero = np.array([[0.0, 2.0, INF], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(boundary_margin(zero, relative=True), [INF, 0.0])


def test_lands_at_nearest_and_the_rate():
    adv = np.array([1, 1, 2, 0, 1, 0])
    # row 0: P=1 = d1 yes; row 1: P=3 > 0.5 no; row 2: P=2 = d1 (a tie) yes;
    # row 3: 0.4 yes; row 4: no boundary; row 5: not written
    assert lands_at_nearest(P, adv).tolist() == [True, False, True, True, False, False]
    # tolerance 5: row 1's 3 <= (1 + 5) * 0.5
    assert lands_at_nearest(P, adv, tolerance=5.0)[1]
    assert not lands_at_nearest(P, np.array([-1, 1, 2, 0, 1, 0]))[0]  # -1: no class
    success = np.array([True, True, True, False, True, True])
    # counted: successful rows with a nearest boundary = rows 0, 1, 2 -> 2 of 3
    assert nearest_landing_rate(P, adv, success) == pytest.approx(2 / 3)
    assert nearest_landing_rate(P, adv, success, tolerance=5.0) == 1.0
    assert math.isnan(nearest_landing_rate(P, adv, np.zeros(6, dtype=bool)))


def test_boundary_distance_correlation():
    b = np.array([[NAN, 1.0, 4.0], [3.0, NAN, 2.0], [6.0, 4.0, NAN]])
    # symmetrised upper triangle: (0,1) 2, (0,2) 5, (1,2) 3
    d = np.array([[0, 1, 3], [1, 0, 2], [3, 2, 0]], dtype=float)  # 1, 3, 2: same order
    res, n = boundary_distance_correlation(b, d)
    assert n == 3 and res.rho == pytest.approx(1.0)
    res, n = boundary_distance_correlation(b, 4 - d)  # reversed order
    assert n == 3 and res.rho == pytest.approx(-1.0)
    b[1, 2] = INF  # the pair (1, 2) is left out
    assert boundary_distance_correlation(b, d)[1] == 2


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: nearest_boundary(np.ones(3)), "must be an"),
        (lambda: nearest_boundary(np.ones((2, 1))), "K >= 2"),
        (lambda: nearest_boundary(-np.ones((2, 2))), "negative"),
        (lambda: class_boundary_matrix(P, TRUE[:3]), "differ in length"),
        (lambda: class_boundary_matrix(P, TRUE + 1), r"\[0, 3\)"),
        (lambda: class_boundary_matrix(P, TRUE, np.ones(6)), "boolean"),
        (lambda: lands_at_nearest(P, np.array([3, 0, 0, 0, 0, 0])), "classes in"),
        (lambda: lands_at_nearest(P, np.zeros(5, dtype=int)), "one entry per sample"),
        (lambda: lands_at_nearest(P, np.zeros(6, dtype=int), tolerance=-1), "tolerance"),
        (lambda: boundary_distance_correlation(np.zeros((2, 2)), np.zeros((3, 3))), "shape"),
    ],
)
def test_bad_input_is_one_line(call, match):
    with pytest.raises(LabelflipError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
