"""ML-C&W (JMA §IV-B; Song et al. 2018) on hand-made linear models whose
optimal perturbations have closed forms: multi-label targets reached at the
minimal L2 distance (with and without confidence), ECOC and one-hot models,
unreachable targets, and the contract every attack keeps (bounds,
determinism, inputs untouched, success from a fresh evaluation, pass counts,
batch invariance, validation)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from labelflip.attacks import (
    AttackResult,
    MLCarliniWagnerSettings,
    get_attack,
    ml_carlini_wagner,
    run_attack,
    settings_from_mapping,
)
from labelflip.errors import LabelflipError
from labelflip.models.classifier import Classifier
from labelflip.models.encoding import OutputEncoding, hadamard_codebook, index_to_bits
from labelflip.targets import choose_targets

# Enough for the linear models below (a large initial constant, few rounds).
FAST = {"binary_search_steps": 5, "steps": 200, "stepsize": 0.01, "initial_const": 1.0}
LABELS, DIM = 4, 8
ROW_NORM = 4 * 2**0.5  # ||w_j|| of the label model


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _label_model() -> Classifier:
    """4 independent labels on 8 inputs: ``z_j = 4 (x_{2j} - x_{2j+1})``. The
    rows have disjoint supports, so the smallest L2 perturbation that gives
    every label ``j`` the margin ``s_j z_j >= γ`` is
    ``sqrt(Σ_j max(0, γ - s_j z_j)^2) / ||w_j||`` (inside the box)."""
    lin = nn.Linear(DIM, LABELS)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        for j in range(LABELS):
            lin.weight[j, 2 * j] = 4.0
            lin.weight[j, 2 * j + 1] = -4.0
    return Classifier(
        nn.Sequential(nn.Flatten(), lin),
        num_classes=LABELS,
        class_names=["rain", "night", "car", "person"],
        input_shape=(1, 1, DIM),
        encoding=OutputEncoding.multilabel(LABELS),
    )


def _inputs(n: int, seed: int = 0) -> torch.Tensor:
    """Inputs well inside the box [0, 1] (the closed forms ignore the bounds)."""
    return 0.3 + 0.4 * torch.rand(n, 1, 1, DIM, generator=_gen(seed))


def _optimum(clf: Classifier, x: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    with torch.no_grad():
        z = clf.outputs(x)
    code = clf.encoding.code(target)
    return ((gamma - code * z).clamp(min=0) / ROW_NORM).square().sum(1).sqrt().double()


def _check_contract(clf: Classifier, x: torch.Tensor, r: AttackResult, target: torch.Tensor):
    """Bounds, shapes and success as a fresh evaluation of the model."""
    assert r.x_adv.shape == x.shape and r.x_adv.dtype == x.dtype
    lo, hi = clf.bounds
    assert float(r.x_adv.min()) >= lo and float(r.x_adv.max()) <= hi
    fresh = clf.predict(r.x_adv)
    assert torch.equal(r.adv_pred, fresh)
    assert torch.equal(r.clean_pred, clf.predict(x))
    assert torch.equal(r.success, fresh == target)
    assert torch.equal(r.target, target)
    assert torch.allclose(r.l2, (r.x_adv - x).flatten(1).double().norm(dim=1))


# ------------------------------------------------------------------- multi-label


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_reaches_flipped_label_vectors_at_the_minimal_distance(bits):
    clf = _label_model()
    x = _inputs(16)
    y = clf.predict(x)
    t = choose_targets(
        {"strategy": "flip-bits", "bits": bits}, clf(x), encoding=clf.encoding, generator=_gen(1)
    )
    r = ml_carlini_wagner(clf, x, y, target=t, **FAST)
    _check_contract(clf, x, r, t)
    assert r.success.all()
    flipped = index_to_bits(r.adv_pred ^ r.clean_pred, LABELS).sum(1)
    assert flipped.tolist() == [bits] * 16
    ratio = r.l2 / _optimum(clf, x, t, 0.0)
    assert float(ratio.min()) >= 1 - 1e-4  # nothing beats the closed form
    assert float(ratio.max()) <= 1.05  # and ML-C&W gets close to it


def test_confidence_is_the_margin_of_every_label():
    clf = _label_model()
    x = _inputs(12, seed=2)
    y = clf.predict(x)
    t = choose_targets("random", clf(x), labels=y, encoding=clf.encoding, generator=_gen(3))
    gamma = 1.0
    r = ml_carlini_wagner(clf, x, y, target=t, confidence=gamma, **FAST)
    _check_contract(clf, x, r, t)
    assert r.success.all()
    with torch.no_grad():
        z = clf.outputs(r.x_adv)
    margins = (clf.encoding.code(t) * z).amin(1)
    assert float(margins.min()) >= gamma - 1e-4
    # every label, flipped or not, is pushed to margin γ: the closed form counts all of them
    ratio = r.l2 / _optimum(clf, x, t, gamma)
    assert float(ratio.min()) >= 1 - 1e-4 and float(ratio.max()) <= 1.02
    plain = ml_carlini_wagner(clf, x, y, target=t, **FAST)
    assert (r.l2 > plain.l2).all()


def test_an_unreachable_target_fails_and_returns_the_input():
    # z_1 = -z_0: the labels 0 and 1 can never be present together
    lin = nn.Linear(DIM, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[0, 0], lin.weight[1, 0] = 4.0, -4.0
        lin.bias[0], lin.bias[1] = -2.0, 2.0
    clf = Classifier(
        nn.Sequential(nn.Flatten(), lin),
        num_classes=2,
        input_shape=(1, 1, DIM),
        encoding=OutputEncoding.multilabel(2),
    )
    x = _inputs(6)
    y = clf.predict(x)
    both = torch.full_like(y, 0b11)
    r = ml_carlini_wagner(clf, x, y, target=both, **FAST)
    _check_contract(clf, x, r, both)
    assert not r.success.any()
    assert torch.equal(r.x_adv, x) and torch.equal(r.adv_pred, y)
    assert (r.iterations > 0).all()


def test_samples_already_at_their_target_are_left_alone():
    clf = _label_model()
    x = _inputs(6)
    y = clf.predict(x)
    t = (y ^ 0b0101).clone()
    t[:2] = y[:2]
    r = ml_carlini_wagner(clf, x, y, target=t, **FAST)
    assert r.success.all()
    assert torch.equal(r.x_adv[:2], x[:2])
    assert r.iterations[:2].tolist() == [0, 0] and r.backwards[:2].tolist() == [0, 0]
    assert r.forwards[:2].tolist() == [1, 1]


def test_pass_counts_and_iteration_limit():
    clf = _label_model()
    x = _inputs(8)
    y = clf.predict(x)
    t = y ^ 0b1111
    for abort_early in (True, False):
        r = ml_carlini_wagner(
            clf, x, y, target=t, binary_search_steps=3, steps=20, abort_early=abort_early
        )
        assert torch.equal(r.forwards, 1 + r.iterations)
        assert torch.equal(r.backwards, r.iterations)
        assert int(r.iterations.max()) <= 60
        if not abort_early:  # every round runs all its steps
            assert r.iterations.tolist() == [60] * 8


def test_bounds_hold_for_inputs_on_the_box_faces():
    clf = _label_model()
    x = _inputs(8)
    x[:4] = (x[:4] > 0.5).float()  # corners of the box
    y = clf.predict(x)
    t = choose_targets("random", clf(x), labels=y, encoding=clf.encoding, generator=_gen(5))
    r = ml_carlini_wagner(clf, x, y, target=t, **FAST)
    _check_contract(clf, x, r, t)
    # (tanh space moves saturated pixels slowly: the corners need not succeed)
    assert r.success[4:].all()


def test_deterministic_and_inputs_untouched():
    clf = _label_model()
    x = _inputs(10)
    y = clf.predict(x)
    t = choose_targets("random", clf(x), labels=y, encoding=clf.encoding, generator=_gen(6))
    xc, yc, tc = x.clone(), y.clone(), t.clone()
    torch.manual_seed(11)
    state = torch.random.get_rng_state()
    a = ml_carlini_wagner(clf, x, y, target=t, generator=_gen(1), **FAST)
    b = ml_carlini_wagner(clf, x, y, target=t, generator=_gen(2), **FAST)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(x, xc) and torch.equal(y, yc) and torch.equal(t, tc)
    assert a.x_adv.data_ptr() != x.data_ptr()
    for f in dataclasses.fields(AttackResult):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        assert (va is None and vb is None) or torch.equal(va, vb), f.name


def test_batch_invariant():
    clf = _label_model()
    x = _inputs(8, seed=4)
    y = clf.predict(x)
    t = choose_targets("flip-bits", clf(x), encoding=clf.encoding, generator=_gen(7))
    whole = run_attack("ml-cw", clf, x, y, FAST, target=t)
    for i in (0, 5):
        one = run_attack("ml-cw", clf, x[i : i + 1], y[i : i + 1], FAST, target=t[i : i + 1])
        assert torch.allclose(one.x_adv[0], whole.x_adv[i], atol=1e-5)
        assert one.iterations[0] == whole.iterations[i]


def test_float64_and_empty_batches():
    clf = _label_model().double()
    x = _inputs(4).double()
    y = clf.predict(x)
    r = ml_carlini_wagner(clf, x, y, target=y ^ 1, **FAST)
    assert r.x_adv.dtype == torch.float64 and r.success.all()
    e = ml_carlini_wagner(clf, x[:0], y[:0], target=y[:0], **FAST)
    assert len(e) == 0 and e.x_adv.shape == (0, 1, 1, DIM)


# ------------------------------------------------------------------ ECOC, one-hot


def _ecoc_model() -> Classifier:
    """A random linear network with 8 outputs decoded by 4 Hadamard codewords,
    on the box [-1, 1]: every codeword is reachable with a margin of at least
    0.85 on all outputs (checked with a linear program when the test was
    written)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8))
    with torch.no_grad():
        net[1].weight.mul_(3.0)
    enc = OutputEncoding.ecoc(hadamard_codebook(4, 8))
    return Classifier(net, num_classes=4, input_shape=(1, 4, 4), bounds=(-1, 1), encoding=enc)


