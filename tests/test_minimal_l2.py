"""The L2 minimal-perturbation attacks ddn, alma and superdeepfool on affine
classifiers, where the answer has a closed form, plus their pass counts,
per-sample bookkeeping and settings (the shared property table in
test_attacks.py covers the rest).

For an affine classifier ``f(x) = W x + b`` and a point of class ``y`` far
from the box's faces, the smallest L2 change that leaves class ``y`` is the
distance to the nearest face of the polyhedron ``{f_y >= f_j for all j}``:
``min_{k≠y} |f_k - f_y| / ||w_k - w_y||_2``. To be classified as a target
``t``, it is ``|f_t - f_y| / ||w_t - w_y||_2`` when the projection onto that
hyperplane is classified ``t`` (the other classes do not get in the way).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from labelflip.attacks import get_attack, run_attack
from labelflip.errors import LabelflipError
from labelflip.models import Classifier

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("ddn", "alma", "superdeepfool")


def _attack(name: str):
    return get_attack(name).fn


def _affine(num_classes: int, scale: float = 1.0, d: int = 12) -> tuple[Classifier, nn.Linear]:
    torch.manual_seed(0)
    lin = nn.Linear(d, num_classes).double()
    with torch.no_grad():
        lin.weight.mul_(scale)
        lin.bias.mul_(scale)
    model = nn.Sequential(nn.Flatten(), lin)
    clf = Classifier(model, num_classes=num_classes, input_shape=(1, 1, d), bounds=(-10, 10))
    return clf.double(), lin


def _distances(lin: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, C): the distance from each x to the hyperplane f_k = f_y of every
    class k (inf for k = y), written as a plain loop."""
    w, b = lin.weight.detach(), lin.bias.detach()
    f = x.flatten(1) @ w.T + b
    out = torch.full((len(x), w.shape[0]), math.inf, dtype=torch.float64)
    for i in range(len(x)):
        k = int(y[i])
        for j in range(w.shape[0]):
            if j != k:
                out[i, j] = (f[i, j] - f[i, k]).abs() / (w[j] - w[k]).norm()
    return out


def _inputs(clf: Classifier, lin: nn.Linear, n: int, separated: float = 1.5):
    """``n`` points whose nearest boundary is at least 0.2 away and at most
    1/``separated`` of the second nearest (a unique, well-defined minimum)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 1, 1, lin.in_features, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = clf(x).argmax(1)
    dist = _distances(lin, x, y).sort(1).values
    keep = torch.nonzero((dist[:, 0] > 0.2) & (dist[:, 1] > separated * dist[:, 0])).squeeze(1)
    keep = keep[:n]
    assert len(keep) == n
    return x[keep], y[keep], dist[keep, 0]


def _targeted_inputs(clf: Classifier, lin: nn.Linear, n: int):
    """``n`` points and targets whose projection onto the (y, t) hyperplane
    is classified ``t``; with the distance to that hyperplane."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(400, 1, 1, lin.in_features, generator=g, dtype=torch.float64)
    c = lin.out_features
    with torch.no_grad():
        y = clf(x).argmax(1)
    t = (y + 1 + torch.randint(0, c - 1, y.shape, generator=g)) % c
    dist = _distances(lin, x, y).gather(1, t[:, None]).squeeze(1)
    w = lin.weight.detach()
    normal = w[t] - w[y]
    step = (dist * (1 + 1e-6) / normal.norm(dim=1))[:, None] * normal
    with torch.no_grad():
        lands = clf((x.flatten(1) + step).view_as(x)).argmax(1) == t
    keep = torch.nonzero(lands & (dist > 0.2)).squeeze(1)[:n]
    assert len(keep) == n
    return x[keep], y[keep], t[keep], dist[keep]


def _relative_excess(r, d: torch.Tensor) -> torch.Tensor:
    assert r.success.all()
    rel = r.l2 / d - 1
    # an adversarial can never be closer than the closed-form minimum
    assert (rel > -1e-9).all(), rel.min()
    return rel


# ------------------------------------------------------------ closed forms


@pytest.mark.parametrize("name, settings", [("ddn", {"steps": 1000}), ("superdeepfool", {})])
def test_binary_affine_reaches_the_closed_form(name, settings):
    # two classes: the cross-entropy gradient (DDN's direction) is the normal
    # itself; DDN's norm moves by factors 1 ± γ, so the smallest adversarial
    # norm it visits nears the boundary to 1e-3 only over many steps
    clf, lin = _affine(2)
    x, y, d = _inputs(clf, lin, 12, separated=1.0)
    r = _attack(name)(clf, x, y, **settings)
    assert (_relative_excess(r, d) < 1e-3).all()


