"""FMN (Pintor et al. 2021): closed-form minimal perturbations of affine
classifiers in L2, L∞, L1 and L0, targeted and untargeted; the projections;
the warm start; pass counting; settings. The properties every attack shares
(bounds, success judged by the model, inputs untouched, reproducibility) are
in the table of tests/test_attacks.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from labelflip.attacks import ATTACKS, run_attack
from labelflip.attacks.fmn import (
    FMN_NORMS,
    FMNSettings,
    fmn,
    fmn_from_starts,
    keep_largest,
    lp_norms,
    path_point,
    project_ball,
    project_l1_ball,
)
from labelflip.errors import LabelflipError
from labelflip.models import Classifier

pytestmark = pytest.mark.usefixtures("one_thread")

DUAL = {"l2": 2.0, "linf": 1.0, "l1": math.inf}


def _affine(num_classes: int, d: int = 12, seed: int = 0, bounds=(-10.0, 10.0)):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, num_classes).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(num_classes, d, generator=g, dtype=torch.float64))
        lin.bias.copy_(torch.randn(num_classes, generator=g, dtype=torch.float64))
    model = nn.Sequential(nn.Flatten(), lin)
    clf = Classifier(model, num_classes=num_classes, input_shape=(1, 1, d), bounds=bounds)
    return clf.double(), lin.weight.detach(), lin.bias.detach()


def _inputs(n: int, d: int, seed: int = 1, scale: float = 0.3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, 1, 1, d, generator=g, dtype=torch.float64)


def _half_space_distance(w, b, x, k, j, q):
    """Distance, in the norm dual to ``q``, from ``x`` to the half-space where
    class ``j`` scores at least as high as ``k``: ``|Δf| / ||Δw||_q``
    (Hölder; the box is wide enough not to bind). A plain loop over samples."""
    out = []
    for i in range(len(x)):
        dw = w[j[i]] - w[k[i]]
        df = (x[i].flatten() @ dw) + b[j[i]] - b[k[i]]
        out.append(df.abs() / dw.norm(p=q))
    return torch.stack(out)


def _minimal_point(w, b, x, k, j, norm):
    """A point of the half-space ``f_j >= f_k`` at the distance above: along
    ``Δw`` (L2), ``sign(Δw)`` (L∞) or the largest ``|Δw_i|`` alone (L1)."""
    pts = []
    for i in range(len(x)):
        xi = x[i].flatten()
        dw = w[j[i]] - w[k[i]]
        gap = -((xi @ dw) + b[j[i]] - b[k[i]])  # > 0: j below k now
        if norm == "l2":
            step = gap / dw.norm() ** 2 * dw
        elif norm == "linf":
            step = gap / dw.abs().sum() * dw.sign()
        else:
            m = int(dw.abs().argmax())
            step = torch.zeros_like(dw)
            step[m] = gap / dw[m]
        pts.append((xi + step).view_as(x[i]))
    return torch.stack(pts)


TOLERANCE = {"l2": 1e-3, "linf": 1e-2, "l1": 1e-2}


@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_binary_affine_untargeted_reaches_the_closed_form(norm):
    clf, w, b = _affine(2)
    x = _inputs(24, 12)
    y = clf.predict(x)
    other = 1 - y
    optimum = _half_space_distance(w, b, x, y, other, DUAL[norm])
    r = fmn(clf, x, y, norm=norm, steps=200)
    got = getattr(r, norm)
    assert r.success.all()
    assert (got >= optimum * (1 - 1e-9)).all()  # nothing beats the optimum
    assert torch.allclose(got, optimum, rtol=TOLERANCE[norm], atol=0)


@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_targeted_affine_reaches_the_closed_form(norm):
    # The target region {f_t > f_j for all j} is an intersection of half-spaces;
    # its distance from x is at least that of the half-space {f_t >= f_y}, and
    # equal where the minimal point of that half-space already lands on t:
    # the test keeps those (sample, target) pairs.
    clf, w, b = _affine(5)
    x = _inputs(200, 12)
    y = clf.predict(x)
    g = torch.Generator().manual_seed(2)
    t = (y + 1 + torch.randint(0, 4, y.shape, generator=g)) % 5
    q = DUAL[norm]
    optimum = _half_space_distance(w, b, x, y, t, q)
    closest = _minimal_point(w, b, x, y, t, norm)
    beyond = x + (closest - x) * (1 + 1e-6)
    keep = torch.nonzero(clf.predict(beyond) == t).squeeze(1)[:16]
    assert len(keep) == 16
    x, y, t, optimum = x[keep], y[keep], t[keep], optimum[keep]
    r = fmn(clf, x, y, norm=norm, steps=200, target=t)
    got = getattr(r, norm)
    assert torch.equal(r.adv_pred, t) and r.success.all()
    assert (got >= optimum * (1 - 1e-9)).all()
    assert torch.allclose(got, optimum, rtol=TOLERANCE[norm], atol=0)


@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_multiclass_affine_untargeted_never_beats_the_nearest_boundary(norm):
    # The misclassified region is the union of the half-spaces {f_j > f_y};
    # FMN follows the runner-up class, so it may stop at a farther boundary,
    # never inside the nearest one's distance.
    clf, w, b = _affine(6)
    x = _inputs(24, 12)
    y = clf.predict(x)
    q = DUAL[norm]
    dists = torch.stack(
        [_half_space_distance(w, b, x, y, torch.full_like(y, j), q) for j in range(6)], 1
    )
    dists[torch.arange(len(y)), y] = math.inf
    optimum = dists.min(1).values
    r = fmn(clf, x, y, norm=norm, steps=100)
    got = getattr(r, norm)
    assert r.success.all()
    assert (got >= optimum * (1 - 1e-9)).all()
    # where it lands, it reaches that class's boundary (up to the tolerance)
    landed = dists[torch.arange(len(y)), r.adv_pred]
    assert (got <= landed * (1 + TOLERANCE[norm])).all()


def _min_l0(w: torch.Tensor, f: torch.Tensor, x: torch.Tensor, lo: float, hi: float):
    """Exact minimal L0 perturbation of a binary affine score ``f = w·x + c``
    in the box: coordinate i can move f by at most its own gain (to a box
    edge), independently of the others, so the fewest coordinates are the
    largest gains taken greedily until they exceed ``|f|``."""
    out = []
    for i in range(len(x)):
        s = -torch.sign(f[i])
        xi = x[i].flatten()
        gain = torch.where(s * w > 0, s * w * (hi - xi), s * w * (lo - xi))
        enough = gain.sort(descending=True).values.cumsum(0) > f[i].abs()
        out.append(int(enough.nonzero()[0]) + 1 if bool(enough.any()) else -1)
    return torch.tensor(out)


def test_l0_binary_affine_is_within_one_component_of_the_exact_minimum():
    d = 40
    clf, w, b = _affine(2, d=d, bounds=(0.0, 1.0))
    with torch.no_grad():  # decision boundary through the middle of the box
        clf.model[1].bias.copy_(-w.sum(1) * 0.5)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(48, 1, 1, d, generator=g, dtype=torch.float64)
    scores = clf(x).detach()
    y = scores.argmax(1)
    kstar = _min_l0(w[1] - w[0], scores[:, 1] - scores[:, 0], x, 0.0, 1.0)
    assert (kstar > 0).all() and kstar.max() >= 3
    r = fmn(clf, x, y, norm="l0", steps=100)
    assert r.success.all()
    assert (r.l0 >= kstar).all()  # the minimum is exact
    assert (r.l0 <= kstar + 1).all()
    assert (r.l0 == kstar).float().mean() >= 0.75


def test_first_order_estimate_does_not_stall_on_an_affine_boundary():
    # On an affine model the first ε-step is the exact distance and the
    # δ-step lands on the boundary (a tie); the paper's rule would keep it there.
    clf, w, b = _affine(2)
    x = _inputs(24, 12)
    y = clf.predict(x)
    r = fmn(clf, x, y, norm="l2", steps=3)
    assert r.success.all()


# --------------------------------------------------------------------- projections


def _l1_projection_by_bisection(v: torch.Tensor, eps: float) -> torch.Tensor:
    """Soft threshold θ found by bisection on ||max(|v| - θ, 0)||_1 = eps."""
    if v.abs().sum() <= eps:
        return v
    lo, hi = 0.0, float(v.abs().max())
    for _ in range(200):
        mid = (lo + hi) / 2
        if (v.abs() - mid).clamp_min(0).sum() > eps:
            lo = mid
        else:
            hi = mid
    return (v.abs() - hi).clamp_min(0) * v.sign()


def test_l1_projection_matches_a_bisection_and_is_the_nearest_point():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(20, 30, generator=g, dtype=torch.float64)
    eps = torch.rand(20, generator=g, dtype=torch.float64) * 10
    eps[0], eps[1] = 0.0, math.inf
    p = project_l1_ball(v, eps)
    for i in range(20):
        e = float(eps[i])
        expected = v[i] if math.isinf(e) else _l1_projection_by_bisection(v[i], e)
        assert torch.allclose(p[i], expected, atol=1e-9)
        assert float(p[i].abs().sum()) <= e + 1e-9
    assert torch.equal(p[1], v[1]) and torch.equal(p[0], torch.zeros_like(v[0]))
    # no other point of the ball is closer (random feasible candidates)
    i = 5
    cand = torch.randn(500, 30, generator=g, dtype=torch.float64)
    cand = cand / cand.abs().sum(1, keepdim=True) * float(eps[i]) * torch.rand(500, 1, generator=g)
    assert float((p[i] - v[i]).norm()) <= float((cand - v[i]).norm(dim=1).min())


def test_l0_projection_keeps_exactly_the_largest_components():
    v = torch.tensor([[0.1, -3.0, 2.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    out = keep_largest(v, torch.tensor([2.0, 3.0]))
    assert out[0].tolist() == [0.0, -3.0, 2.0, 0.0, 0.0]  # a tie keeps the first
    assert int((out[1] != 0).sum()) == 3
    assert torch.equal(keep_largest(v, torch.tensor([0.0, 5.0]))[1], v[1])


@pytest.mark.parametrize("norm", FMN_NORMS)
def test_projection_lands_in_the_ball_and_leaves_points_inside_alone(norm):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(10, 16, generator=g, dtype=torch.float64)
    eps = torch.full((10,), 4.0 if norm == "l0" else 0.7, dtype=torch.float64)
    p = project_ball(v, eps, norm)
    assert (lp_norms(p, norm) <= eps + 1e-9).all()
    big = torch.full((10,), 16.0 if norm == "l0" else math.inf, dtype=torch.float64)
    assert torch.equal(project_ball(v, big, norm), v)


@pytest.mark.parametrize("norm", FMN_NORMS)
def test_warm_start_paths_run_from_zero_to_the_start(norm):
    g = torch.Generator().manual_seed(0)
    d1 = torch.randn(6, 10, generator=g, dtype=torch.float64)
    zero = path_point(d1, torch.zeros(6, dtype=torch.float64), norm)
    one = path_point(d1, torch.ones(6, dtype=torch.float64), norm)
    assert torch.equal(zero, torch.zeros_like(d1)) and torch.allclose(one, d1)
    half = path_point(d1, torch.full((6,), 0.5, dtype=torch.float64), norm)
    # coordinates shrink towards 0 without changing sign (so the box holds)
    assert ((half * d1) >= 0).all() and (half.abs() <= d1.abs()).all()


# ----------------------------------------------------------- warm start and counting


def test_warm_start_bisects_to_the_boundary_and_counts_passes():
    clf, w, b = _affine(2)
    x = _inputs(10, 12)
    y = clf.predict(x)
    optimum = _half_space_distance(w, b, x, y, 1 - y, 2.0)
    far = _minimal_point(w, b, x, y, 1 - y, "l2")
    starts = x + (far - x) * 3.0  # adversarial, three times the minimal distance
    starts[:2] = x[:2]  # not adversarial: these start from x
    r = fmn_from_starts(clf, x, y, starts, FMNSettings(steps=1), binary_search_steps=12)
    # one step evaluates the bisected start: within 3 * 2**-12 of the boundary
    assert r.success[2:].all() and not r.success[:2].any()
    assert torch.allclose(r.l2[2:], optimum[2:], rtol=3 * 2**-12 + 1e-12)
    assert r.forwards.tolist() == [2, 2] + [14] * 8  # check + bisection + step
    assert r.backwards.tolist() == [0] * 10 and r.iterations.tolist() == [1] * 10
    longer = fmn_from_starts(clf, x, y, starts, FMNSettings(steps=200))
    assert longer.success.all()
    assert torch.allclose(longer.l2, optimum, rtol=1e-3)


def test_warm_start_rejects_bad_starting_points():
    clf, _, _ = _affine(2)
    x = _inputs(4, 12)
    y = clf.predict(x)
    with pytest.raises(LabelflipError, match="shape of x"):
        fmn_from_starts(clf, x, y, x[:2])
    with pytest.raises(LabelflipError, match="floating-point"):
        fmn_from_starts(clf, x, y, x.long())
    with pytest.raises(LabelflipError, match="outside the model's bounds"):
        fmn_from_starts(clf, x, y, x + 100)
    with pytest.raises(LabelflipError, match="binary_search_steps"):
        fmn_from_starts(clf, x, y, x, binary_search_steps=-1)


def test_pass_counts_and_early_exit_of_misclassified_samples():
    clf, _, _ = _affine(4)
    x = _inputs(8, 12)
    pred = clf.predict(x)
    y = pred.clone()
    y[:3] = (pred[:3] + 1) % 4  # the model already errs on these
    r = fmn(clf, x, y, norm="linf", steps=7)
    assert r.iterations.tolist() == [1, 1, 1] + [7] * 5
    assert torch.equal(r.forwards, r.iterations)
    # a gradient per step, but none at the last step (it only checks its point)
    assert r.backwards.tolist() == [1, 1, 1] + [6] * 5
    assert r.success[:3].all() and torch.equal(r.x_adv[:3], x[:3])


def test_a_sample_never_made_adversarial_returns_x_and_fails():
    clf, _, _ = _affine(3)
    x = _inputs(6, 12)
    y = clf.predict(x)
    r = fmn(clf, x, y, steps=1)  # the only evaluated point is x itself
    assert not r.success.any() and torch.equal(r.x_adv, x)
    assert r.iterations.tolist() == [1] * 6 and r.backwards.tolist() == [0] * 6


def test_deterministic_and_independent_of_the_generator_and_global_rng():
    clf, _, _ = _affine(5)
    x = _inputs(10, 12)
    y = clf.predict(x)
    before = torch.random.get_rng_state()
    a = fmn(clf, x, y, norm="l1", steps=20, generator=torch.Generator().manual_seed(1))
    b = fmn(clf, x, y, norm="l1", steps=20, generator=torch.Generator().manual_seed(2))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a.x_adv, b.x_adv)


def test_chunks_give_the_same_result_as_single_samples():
    clf, _, _ = _affine(5)
    x = _inputs(10, 12)
    y = clf.predict(x)
    whole = fmn(clf, x, y, norm="linf", steps=30)
    for i in (0, 7):
        one = fmn(clf, x[i : i + 1], y[i : i + 1], norm="linf", steps=30)
        assert torch.allclose(one.x_adv[0], whole.x_adv[i], atol=1e-12)


# ------------------------------------------------------------------------ settings


def test_registered_with_its_settings_and_validated():
    spec = ATTACKS["fmn"]
    assert spec.settings_type is FMNSettings and spec.accepts_target
    s = FMNSettings()
    assert (s.steps, s.alpha_init, s.alpha_end, s.gamma_init, s.gamma_final) == (
        10,
        1.0,
        0.01,
        0.05,
        0.001,
    )
    clf, _, _ = _affine(2)
    x = _inputs(2, 12)
    y = clf.predict(x)
    with pytest.raises(LabelflipError, match="did you mean 'linf'"):
        run_attack("fmn", clf, x, y, {"norm": "lnf"})
    with pytest.raises(LabelflipError, match="gamma_init must be < 1"):
        fmn(clf, x, y, gamma_init=1.5)
    with pytest.raises(LabelflipError, match="steps must be > 0"):
        run_attack("fmn", clf, x, y, {"steps": 0})
    with pytest.raises(LabelflipError, match="did you mean 'steps'"):
        run_attack("fmn", clf, x, y, {"stepz": 3})
