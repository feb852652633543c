"""Attacks: the property table over every registered attack, DeepFool's closed
forms on affine classifiers, pass counting, registry and input validation."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import inspect
import math

import numpy as np
import pytest
import torch
from torch import nn

from labelflip.attacks import (
    ATTACKS,
    AttackResult,
    DeepFoolSettings,
    PGDSettings,
    carlini_wagner_l2,
    deepfool,
    fgsm,
    get_attack,
    pgd,
    run_attack,
    settings_from_mapping,
)
from labelflip.attacks import _common as common
from labelflip.data import load_dataset
from labelflip.errors import LabelflipError
from labelflip.models import Classifier, recipe_for
from labelflip.models.training import TrainSettings, train

# C&W moves saturated pixels slowly in tanh space: a larger step and
# initial constant make 3 x 30 steps enough on digits.
CW_SETTINGS = {"binary_search_steps": 3, "steps": 30, "stepsize": 0.1, "initial_const": 1.0}

# name, settings; small step counts keep the table fast. Every registered
# attack and every norm it accepts appears (checked by a test below).
VARIANTS = [
    ("fgsm", {"norm": "linf", "eps": 0.1}),
    ("fgsm", {"norm": "l2", "eps": 1.0}),
    ("pgd", {"norm": "linf", "eps": 0.1, "steps": 10}),
    ("pgd", {"norm": "l2", "eps": 1.0, "steps": 10}),
    ("deepfool", {"norm": "l2"}),
    ("deepfool", {"norm": "linf"}),
    ("cw-l2", CW_SETTINGS),
    ("ml-cw", CW_SETTINGS),  # one-hot here; multi-label and ECOC in test_ml_cw.py
    ("labelfool", {}),
    ("jma", {"eps": 0.5, "max_iterations": 40}),  # multi-label and ECOC in test_jma.py
    ("fmn", {"norm": "l0", "steps": 20}),  # closed forms in test_fmn.py
    ("fmn", {"norm": "l1"}),
    ("fmn", {"norm": "l2"}),
    ("fmn", {"norm": "linf"}),
    ("ddn", {"steps": 30}),  # closed forms of ddn, alma, superdeepfool in test_minimal_l2.py
    ("alma", {"steps": 50}),
    ("superdeepfool", {}),
    ("best-of", {"attacks": ["deepfool", "fmn"]}),  # closed forms in test_best_of.py
    ("boundary-profile", {"top_k": 3}),  # closed forms in test_boundary_profile.py
]
# The Foolbox adapter (optional extra): fixed-epsilon attacks in both norms
# and a minimization attack.
HAVE_FOOLBOX = importlib.util.find_spec("foolbox") is not None
FOOLBOX_NORMS = {"LinfPGD": "linf", "FGSM": "linf", "L2PGD": "l2"}
if HAVE_FOOLBOX:
    VARIANTS += [
        ("foolbox", {"attack": "LinfPGD", "epsilon": 0.1, "options": {"steps": 10}}),
        ("foolbox", {"attack": "FGSM", "epsilon": 0.1}),
        ("foolbox", {"attack": "L2PGD", "epsilon": 1.0, "options": {"steps": 10}}),
        ("foolbox", {"attack": "L2DeepFoolAttack"}),
    ]
# The torchattacks adapter (optional extra, installed with --no-deps):
# AutoAttack and its components, in both norms.
HAVE_TORCHATTACKS = importlib.util.find_spec("torchattacks") is not None
TORCHATTACKS_NORMS = {"Linf": "linf", "L2": "l2"}
if HAVE_TORCHATTACKS:
    VARIANTS += [
        ("torchattacks", {"attack": "APGD", "eps": 0.1, "options": {"steps": 10}}),
        ("torchattacks", {"attack": "APGD", "eps": 1.0, "options": {"norm": "L2", "steps": 10}}),
        ("torchattacks", {"attack": "APGDT", "eps": 0.1, "options": {"steps": 10}}),
        ("torchattacks", {"attack": "FAB", "eps": 0.3, "options": {"steps": 10}}),
        ("torchattacks", {"attack": "Square", "eps": 0.1, "options": {"n_queries": 50}}),
        ("torchattacks", {"attack": "AutoAttack", "eps": 0.3}),
    ]


def _id(name: str, settings: dict) -> str:
    if name == "torchattacks":
        norm = settings.get("options", {}).get("norm", "Linf")
        return f"{name}-{settings['attack']}-{norm}"
    return (
        f"{name}-{settings['attack']}"
        if name == "foolbox"
        else f"{name}-{settings.get('norm', 'l2')}"
    )


IDS = [_id(n, s) for n, s in VARIANTS]
TARGETED = {
    *("fgsm", "pgd", "cw-l2", "ml-cw", "labelfool", "jma", "fmn"),
    *("ddn", "alma", "superdeepfool"),
}
EPS_ATTACKS = {"fgsm", "pgd"}


def _supports_target(name: str, settings: dict) -> bool:
    # Foolbox's PGD accepts a target; its FGSM and DeepFool do not; of
    # torchattacks' FAB, Square, APGD, APGDT and AutoAttack the first two do
    return name in TARGETED or settings.get("attack") in ("LinfPGD", "L2PGD", "FAB", "Square")


def _budget(name: str, settings: dict) -> tuple[float, str, dict]:
    """(eps, norm, the same settings with eps 0) of a fixed-epsilon variant."""
    if name == "foolbox":
        eps, norm = settings["epsilon"], FOOLBOX_NORMS[settings["attack"]]
        return eps, norm, {**settings, "epsilon": 0.0}
    if name == "torchattacks":
        norm = TORCHATTACKS_NORMS[settings.get("options", {}).get("norm", "Linf")]
        return settings["eps"], norm, {**settings, "eps": 0.0}
    return settings["eps"], settings["norm"], {**settings, "eps": 0.0}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits_model() -> Classifier:
    train_set = load_dataset("digits", "train")
    settings = TrainSettings.from_recipe(recipe_for("digits-cnn"), epochs=5)
    return train("digits-cnn", train_set, settings, progress=False).classifier


@pytest.fixture(scope="module")
def digits_test():
    test_set = load_dataset("digits", "test")
    return test_set.x, test_set.y


@pytest.fixture(scope="module")
def batch(digits_test):
    x, y = digits_test
    return x[:24].clone(), y[:24].clone()


def _targets(y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (y + 1 + torch.randint(0, 9, y.shape, generator=g)) % 10


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _required_target(name: str, y: torch.Tensor) -> torch.Tensor | None:
    """Targets for an attack that requires them (one with a default target
    strategy, e.g. labelfool), else None: the table runs the rest untargeted."""
    return _targets(y) if get_attack(name).default_target else None


# ---------------------------------------------------------------- property table


def test_table_covers_every_registered_attack_and_norm():
    optional = (set() if HAVE_FOOLBOX else {"foolbox"}) | (
        set() if HAVE_TORCHATTACKS else {"torchattacks"}
    )
    # Type I attacks keep the model's label on purpose: tests/test_type_i.py
    type_i = {name for name, spec in ATTACKS.items() if spec.kind == "type-i"}
    assert type_i == {"type-i", "latent-type-i"}
    assert {name for name, _ in VARIANTS} == set(ATTACKS) - optional - type_i
    for name in ("fgsm", "pgd", "deepfool"):
        norms = {s["norm"] for n, s in VARIANTS if n == name}
        assert norms == {"linf", "l2"}
    assert {s["norm"] for n, s in VARIANTS if n == "fmn"} == {"l0", "l1", "l2", "linf"}


@pytest.mark.parametrize("name,settings", VARIANTS, ids=IDS)
def test_result_shapes_dtypes_bounds_and_success(digits_model, batch, name, settings):
    x, y = batch
    target = _required_target(name, y)
    r = run_attack(name, digits_model, x, y, settings, target=target, generator=_gen())
    n = len(x)
    assert isinstance(r, AttackResult) and len(r) == n
    assert r.x_adv.shape == x.shape and r.x_adv.dtype == x.dtype
    for field in ("y", "clean_pred", "adv_pred", "l0", "iterations", "forwards", "backwards"):
        v = getattr(r, field)
        assert v.shape == (n,) and v.dtype == torch.long, field
    assert r.success.dtype == torch.bool and r.success.shape == (n,)
    for field in ("l1", "l2", "linf"):
        assert getattr(r, field).dtype == torch.float64
    assert r.target is None if target is None else torch.equal(r.target, target)
    lo, hi = digits_model.bounds
    assert float(r.x_adv.min()) >= lo and float(r.x_adv.max()) <= hi
    # success and predictions come from a fresh evaluation of the model
    with torch.no_grad():
        fresh = digits_model(r.x_adv).argmax(1)
        clean = digits_model(x).argmax(1)
    assert torch.equal(r.adv_pred, fresh)
    assert torch.equal(r.clean_pred, clean)
    assert torch.equal(r.success, fresh != y if target is None else fresh == target)
    # norms are those of x_adv - x
    d = (r.x_adv - x).flatten(1).double()
    assert torch.allclose(r.l2, d.norm(dim=1))
    assert torch.allclose(r.linf, d.abs().amax(1))
    assert torch.allclose(r.l1, d.abs().sum(1))
    assert torch.equal(r.l0, (d != 0).sum(1))
    assert (r.iterations >= 0).all() and (r.backwards <= r.forwards).all()
    minimal = (
        *("deepfool", "cw-l2", "labelfool", "fmn", "ddn", "alma", "superdeepfool"),
        *("best-of", "boundary-profile"),
    )
    if name in minimal or settings.get("attack") == "L2DeepFoolAttack":
        assert r.success.float().mean() >= 0.7  # minimal-perturbation attacks succeed


@pytest.mark.parametrize("name,settings", VARIANTS, ids=IDS)
def test_equal_generators_give_identical_results(digits_model, batch, name, settings):
    x, y = batch
    t = _required_target(name, y)
    a = run_attack(name, digits_model, x, y, settings, target=t, generator=_gen(7))
    b = run_attack(name, digits_model, x, y, settings, target=t, generator=_gen(7))
    for f in dataclasses.fields(AttackResult):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        assert (va is None and vb is None) or torch.equal(va, vb), f.name


@pytest.mark.parametrize("name,settings", VARIANTS, ids=IDS)
def test_inputs_are_not_modified(digits_model, batch, name, settings):
    x, y = batch
    xc, yc = x.clone(), y.clone()
    target = _targets(y) if _supports_target(name, settings) else None
    tc = None if target is None else target.clone()
    r = run_attack(name, digits_model, x, y, settings, target=target, generator=_gen())
    assert torch.equal(x, xc) and torch.equal(y, yc)
    assert target is None or torch.equal(target, tc)
    assert r.x_adv.data_ptr() != x.data_ptr()


# (AutoAttack's budget is checked in test_torchattacks_adapter.py: at eps 0
# its Square runs 5000 queries on every sample)
EPS_VARIANTS = [
    v
    for v in VARIANTS
    if v[0] in EPS_ATTACKS
    or "epsilon" in v[1]
    or (v[0] == "torchattacks" and v[1]["attack"] != "AutoAttack")
]


@pytest.mark.parametrize("name,settings", EPS_VARIANTS, ids=[_id(n, s) for n, s in EPS_VARIANTS])
def test_eps_budget_respected_and_eps_zero_returns_input(digits_model, batch, name, settings):
    x, y = batch
    eps, norm_name, zero_settings = _budget(name, settings)
    r = run_attack(name, digits_model, x, y, settings, generator=_gen())
    norm = r.linf if norm_name == "linf" else r.l2
    assert float(norm.max()) <= eps + 1e-6
    zero = run_attack(name, digits_model, x, y, zero_settings, generator=_gen())
    assert torch.equal(zero.x_adv, x)
    assert not zero.success[zero.clean_pred == y].any()


TARGETED_VARIANTS = [
    ("fgsm", {"norm": "linf", "eps": 0.3}, 0.3),
    ("fgsm", {"norm": "l2", "eps": 2.0}, 0.3),
    ("pgd", {"norm": "linf", "eps": 0.3, "steps": 20, "abs_stepsize": 0.05}, 0.8),
    ("pgd", {"norm": "l2", "eps": 3.0, "steps": 20, "abs_stepsize": 0.5}, 0.8),
    ("cw-l2", CW_SETTINGS, 0.6),
    ("ml-cw", CW_SETTINGS, 0.5),  # the ±1 identity code is weaker than f6 on one-hot logits
    ("labelfool", {}, 0.9),
    ("jma", {"eps": 0.5, "max_iterations": 40}, 0.9),
    ("fmn", {"norm": "l2", "steps": 20}, 0.9),
    ("ddn", {"steps": 30}, 0.9),
    ("alma", {"steps": 50}, 0.9),
    ("superdeepfool", {}, 0.9),
]
if HAVE_FOOLBOX:
    TARGETED_VARIANTS.append(
        (
            "foolbox",
            {"attack": "LinfPGD", "epsilon": 0.3, "options": {"steps": 20, "abs_stepsize": 0.05}},
            0.8,
        )
    )
if HAVE_TORCHATTACKS:  # chance is ~0.1-0.2: a minimum-norm and a query-limited search
    TARGETED_VARIANTS += [
        ("torchattacks", {"attack": "FAB", "eps": 1.0, "options": {"steps": 20}}, 0.35),
        ("torchattacks", {"attack": "Square", "eps": 0.3, "options": {"n_queries": 200}}, 0.4),
    ]


@pytest.mark.parametrize("name,settings,rate", TARGETED_VARIANTS)
def test_targeted_variants_hit_targets_more_often_than_chance(
    digits_model, digits_test, name, settings, rate
):
    # chance level: an untargeted attack lands on a random target ~10-20% of the time
    x, y = digits_test
    x, y = x[:40], y[:40]
    target = _targets(y, seed=3)
    r = run_attack(name, digits_model, x, y, settings, target=target, generator=_gen())
    assert torch.equal(r.target, target)
    assert torch.equal(r.success, r.adv_pred == target)
    assert r.success.float().mean() > rate


def test_pgd_random_start_depends_on_the_generator_only(digits_model, batch):
    x, y = batch
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    a = pgd(digits_model, x, y, eps=0.1, steps=2, generator=_gen(1))
    b = pgd(digits_model, x, y, eps=0.1, steps=2, generator=_gen(2))
    c = pgd(digits_model, x, y, eps=0.1, steps=2)  # default generator: seed 0
    d = pgd(digits_model, x, y, eps=0.1, steps=2)
    assert torch.equal(torch.random.get_rng_state(), before)  # global RNG untouched
    assert not torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(c.x_adv, d.x_adv)


def test_pgd_l2_random_start_lies_in_the_ball(digits_model, batch):
    x, y = batch
    wide = Classifier(digits_model.model, num_classes=10, input_shape=(1, 8, 8), bounds=(-5, 5))
    r = pgd(wide, x, y, eps=0.5, norm="l2", steps=1, abs_stepsize=1e-9, generator=_gen())
    assert float(r.l2.max()) <= 0.5 + 1e-6
    assert float(r.l2.min()) > 0.2  # uniform in a 64-d ball: radii concentrate near eps


def test_fgsm_is_one_signed_gradient_step(digits_model, batch):
    x, y = batch
    r = fgsm(digits_model, x, y, eps=0.05)
    xg = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(digits_model(xg), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, xg)
    assert torch.equal(r.x_adv, (x + 0.05 * g.sign()).clamp(0, 1))
    l2 = fgsm(digits_model, x, y, eps=0.5, norm="l2")
    flat = g.flatten(1)
    step = (0.5 * flat / flat.norm(dim=1, keepdim=True)).view_as(x)
    assert torch.allclose(l2.x_adv, (x + step).clamp(0, 1), atol=1e-6)


# ------------------------------------------------------------------ pass counting


def test_pass_counts(digits_model, batch):
    x, y = batch
    n = len(x)
    r = fgsm(digits_model, x, y, eps=0.1)
    assert r.forwards.tolist() == [1] * n and r.backwards.tolist() == [1] * n
    assert r.iterations.tolist() == [1] * n
    r = pgd(digits_model, x, y, eps=0.1, steps=7)
    assert r.forwards.tolist() == [7] * n and r.backwards.tolist() == [7] * n
    assert r.iterations.tolist() == [7] * n
    r = deepfool(digits_model, x, y, steps=50)
    assert torch.equal(r.backwards, r.iterations)
    assert torch.equal(r.forwards, 1 + 2 * r.iterations)  # initial + (gradient + check) per step
    capped = deepfool(digits_model, x, y, steps=1)
    assert capped.iterations.max() == 1
    assert torch.equal(capped.forwards, 1 + capped.iterations)  # no check after the last step
    r = carlini_wagner_l2(digits_model, x, y, binary_search_steps=2, steps=10)
    assert torch.equal(r.forwards, 1 + r.iterations) and torch.equal(r.backwards, r.iterations)
    assert int(r.iterations.max()) <= 20


def test_already_misclassified_samples_are_left_alone(digits_model, digits_test):
    x, y = digits_test
    wrong = y.clone()
    wrong[:4] = (digits_model.predict(x[:4]) + 1) % 10  # labels the model disagrees with
    x, y = x[:8], wrong[:8]
    for r in (deepfool(digits_model, x, y), carlini_wagner_l2(digits_model, x, y, steps=5)):
        assert r.success[:4].all()
        assert torch.equal(r.x_adv[:4], x[:4])
        assert r.iterations[:4].tolist() == [0, 0, 0, 0]
        assert r.backwards[:4].tolist() == [0, 0, 0, 0]


# --------------------------------------------------------- DeepFool on affine models


def _affine(num_classes: int, d: int = 12, seed: int = 0) -> tuple[Classifier, nn.Linear]:
    torch.manual_seed(seed)
    lin = nn.Linear(d, num_classes).double()
    model = nn.Sequential(nn.Flatten(), lin)
    clf = Classifier(model, num_classes=num_classes, input_shape=(1, 1, d), bounds=(-10, 10))
    return clf.double(), lin


def _closed_form(lin: nn.Linear, x: torch.Tensor, k_hat: torch.Tensor, q: float, classes=None):
    """Eqs. (8)-(9): the step to the closest hyperplane, dual norm q (2 or 1).
    Written as a plain per-sample loop, independent of the attack's code."""
    w, b = lin.weight.detach(), lin.bias.detach()
    f = x.flatten(1) @ w.T + b
    out, dists = [], []
    for i in range(len(x)):
        k = int(k_hat[i])
        cands = range(w.shape[0]) if classes is None else classes[i]
        best = None
        for j in cands:
            j = int(j)
            if j == k:
                continue
            wp, fp = w[j] - w[k], f[i, j] - f[i, k]
            dist = fp.abs() / wp.norm(p=q)
            if best is None or dist < best[0]:
                best = (dist, wp, fp)
        dist, wp, fp = best
        step = fp.abs() / wp.norm() ** 2 * wp if q == 2 else dist * wp.sign()
        out.append(step.view_as(x[i]))
        dists.append(dist)
    return torch.stack(out), torch.stack(dists)