def test_superdeepfool_reaches_the_nearest_boundary():
    # DeepFool's step reaches the nearest hyperplane; the bisection puts the
    # point back onto it (2^-10 of the overshoot 1.02: < 1e-3 relative)
    clf, lin = _affine(6)
    x, y, d = _inputs(clf, lin, 24, separated=1.0)
    r = _attack("superdeepfool")(clf, x, y, candidates=None)
    assert (_relative_excess(r, d) < 1e-3).all()
    # without the bisection the overshoot stays: 2 % beyond the boundary
    raw = _attack("superdeepfool")(clf, x, y, candidates=None, search_steps=0)
    assert torch.allclose(raw.l2, 1.02 * d, rtol=1e-3)


def test_ddn_reaches_the_nearest_boundary_when_the_softmax_is_sharp():
    # DDN steps along the cross-entropy gradient, sum_j p_j (w_j - w_y): the
    # normal of the nearest boundary once the other classes' probabilities
    # vanish there (large logits) and that boundary is well separated
    clf, lin = _affine(6, scale=20.0)
    x, y, d = _inputs(clf, lin, 16)
    r = _attack("ddn")(clf, x, y, steps=1000)
    assert (_relative_excess(r, d) < 1e-3).all()


def test_alma_reaches_the_nearest_boundary():
    clf, lin = _affine(6, scale=5.0)
    x, y, d = _inputs(clf, lin, 16)
    rel = _relative_excess(_attack("alma")(clf, x, y), d)
    # ALMA's iterates keep moving with the decayed learning rate: the median
    # sample is within 1e-3; a few settle within a few percent
    assert rel.median() < 1e-3
    assert (rel < 0.05).all()


@pytest.mark.parametrize(
    "name, settings, scale",
    [
        ("superdeepfool", {"candidates": None}, 1.0),
        ("ddn", {"steps": 1000}, 20.0),
        ("alma", {}, 5.0),
    ],
)
def test_targeted_affine_reaches_the_targets_hyperplane(name, settings, scale):
    clf, lin = _affine(6, scale=scale)
    x, y, t, d = _targeted_inputs(clf, lin, 16)
    r = _attack(name)(clf, x, y, target=t, **settings)
    assert torch.equal(r.adv_pred, t)
    rel = _relative_excess(r, d)
    if name == "superdeepfool":
        assert (rel < 1e-3).all()
    else:
        assert rel.median() < 1e-3


# ------------------------------------------------------------- bookkeeping


def test_pass_counts():
    clf, lin = _affine(6, scale=5.0)
    x, y, _ = _inputs(clf, lin, 8)
    y = y.clone()
    with torch.no_grad():
        y[:2] = (clf(x[:2]).argmax(1) + 1) % 6  # already misclassified: left alone
    for name in ("ddn", "alma"):
        r = _attack(name)(clf, x, y, steps=7)
        assert r.forwards.tolist() == [1, 1] + [8] * 6
        assert r.backwards.tolist() == [0, 0] + [7] * 6
        assert r.iterations.tolist() == [0, 0] + [7] * 6
        assert torch.equal(r.x_adv[:2], x[:2])
    r = _attack("superdeepfool")(clf, x, y)
    assert r.backwards[:2].tolist() == [0, 0] and r.iterations[:2].tolist() == [0, 0]
    assert torch.equal(r.x_adv[:2], x[:2])
    # 1 initial forward; per DeepFool step and per projection one gradient
    # (forward + backward) and one check; 10 bisection forwards at the end
    assert torch.equal(r.forwards[2:], 1 + 2 * r.backwards[2:] + 10)
    assert (r.iterations[2:] >= 1).all() and (r.backwards[2:] >= 2 * r.iterations[2:]).all()


@pytest.mark.parametrize("name", NAMES)
def test_a_sample_is_independent_of_its_batch(name):
    clf, lin = _affine(6, scale=5.0)
    x, y, _ = _inputs(clf, lin, 6)
    settings = {"steps": 50} if name != "superdeepfool" else {}
    whole = _attack(name)(clf, x, y, **settings)
    for i in (0, 4):
        one = _attack(name)(clf, x[i : i + 1], y[i : i + 1], **settings)
        assert torch.allclose(one.x_adv[0], whole.x_adv[i], atol=1e-9)
        assert one.forwards[0] == whole.forwards[i]


