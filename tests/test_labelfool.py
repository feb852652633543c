"""LabelFool's sample generation (Algorithm 1, eqs. 7-9): the closed-form step on
affine classifiers, per-sample early exit, pass counting, the registry entry,
and the whole LabelFool (label selection + generation) on a trained model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labelflip.attacks import ATTACKS, get_attack, labelfool, run_attack, settings_from_mapping
from labelflip.data import load_dataset
from labelflip.errors import LabelflipError
from labelflip.models import Classifier, recipe_for
from labelflip.models.training import TrainSettings, train
from labelflip.targets import TARGET_STRATEGIES, choose_targets

pytestmark = pytest.mark.usefixtures("one_thread")


def _affine(weight: torch.Tensor, bias: torch.Tensor) -> tuple[Classifier, nn.Linear]:
    """``f(x) = W x + b`` over flattened inputs of shape (1, 1, d), bounds wide
    enough that clipping never binds."""
    k, d = weight.shape
    lin = nn.Linear(d, k).double()
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.copy_(bias)
    model = nn.Sequential(nn.Flatten(), lin)
    clf = Classifier(model, num_classes=k, input_shape=(1, 1, d), bounds=(-10, 10))
    return clf.double(), lin


def _inputs(*rows: list[float]) -> torch.Tensor:
    x = torch.tensor(rows, dtype=torch.float64)
    return x.view(len(rows), 1, 1, -1)


def _step(lin: nn.Linear, x: torch.Tensor, t: torch.Tensor, overshoot: float) -> torch.Tensor:
    """One LabelFool step from ``x`` towards ``t``, written per sample:
    ``(1+η) (|k| + 1e-4) / ||w||^2 · w``, ``w = W_t - W_ĝ``, ``k = f_ĝ - f_t``."""
    w_all, b = lin.weight.detach(), lin.bias.detach()
    out = []
    for xi, ti in zip(x.flatten(1), t.tolist(), strict=True):
        f = w_all @ xi + b
        g = int(f.argmax())
        w = w_all[ti] - w_all[g]
        k = f[g] - f[ti]
        out.append((1 + overshoot) * (k.abs() + 1e-4) / w.dot(w) * w)
    return torch.stack(out).view_as(x)


# ---------------------------------------------------------- affine: one step


def test_one_step_on_a_hand_made_affine_classifier():
    # W_2 is orthogonal to w = W_1 - W_0, so class 2 cannot take over on the way
    weight = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [-1, -1, 0, 0]], dtype=torch.float64)
    clf, _ = _affine(weight, torch.tensor([0.1, -0.2, 0.0], dtype=torch.float64))
    x = _inputs([2.0, 1.0, 0.3, -0.2])  # f = (2.1, 0.8, -3.0): ĝ = 0
    r = labelfool(clf, x, torch.tensor([0]), target=torch.tensor([1]), overshoot=0.02)
    # k = 1.3, w = (-1, 1, 0, 0), ||w||^2 = 2
    expected = 1.02 * (1.3 + 1e-4) / 2 * torch.tensor([-1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    assert torch.allclose((r.x_adv - x).flatten(), expected, rtol=1e-7, atol=0)  # +1e-8 in ||w||^2
    assert r.success.tolist() == [True] and r.adv_pred.tolist() == [1]
    assert r.iterations.tolist() == [1]
    assert r.forwards.tolist() == [3] and r.backwards.tolist() == [1]  # initial + grad + check


def test_one_step_matches_the_closed_form_on_a_random_affine_classifier():
    torch.manual_seed(0)
    lin = nn.Linear(12, 6).double()
    clf, lin = _affine(lin.weight.detach(), lin.bias.detach())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 1, 1, 12, generator=g, dtype=torch.float64)
    with torch.no_grad():
        f = clf(x)
    t = f.argsort(1, descending=True)[:, 1]  # the runner-up class
    step = _step(lin, x, t, overshoot=0.02)
    with torch.no_grad():
        lands = clf(x + step).argmax(1) == t  # no third class takes over on the way
    keep = torch.nonzero(lands).squeeze(1)[:20]
    assert len(keep) == 20
    x, t, step = x[keep], t[keep], step[keep]
    r = labelfool(clf, x, f[keep].argmax(1), target=t)
    assert torch.allclose(r.x_adv - x, step, rtol=1e-4, atol=0)
    assert r.iterations.tolist() == [1] * 20 and r.success.all()
    assert torch.equal(r.target, t)


def test_moves_towards_the_target_not_away():
    weight = torch.eye(3, dtype=torch.float64)
    clf, _ = _affine(weight, torch.zeros(3, dtype=torch.float64))
    x = _inputs([2.0, 1.0, -1.0])
    r = labelfool(clf, x, torch.tensor([0]), target=torch.tensor([1]), overshoot=0.0)
    d = (r.x_adv - x).flatten()
    assert d[1] > 0 > d[0]  # f_t up, f_ĝ down
    # without overshoot the point lands (up to the 1e-4 stabiliser) on the boundary
    with torch.no_grad():
        f = clf(r.x_adv).flatten()
    assert 0 < float(f[1] - f[0]) < 2e-4


# ---------------------------------------------- per-sample exit and pass counting


MIXED_X = [
    [2.0, 1.0, -1.0],  # one step from 0 to 1
    [3.0, 0.0, 2.5],  # step 1 lands in class 2 (f = (1.47, 1.53, 2.5)), step 2 in class 1
    [0.0, 1.0, 0.5],  # already predicted as its target 1
    [0.0, 0.0, 4.0],  # one step from 2 to 0
]
MIXED_T = [1, 1, 1, 0]


def _algorithm_1(lin: nn.Linear, x: torch.Tensor, t: int, steps: int, overshoot: float):
    """Algorithm 1 for one sample (our sign, accumulated overshoot): (x_adv, iterations)."""
    w_all, b = lin.weight.detach(), lin.bias.detach()
    x0 = x.flatten()
    p = torch.zeros_like(x0)
    xi, i = x0.clone(), 0
    while int((w_all @ xi + b).argmax()) != t and i < steps:
        f = w_all @ xi + b
        g = int(f.argmax())
        w = w_all[t] - w_all[g]
        p = p + (f[g] - f[t]).abs().add(1e-4) / (w.dot(w) + 1e-8) * w
        xi = (x0 + (1 + overshoot) * p).clamp(-10, 10)
        i += 1
    return xi.view_as(x), i


def test_mixed_batch_exits_per_sample():
    clf, lin = _affine(torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    x = _inputs(*MIXED_X)
    t = torch.tensor(MIXED_T)
    y = clf(x).argmax(1).detach()
    r = labelfool(clf, x, y, target=t)
    assert r.iterations.tolist() == [1, 2, 0, 1]
    assert r.backwards.tolist() == [1, 2, 0, 1]
    assert r.forwards.tolist() == [3, 5, 1, 3]  # 1 + 2 per iteration
    assert r.success.all() and r.adv_pred.tolist() == MIXED_T
    for i in range(len(x)):
        ref, n_iter = _algorithm_1(lin, x[i], MIXED_T[i], 50, 0.02)
        assert torch.allclose(r.x_adv[i], ref, rtol=1e-9, atol=1e-12)
        assert n_iter == int(r.iterations[i])
    # the sample already at its target is returned untouched
    assert torch.equal(r.x_adv[2], x[2]) and float(r.l2[2]) == 0.0


def test_steps_cap_the_iterations_and_skip_the_last_check():
    clf, _ = _affine(torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    x = _inputs(*MIXED_X)
    t = torch.tensor(MIXED_T)
    r = labelfool(clf, x, t, steps=1, target=t)
    assert r.iterations.tolist() == [1, 1, 0, 1]
    assert r.forwards.tolist() == [2, 2, 1, 2] and r.backwards.tolist() == [1, 1, 0, 1]
    assert r.success.tolist() == [True, False, True, True]
    assert r.adv_pred.tolist()[1] == 2  # the third class took over and the cap stopped it


def test_target_is_required_and_settings_are_checked():
    clf, _ = _affine(torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    x = _inputs(*MIXED_X)
    y = torch.tensor([0, 0, 1, 2])
    with pytest.raises(LabelflipError, match="labelfool needs target classes") as info:
        labelfool(clf, x, y)
    assert "\n" not in str(info.value)
    with pytest.raises(LabelflipError, match="needs target classes"):
        run_attack("labelfool", clf, x, y)
    with pytest.raises(LabelflipError, match="steps must be > 0"):
        labelfool(clf, x, y, steps=0, target=y)
    with pytest.raises(LabelflipError, match="overshoot must be >= 0"):
        settings_from_mapping(get_attack("labelfool"), {"overshoot": -1})
    with pytest.raises(LabelflipError, match="target must lie in"):
        labelfool(clf, x, y, target=y + 3)
    empty = labelfool(clf, x[:0], y[:0], target=y[:0])
    assert len(empty) == 0 and empty.target.shape == (0,)


def test_registry_entry():
    spec = get_attack("labelfool")
    assert spec.fn is labelfool and spec.default_target == "labelfool"
    assert spec.accepts_target and "Algorithm 1" in spec.description
    assert not get_attack("deepfool").accepts_target
    assert get_attack("deepfool").default_target is None
    for s in ATTACKS.values():
        assert s.default_target is None or s.default_target in TARGET_STRATEGIES
        assert s.accepts_target or s.default_target is None


# ------------------------------------------------------------- trained model


@pytest.fixture(scope="module")
def digits_model() -> Classifier:
    train_set = load_dataset("digits", "train")
    settings = TrainSettings.from_recipe(recipe_for("digits-cnn"), epochs=5)
    return train("digits-cnn", train_set, settings, progress=False).classifier


@pytest.fixture(scope="module")
def class_distances() -> torch.Tensor:
    """A stand-in class-distance matrix: cosine distances between the class
    means of the training images (symmetric, zero diagonal)."""
    train_set = load_dataset("digits", "train")
    x, y = train_set.x.flatten(1).double(), train_set.y
    means = torch.stack([x[y == c].mean(0) for c in range(10)])
    means = means / means.norm(dim=1, keepdim=True)
    return (1 - means @ means.T).clamp_min(0).fill_diagonal_(0)


def test_labelfool_reaches_its_targets_on_a_trained_model(digits_model, class_distances):
    test_set = load_dataset("digits", "test")
    x, y = test_set.x[:150], test_set.y[:150]
    with torch.no_grad():
        logits = digits_model(x)
    t = choose_targets("labelfool", logits, labels=y, distances=class_distances)
    assert (t != y).all() and (t != logits.argmax(1)).all()
    r = labelfool(digits_model, x, y, target=t)
    correct = r.clean_pred == y
    assert correct.float().mean() > 0.9
    assert r.success[correct].float().mean() >= 0.95
    assert torch.equal(r.success, r.adv_pred == t)
    assert r.iterations.float().mean() < 10
    # the nearest classes cost less than the farthest ones
    far = choose_targets("farthest", logits, labels=y, distances=class_distances)
    r_far = labelfool(digits_model, x, y, target=far)
    both = correct & r.success & r_far.success
    assert r.l2[both].median() < r_far.l2[both].median()


def test_labelfool_is_batch_invariant(digits_model):
    test_set = load_dataset("digits", "test")
    x, y = test_set.x[:12], test_set.y[:12]
    t = (y + 3) % 10
    whole = labelfool(digits_model, x, y, target=t)
    for i in (0, 5, 11):
        one = labelfool(digits_model, x[i : i + 1], y[i : i + 1], target=t[i : i + 1])
        assert torch.allclose(one.x_adv[0], whole.x_adv[i], atol=1e-5)
        assert one.iterations[0] == whole.iterations[i]