def test_attacks_an_ecoc_model():
    clf = _ecoc_model()
    x = torch.rand(20, 1, 4, 4, generator=_gen(8)) - 0.5
    y = clf.predict(x)
    t = choose_targets("random", clf(x), labels=y, encoding=clf.encoding, generator=_gen(9))
    assert not (t == y).any()
    r = run_attack("ml-cw", clf, x, y, FAST, target=t)
    _check_contract(clf, x, r, t)
    assert r.success.float().mean() >= 0.9
    # with γ = 0 the decision alone counts: decoding forgives wrong bits, so
    # the smallest adversarial need not match the codeword c_t everywhere
    with torch.no_grad():
        z = clf.outputs(r.x_adv[r.success])
    code = clf.encoding.code(t[r.success])
    assert not (torch.sign(z) == code).all()
    # with γ > 0 every output must clear the margin on c_t
    sure = run_attack("ml-cw", clf, x, y, {**FAST, "confidence": 0.5}, target=t)
    _check_contract(clf, x, sure, t)
    assert sure.success.float().mean() >= 0.9
    with torch.no_grad():
        z = clf.outputs(sure.x_adv[sure.success])
    assert float((clf.encoding.code(t[sure.success]) * z).amin()) >= 0.5 - 1e-4
    assert (sure.l2[sure.success] >= r.l2[sure.success]).all()