def test_ddn_zero_gradient_draws_from_the_generator():
    # all logits 0 around x: the cross-entropy gradient vanishes and DDN
    # steps along a random direction drawn from the generator
    lin = nn.Linear(4, 3).double()
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1, 0] = 1.0
        lin.bias.zero_()
    model = nn.Sequential(nn.Flatten(), lin, nn.ReLU())
    clf = Classifier(model, num_classes=3, input_shape=(1, 1, 4), bounds=(-1, 1)).double()
    x = torch.full((3, 1, 1, 4), -0.5, dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.long)  # argmax of equal logits: class 0
    ddn = _attack("ddn")

    def run(seed: int):
        return ddn(clf, x, y, steps=20, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a.x_adv, b.x_adv)
    assert not torch.equal(a.x_adv, c.x_adv)
    assert a.success.any()  # random steps can reach class 1 (x_0 > 0)


def test_ddn_levels_quantise_the_result():
    clf, lin = _affine(6, scale=5.0)
    x, y, _ = _inputs(clf, lin, 4)
    r = _attack("ddn")(clf, x, y, levels=21, steps=20)  # multiples of 1 in [-10, 10]
    moved = r.x_adv != x
    assert moved.any()
    assert torch.equal(r.x_adv[moved], r.x_adv[moved].round())


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "name, settings, match",
    [
        ("ddn", {"gamma": 1.0}, "gamma must be < 1"),
        ("ddn", {"steps": 0}, "steps must be > 0"),
        ("ddn", {"levels": 1}, "levels must be >= 2"),
        ("alma", {"lr_reduction": 2.0}, "lr_reduction must be <= 1"),
        ("alma", {"alpha": 1.0}, "alpha must be < 1"),
        ("alma", {"gamma": 0.5}, "gamma must be >= 1"),
        ("superdeepfool", {"candidates": 1}, "candidates must be >= 2"),
        ("superdeepfool", {"search_steps": -1}, "search_steps must be >= 0"),
        ("superdeepfool", {"df_steps": 0}, "df_steps must be > 0"),
    ],
)
def test_bad_settings_raise_one_line(name, settings, match):
    with pytest.raises(LabelflipError, match=match) as info:
        get_attack(name).settings(settings)
    assert "\n" not in str(info.value)


def test_alma_needs_three_classes():
    clf, lin = _affine(2)
    x, y, _ = _inputs(clf, lin, 2, separated=1.0)
    with pytest.raises(LabelflipError, match="at least 3 classes"):
        run_attack("alma", clf, x, y)


# ------------------------------------------------ alma: per-sample horizon


def test_alma_decay_steps_stops_each_sample_at_its_horizon():
    clf, lin = _affine(6, scale=5.0)
    x, y, d = _inputs(clf, lin, 16)
    full = _attack("alma")(clf, x, y)
    fast = _attack("alma")(clf, x, y, decay_steps=150)
    # every sample stops 150 iterations after its first adversarial iterate,
    # long before the budget of 1000, and is charged exactly what it ran
    assert (fast.iterations > 150).all() and (fast.iterations < 1000).all()
    assert torch.equal(fast.forwards, 1 + fast.iterations)
    assert torch.equal(fast.backwards, fast.iterations)
    assert (full.iterations == 1000).all()
    # and still reaches the nearest boundary: the median within 1e-3, as the
    # reference schedule does (the shorter decay leaves one of the 16 samples
    # about 7 % out, where the reference leaves every one within 5 %)
    rel = _relative_excess(fast, d)
    assert rel.median() < 1e-3
    assert (rel < 0.1).all()


def test_alma_decay_steps_beyond_the_budget_is_the_reference_schedule():
    clf, lin = _affine(6, scale=5.0)
    x, y, _ = _inputs(clf, lin, 6)
    ref = _attack("alma")(clf, x, y, steps=60)
    capped = _attack("alma")(clf, x, y, steps=60, decay_steps=60)
    assert torch.equal(ref.x_adv, capped.x_adv)
    assert torch.equal(ref.iterations, capped.iterations)


def test_alma_decay_steps_a_sample_is_independent_of_its_batch():
    # stopped samples leave the batch: the others' results must not change
    clf, lin = _affine(6, scale=5.0)
    x, y, _ = _inputs(clf, lin, 6)
    whole = _attack("alma")(clf, x, y, steps=200, decay_steps=20)
    assert len(set(whole.iterations.tolist())) > 1  # samples did stop at different times
    for i in range(len(x)):
        one = _attack("alma")(clf, x[i : i + 1], y[i : i + 1], steps=200, decay_steps=20)
        assert one.iterations[0] == whole.iterations[i]
        assert torch.allclose(one.x_adv[0], whole.x_adv[i], atol=1e-9)
