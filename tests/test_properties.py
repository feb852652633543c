"""Property-based tests (hypothesis): the analysis functions on arbitrary
matrices and labels, and the invariants every attack result keeps on random
inputs and a random model. (The relabelling property of ``s`` on count
matrices and its closed form live in test_analysis.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from labelflip.analysis import bowker_test, confusion_matrix, flip_matrix, symmetry_score
from labelflip.attacks import fgsm, pgd
from labelflip.models.classifier import Classifier

FAST = settings(max_examples=60, deadline=None)


def _relabel(a: np.ndarray, perm) -> np.ndarray:
    perm = np.asarray(perm)
    b = np.empty_like(a)
    b[np.ix_(perm, perm)] = a
    return b


@st.composite
def float_matrices(draw, max_k: int = 6):
    k = draw(st.integers(1, max_k))
    values = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)
    a = draw(arrays(np.float64, (k, k), elements=values))
    return a, draw(st.permutations(range(k)))


@FAST
@given(float_matrices())
def test_symmetry_score_in_unit_interval_and_relabelling_invariant(case):
    a, perm = case
    s = symmetry_score(a)
    s_perm = symmetry_score(_relabel(a, perm))
    if math.isnan(s):  # no off-diagonal mass
        assert math.isnan(s_perm)
        assert np.all(a[~np.eye(len(a), dtype=bool)] == 0)
    else:
        assert 0.0 <= s <= 1.0
        assert s_perm == pytest.approx(s, rel=1e-9, abs=1e-12)
        assert symmetry_score(a.T) == pytest.approx(s, rel=1e-9, abs=1e-12)


@st.composite
def count_matrices(draw, max_k: int = 7):
    k = draw(st.integers(2, max_k))
    return draw(arrays(np.int64, (k, k), elements=st.integers(0, 40)))


@FAST
@given(count_matrices())
def test_bowker_p_is_one_for_symmetric_counts(a):
    sym = a + a.T  # n_ij == n_ji for every pair
    res = bowker_test(sym)
    off = sym[np.triu_indices(len(sym), 1)]
    assert res.df == int((off > 0).sum())
    if res.df == 0:
        assert math.isnan(res.p_value)
    else:
        assert res.statistic == 0.0
        assert res.p_value == pytest.approx(1.0)
        assert symmetry_score(sym) == pytest.approx(1.0)


@st.composite
def landings(draw):
    k = draw(st.integers(1, 8))
    n = draw(st.integers(0, 200))
    labels = st.lists(st.integers(0, k - 1), min_size=n, max_size=n)
    true, adv = np.array(draw(labels), int), np.array(draw(labels), int)
    mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
    return k, true, adv, mask


@FAST
@given(landings())
def test_flip_matrix_totals_are_the_sample_counts(case):
    k, true, adv, mask = case
    a = flip_matrix(true, adv, k)
    assert a.sum() == len(true)
    np.testing.assert_array_equal(a.sum(axis=1), np.bincount(true, minlength=k))
    np.testing.assert_array_equal(a.sum(axis=0), np.bincount(adv, minlength=k))
    assert np.trace(a) == int((true == adv).sum())  # the diagonal: failed attacks
    masked = flip_matrix(true, adv, k, mask=mask)
    assert masked.sum() == mask.sum()
    np.testing.assert_array_equal(masked, flip_matrix(true[mask], adv[mask], k))
    np.testing.assert_array_equal(confusion_matrix(true, adv, k), a)


# ------------------------------------------------------------------ attacks


def _model(seed: int) -> Classifier:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 4))
    return Classifier(net, num_classes=4, input_shape=(1, 4, 4), mean=[0.5], std=[0.3])


def _norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    d = d.flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 6),
    eps=st.floats(0.0, 1.0),
    norm=st.sampled_from(["linf", "l2"]),
    attack=st.sampled_from(["fgsm", "pgd"]),
    targeted=st.booleans(),
)
def test_attacks_stay_in_bounds_and_budget_and_leave_inputs_alone(
    seed, n, eps, norm, attack, targeted
):
    clf = _model(seed % 7)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=gen)
    x[0, 0, 0, 0] = 0.0  # touch both bounds
    x[-1, 0, -1, -1] = 1.0
    y = torch.randint(0, 4, (n,), generator=gen)
    target = (y + 1) % 4 if targeted else None
    x0, y0 = x.clone(), y.clone()
    if attack == "fgsm":
        res = fgsm(clf, x, y, eps=eps, norm=norm, target=target)
    else:
        res = pgd(clf, x, y, eps=eps, norm=norm, steps=5, target=target, generator=gen)
    assert torch.equal(x, x0) and torch.equal(y, y0)  # nothing changed in place
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert bool((_norm(res.x_adv - x, norm) <= eps * (1 + 1e-5) + 1e-6).all())
    with torch.no_grad():
        adv_pred = clf(res.x_adv).argmax(1)
    assert torch.equal(res.adv_pred, adv_pred)  # recomputed from the model
    want = adv_pred == target if targeted else adv_pred != y
    assert torch.equal(res.success, want)
    assert torch.equal(res.y, y)