def test_attacks_a_one_hot_model_with_the_identity_code():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    clf = Classifier(net, num_classes=4, input_shape=(1, 4, 4))
    x = torch.rand(16, 1, 4, 4, generator=_gen(10))
    y = clf.predict(x)
    t = choose_targets("random", clf(x), labels=y, generator=_gen(11))
    settings = {**FAST, "initial_const": 10.0, "stepsize": 0.05}
    r = run_attack("ml-cw", clf, x, y, settings, target=t)
    _check_contract(clf, x, r, t)
    assert r.success.float().mean() >= 0.8


# -------------------------------------------------------------- registry, errors


def test_registry_entry():
    spec = get_attack("ml-cw")
    assert spec.fn is ml_carlini_wagner and spec.settings_type is MLCarliniWagnerSettings
    assert set(spec.encodings) == {"onehot", "ecoc", "multilabel"}
    assert spec.default_target == "random" and spec.accepts_target
    # cw-l2's defaults (Foolbox-compatible)
    assert dataclasses.asdict(spec.default_settings()) == dataclasses.asdict(
        get_attack("cw-l2").default_settings()
    )


def test_untargeted_call_is_refused():
    clf = _label_model()
    x = _inputs(2)
    with pytest.raises(LabelflipError, match="ml-cw is a targeted attack and needs target") as e:
        ml_carlini_wagner(clf, x, clf.predict(x), **FAST)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "settings,match",
    [
        ({"confidence": -1}, "ml-cw: confidence must be >= 0"),
        ({"stepsize": 0}, "stepsize must be > 0"),
        ({"steps": 0}, "steps must be > 0"),
        ({"binary_search_steps": 0}, "binary_search_steps must be >= 1"),
        ({"initial_const": 0}, "initial_const must be > 0"),
        ({"abort_early": 1}, "true or false"),
        ({"confidense": 1}, "did you mean 'confidence'"),
    ],
)
def test_bad_settings_raise_one_line(settings, match):
    with pytest.raises(LabelflipError, match=match) as info:
        settings_from_mapping(get_attack("ml-cw"), settings)
    assert "\n" not in str(info.value)


def test_bad_targets_raise():
    clf = _label_model()
    x = _inputs(3)
    y = clf.predict(x)
    with pytest.raises(LabelflipError, match=r"target must lie in \[0, 15\]"):
        ml_carlini_wagner(clf, x, y, target=y + 16, **FAST)
    with pytest.raises(LabelflipError, match="target must have shape"):
        ml_carlini_wagner(clf, x, y, target=y[:2], **FAST)