def _affine_inputs(clf: Classifier, lin: nn.Linear, n: int, q: float, min_dist: float):
    """``n`` inputs whose closest boundary is at least ``min_dist`` away."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 1, 1, lin.in_features, generator=g, dtype=torch.float64)
    with torch.no_grad():
        k_hat = clf(x).argmax(1)
    _, dist = _closed_form(lin, x, k_hat, q)
    keep = torch.nonzero(dist > min_dist).squeeze(1)[:n]
    assert len(keep) == n
    return x[keep], k_hat[keep]


def test_deepfool_binary_affine_is_eq_3_after_one_iteration():
    clf, lin = _affine(2)
    x, k_hat = _affine_inputs(clf, lin, 10, q=2, min_dist=1.0)
    r = deepfool(clf, x, k_hat, overshoot=0.02)
    r_star, _ = _closed_form(lin, x, k_hat, q=2)
    w = (lin.weight[1] - lin.weight[0]).detach()
    with torch.no_grad():
        f = clf(x)
    # eq. (3) in the binary form r* = -f(x) w / ||w||^2 with f = f_1 - f_0
    eq3 = (-(f[:, 1] - f[:, 0])[:, None] * w / w.norm() ** 2).view_as(x)
    assert torch.allclose(r_star, eq3)
    # the +1e-4 stabiliser on the distance stays below 1e-4 relative (distance > 1)
    assert torch.allclose(r.x_adv - x, 1.02 * r_star, rtol=1e-4, atol=0)
    assert r.iterations.tolist() == [1] * 10 and r.success.all()


@pytest.mark.parametrize("norm,q", [("l2", 2), ("linf", 1)])
def test_deepfool_multiclass_affine_matches_closed_form(norm, q):
    clf, lin = _affine(6)
    x, k_hat = _affine_inputs(clf, lin, 16, q=q, min_dist=0.2)
    r = deepfool(clf, x, k_hat, norm=norm, candidates=None, overshoot=0.02)
    step, dist = _closed_form(lin, x, k_hat, q=q)
    expected = 1.02 * step * ((dist + 1e-4) / dist).view(-1, 1, 1, 1)  # Foolbox's +1e-4
    assert torch.allclose(r.x_adv - x, expected, rtol=1e-6, atol=1e-9)
    assert torch.allclose(r.x_adv - x, 1.02 * step, rtol=1e-3)
    assert r.iterations.tolist() == [1] * 16 and r.success.all()


def test_deepfool_candidates_restrict_to_the_top_logits():
    clf, lin = _affine(6)
    x, k_hat = _affine_inputs(clf, lin, 16, q=2, min_dist=0.2)
    top2 = clf(x).detach().argsort(1, descending=True)[:, :2]
    r = deepfool(clf, x, k_hat, candidates=2, overshoot=0.0)
    step, dist = _closed_form(lin, x, k_hat, q=2, classes=top2)
    assert torch.allclose(r.x_adv - x, step * ((dist + 1e-4) / dist).view(-1, 1, 1, 1))


def test_deepfool_fools_the_trained_model(digits_model, digits_test):
    x, y = digits_test
    x, y = x[:150], y[:150]
    r = deepfool(digits_model, x, y)
    correct = r.clean_pred == y
    assert correct.float().mean() > 0.9
    assert r.success[correct].float().mean() >= 0.99
    assert r.iterations.float().mean() < 10


def test_deepfool_is_batch_invariant(digits_model, digits_test):
    x, y = digits_test
    x, y = x[:12], y[:12]
    whole = deepfool(digits_model, x, y)
    for i in (0, 5, 11):
        one = deepfool(digits_model, x[i : i + 1], y[i : i + 1])
        assert torch.allclose(one.x_adv[0], whole.x_adv[i], atol=1e-5)
        assert one.iterations[0] == whole.iterations[i]


@pytest.mark.parametrize(
    "name, settings",
    [
        ("deepfool", {}),
        ("pgd", {"eps": 0.3, "steps": 10}),
        ("pgd", {"eps": 2.0, "norm": "l2", "steps": 10}),
        ("fgsm", {"eps": 0.1}),
        ("labelfool", {}),
        ("jma", {}),
        ("cw-l2", {"binary_search_steps": 3, "steps": 20}),
        ("ml-cw", {"binary_search_steps": 2, "steps": 20}),
        ("ddn", {"steps": 20}),
        ("alma", {"steps": 30}),
        ("superdeepfool", {}),
    ],
)
def test_cpu_chunking_changes_nothing(digits_model, digits_test, monkeypatch, name, settings):
    # on a CPU the gradient passes run in chunks of samples (caches); the
    # attack must not notice
    x, y = digits_test
    x, y = x[:30], y[:30]
    gen = torch.Generator().manual_seed(3)
    t = _required_target(name, y)
    monkeypatch.setattr(common, "CPU_ROWS_PER_PASS", 10**6)
    whole = run_attack(name, digits_model, x, y, settings, target=t, generator=gen.manual_seed(3))
    monkeypatch.setattr(common, "CPU_ROWS_PER_PASS", 20)  # 2 to 20 samples a chunk
    chunked = run_attack(name, digits_model, x, y, settings, target=t, generator=gen.manual_seed(3))
    assert torch.allclose(whole.x_adv, chunked.x_adv, atol=1e-5)
    assert torch.equal(whole.adv_pred, chunked.adv_pred)
    assert torch.equal(whole.iterations, chunked.iterations)
    assert torch.equal(whole.forwards, chunked.forwards)


def test_output_vjps_paths_agree(digits_model, digits_test):
    # the CPU strategy (one shared forward, a backward per vector) and the
    # accelerator strategy (one replicated batch) must give the same numbers
    x, _ = digits_test
    x = x[:30]
    v = torch.randn(30, 4, digits_model.num_classes, generator=_gen(5))
    shared = common._shared_forward_vjps(digits_model, x, v)
    replicated = common._replicated_vjps(digits_model, x, v)
    assert shared[1].shape == (30, 4, *x.shape[1:])
    # against a plain per-vector reference
    xg = x.clone().requires_grad_(True)
    out = digits_model(xg)
    ref = torch.autograd.grad(out, xg, v[:, 2], retain_graph=True)[0]
    assert torch.allclose(shared[1][:, 2], ref, atol=1e-6)
    for a, b in zip(shared, replicated, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize(
    "name, settings",
    [("deepfool", {}), ("deepfool", {"norm": "linf"}), ("jma", {}), ("superdeepfool", {})],
)
def test_attacks_agree_on_both_gradient_strategies(
    digits_model, digits_test, monkeypatch, name, settings
):
    x, y = digits_test
    x, y = x[:30], y[:30]
    t = _targets(y) if name == "jma" else None
    on_cpu = run_attack(name, digits_model, x, y, settings, target=t, generator=_gen())
    monkeypatch.setattr(common, "SHARED_FORWARD_DEVICES", frozenset())  # as on a GPU
    as_on_gpu = run_attack(name, digits_model, x, y, settings, target=t, generator=_gen())
    assert torch.allclose(on_cpu.x_adv, as_on_gpu.x_adv, atol=1e-5)
    assert torch.equal(on_cpu.adv_pred, as_on_gpu.adv_pred)
    assert torch.equal(on_cpu.iterations, as_on_gpu.iterations)
    assert torch.equal(on_cpu.backwards, as_on_gpu.backwards)


def test_carlini_wagner_is_batch_invariant(digits_model, digits_test):
    x, y = digits_test
    x, y = x[:10], y[:10]
    settings = CW_SETTINGS
    whole = run_attack("cw-l2", digits_model, x, y, settings)
    for i in (0, 7):
        one = run_attack("cw-l2", digits_model, x[i : i + 1], y[i : i + 1], settings)
        assert torch.allclose(one.x_adv[0], whole.x_adv[i], atol=1e-4)
        assert one.iterations[0] == whole.iterations[i]


def test_deepfool_rejects_a_target(digits_model, batch):
    x, y = batch
    with pytest.raises(LabelflipError, match="untargeted"):
        deepfool(digits_model, x, y, target=_targets(y))


# ----------------------------------------------------------------- registry


def test_unknown_attack_name_suggests():
    with pytest.raises(LabelflipError, match="did you mean 'pgd'"):
        get_attack("pgdd")
    with pytest.raises(LabelflipError, match="did you mean 'cw-l2'"):
        get_attack("cw_l2")


def test_unknown_setting_suggests(digits_model, batch):
    x, y = batch
    with pytest.raises(LabelflipError, match="did you mean 'eps'"):
        run_attack("pgd", digits_model, x, y, {"epss": 0.1})
    with pytest.raises(LabelflipError, match="did you mean 'candidates'"):
        settings_from_mapping(get_attack("deepfool"), {"candidate": 3})


@pytest.mark.parametrize(
    "name,settings,match",
    [
        ("pgd", {"eps": -1}, "eps must be >= 0"),
        ("pgd", {"steps": 0}, "steps must be > 0"),
        ("pgd", {"eps": "abc"}, "must be a number"),
        ("pgd", {"eps": True}, "must be a number"),
        ("pgd", {"steps": 2.5}, "must be an integer"),
        ("pgd", {"norm": "l3"}, "norm must be one of linf, l2, got 'l3'; did you mean 'l2'"),
        ("pgd", {"eps": math.nan}, "finite"),
        ("pgd", {"rel_stepsize": 0}, "rel_stepsize must be > 0"),
        ("pgd", {"random_start": 1}, "true or false"),
        ("fgsm", {"norm": "l1"}, "norm must be one of"),
        ("deepfool", {"overshoot": -0.1}, "overshoot must be >= 0"),
        ("deepfool", {"candidates": 1}, "candidates must be >= 2"),
        ("deepfool", {"norm": "l1"}, "norm must be one of"),
        ("cw-l2", {"confidence": -1}, "confidence must be >= 0"),
        ("cw-l2", {"stepsize": 0}, "stepsize must be > 0"),
        ("cw-l2", {"binary_search_steps": 0}, "binary_search_steps must be >= 1"),
        ("cw-l2", {"initial_const": -1.0}, "initial_const must be > 0"),
    ],
)
def test_bad_settings_raise_one_line(name, settings, match):
    with pytest.raises(LabelflipError, match=match) as info:
        settings_from_mapping(get_attack(name), settings)
    assert "\n" not in str(info.value)


def test_eps_beyond_the_input_range_is_rejected(digits_model, batch):
    x, y = batch
    with pytest.raises(LabelflipError, match="exceeds the input range"):
        run_attack("pgd", digits_model, x, y, {"eps": 1.5})
    with pytest.raises(LabelflipError, match="diameter"):
        fgsm(digits_model, x, y, eps=8.5, norm="l2")  # sqrt(64) * (1 - 0) = 8
    fgsm(digits_model, x, y, eps=8.0, norm="l2")


def test_function_defaults_match_settings_defaults():
    for spec in ATTACKS.values():
        params = inspect.signature(spec.fn).parameters
        fields = dataclasses.fields(spec.settings_type)
        for f in fields:
            p = params[f.name]
            assert p.kind is inspect.Parameter.KEYWORD_ONLY, (spec.name, f.name)
            assert p.default == f.default, (spec.name, f.name)
        extra = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert extra - {f.name for f in fields} == {"target", "generator", *spec.needs}


def test_norm_dependent_defaults_resolve():
    s = PGDSettings(norm="l2")
    assert (s.eps, s.steps, s.rel_stepsize) == (0.5, 50, 0.025)
    s = PGDSettings()
    assert (s.eps, s.steps, s.rel_stepsize) == (8 / 255, 40, 0.01 / 0.3)
    assert PGDSettings(eps=0.3, abs_stepsize=0.05).stepsize == 0.05
    assert settings_from_mapping(get_attack("deepfool"), {"steps": 3}) == DeepFoolSettings(steps=3)


def test_summary_and_numpy(digits_model, batch):
    x, y = batch
    r = run_attack("deepfool", digits_model, x, y)
    s = r.summary()
    assert s["n"] == len(x) and s["success_rate"] == float(r.success.float().mean())
    assert s["median_l2"] == pytest.approx(float(np.median(r.l2[r.success].numpy())))
    arrays = r.to_numpy()
    assert "x_adv" not in arrays and arrays["target"].tolist() == [-1] * len(x)
    assert r.to_numpy(include_x=True)["x_adv"].shape == tuple(x.shape)


# ------------------------------------------------------------------ inputs


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda x, y, t: (x.long(), y, t), "floating"),
        (lambda x, y, t: (x[:, :, :4], y, t), "input shape"),
        (lambda x, y, t: (x, y[:-1], t), "shape"),
        (lambda x, y, t: (x, y + 10, t), "must lie in"),
        (lambda x, y, t: (x, y.float(), t), "integer"),
        (lambda x, y, t: (x + 2, y, t), "outside the model's bounds"),
        (lambda x, y, t: (x.clone().fill_(math.nan), y, t), "NaN"),
        (lambda x, y, t: (x, y, t[:-1]), "target must have shape"),
        (lambda x, y, t: (x, y, t - 20), "target must lie in"),
    ],
)
def test_bad_inputs_raise(digits_model, batch, mutate, match):
    x, y = batch
    xb, yb, tb = mutate(x, y, _targets(y))
    with pytest.raises(LabelflipError, match=match):
        pgd(digits_model, xb, yb, eps=0.1, steps=1, target=tb)


def test_generator_must_be_a_generator(digits_model, batch):
    x, y = batch
    with pytest.raises(LabelflipError, match="torch.Generator"):
        fgsm(digits_model, x, y, eps=0.1, generator=123)


def test_empty_batch(digits_model, batch):
    x, y = batch
    for name, settings in VARIANTS:
        t = _required_target(name, y[:0])
        r = run_attack(name, digits_model, x[:0], y[:0], settings, target=t)
        assert len(r) == 0 and r.x_adv.shape == (0, 1, 8, 8)


def test_float64_inputs(digits_model, batch):
    x, y = batch
    # a float64 copy of the model, so that the original fixture stays float32
    clf = Classifier(
        copy.deepcopy(digits_model.model).double(),
        num_classes=10,
        input_shape=(1, 8, 8),
        mean=digits_model.mean.flatten().tolist(),
        std=digits_model.std.flatten().tolist(),
    ).double()
    r = deepfool(clf, x.double(), y)
    assert r.x_adv.dtype == torch.float64 and r.success.float().mean() > 0.9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_follows_the_device_of_x(digits_model, batch):
    x, y = batch
    clf = copy.deepcopy(digits_model).cuda()
    for name, settings in VARIANTS:
        t = _required_target(name, y)
        r = run_attack(name, clf, x.cuda(), y, settings, target=t, generator=_gen())
        assert r.x_adv.device.type == "cuda" and r.success.device.type == "cuda"
        cpu = run_attack(name, digits_model, x, y, settings, target=t, generator=_gen())
        assert (r.success.cpu() == cpu.success).float().mean() > 0.9
