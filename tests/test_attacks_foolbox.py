"""Agreement with Foolbox 3 on a digits model trained in a fixture: success
rates within 2 points and median norms (over successful samples) within 5 %
on the same inputs, with matching settings; and the Foolbox adapter (the
``foolbox`` attack): equal to direct Foolbox calls, failures reported as
failures, determinism, one-line errors, Foolbox and numba missing."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch

from labelflip.attacks import get_attack, run_attack
from labelflip.data import load_dataset
from labelflip.errors import LabelflipError
from labelflip.models import recipe_for
from labelflip.models.training import TrainSettings, train

fb = pytest.importorskip("foolbox")

N = 200


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    train_set = load_dataset("digits", "train")
    test_set = load_dataset("digits", "test")
    settings = TrainSettings.from_recipe(recipe_for("digits-cnn"), epochs=5)
    clf = train("digits-cnn", train_set, settings, progress=False).classifier
    # the Classifier normalises inside, so Foolbox wraps it without preprocessing
    fmodel = fb.PyTorchModel(clf, bounds=clf.bounds)
    return clf, fmodel, test_set.x[:N].clone(), test_set.y[:N].clone()


def _foolbox_stats(x, x_adv, success, norm):
    d = (x_adv - x).flatten(1).double()
    v = d.norm(dim=1) if norm == "l2" else d.abs().amax(1)
    return float(success.float().mean()), float(v[success].quantile(0.5))


def _compare(ours, theirs, norm):
    rate, med = ours.summary()["success_rate"], ours.summary()[f"median_{norm}"]
    fb_rate, fb_med = theirs
    assert abs(rate - fb_rate) <= 0.02, (rate, fb_rate)
    assert med == pytest.approx(fb_med, rel=0.05), (med, fb_med)


def test_fgsm_equals_foolbox(setup):
    clf, fmodel, x, y = setup
    ours = run_attack("fgsm", clf, x, y, {"eps": 0.1})
    _, clipped, success = fb.attacks.FGSM()(fmodel, x, y, epsilons=0.1)
    assert torch.allclose(ours.x_adv, clipped, atol=1e-6)
    assert torch.equal(ours.success, success)


@pytest.mark.parametrize(
    "norm,eps,attack",
    [("linf", 0.1, "LinfPGD"), ("l2", 0.7, "L2PGD")],
)
def test_pgd_agrees_with_foolbox(setup, norm, eps, attack):
    clf, fmodel, x, y = setup
    # Foolbox draws its random start from the global RNG: seed it like our
    # generator (inside fork_rng, so the suite's RNG is untouched). For L∞ both
    # then draw the same uniform start; for L2 the samplers differ, so only the
    # statistics can agree.
    ours = run_attack(
        "pgd", clf, x, y, {"eps": eps, "norm": norm}, generator=torch.Generator().manual_seed(3)
    )
    with torch.random.fork_rng():
        torch.manual_seed(3)
        _, clipped, success = getattr(fb.attacks, attack)()(fmodel, x, y, epsilons=eps)
    _compare(ours, _foolbox_stats(x, clipped, success, "l2"), "l2")
    if norm == "linf":
        assert torch.allclose(ours.x_adv, clipped, atol=1e-6)


def test_pgd_without_random_start_equals_foolbox(setup):
    clf, fmodel, x, y = setup
    ours = run_attack("pgd", clf, x, y, {"eps": 0.1, "random_start": False})
    _, clipped, success = fb.attacks.LinfPGD(random_start=False)(fmodel, x, y, epsilons=0.1)
    assert torch.allclose(ours.x_adv, clipped, atol=1e-6)
    assert torch.equal(ours.success, success)


@pytest.mark.parametrize(
    "norm,attack", [("l2", "L2DeepFoolAttack"), ("linf", "LinfDeepFoolAttack")]
)
def test_deepfool_agrees_with_foolbox(setup, norm, attack):
    clf, fmodel, x, y = setup
    ours = run_attack("deepfool", clf, x, y, {"norm": norm})
    fb_attack = getattr(fb.attacks, attack)(steps=50, candidates=10, overshoot=0.02)
    _, clipped, success = fb_attack(fmodel, x, y, epsilons=None)
    _compare(ours, _foolbox_stats(x, clipped, success, norm), norm)
    # same algorithm, same arithmetic: the perturbations agree per sample
    assert torch.allclose(ours.x_adv, clipped, atol=1e-4)


def test_carlini_wagner_agrees_with_foolbox(setup):
    clf, fmodel, x, y = setup
    settings = {"binary_search_steps": 5, "steps": 100}
    ours = run_attack("cw-l2", clf, x, y, settings)
    fb_attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=5, steps=100)
    _, clipped, success = fb_attack(fmodel, x, y, epsilons=None)
    # Foolbox returns an all-zero image where it found nothing; such an image
    # may be misclassified and then counts as a "success" with a huge norm.
    # Those are failures of the attack, so they do not count here.
    success = success & (clipped.flatten(1) != 0).any(1)
    _compare(ours, _foolbox_stats(x, clipped, success, "l2"), "l2")


def test_carlini_wagner_without_abort_early_equals_foolbox(setup):
    # without abort_early (decided per sample here, on the batch's summed loss
    # in Foolbox) the two run the same arithmetic: per-sample agreement
    clf, fmodel, x, y = setup
    x, y = x[:100], y[:100]
    settings = {"binary_search_steps": 4, "steps": 50, "abort_early": False}
    ours = run_attack("cw-l2", clf, x, y, settings)
    fb_attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=4, steps=50, abort_early=False)
    _, clipped, success = fb_attack(fmodel, x, y, epsilons=None)
    found = (clipped.flatten(1) != 0).any(1)
    assert torch.equal(ours.success, success & found)
    both = ours.success
    fb_l2 = (clipped - x).flatten(1).double().norm(dim=1)
    assert torch.allclose(ours.l2[both], fb_l2[both], atol=1e-3)


# ------------------------------------------------------------ the Foolbox adapter


def _seed_of(generator: torch.Generator) -> int:
    """The seed the adapter draws from its generator for Foolbox's global RNG."""
    return int(torch.randint(2**62, (1,), generator=generator))


def test_adapter_linf_pgd_equals_direct_foolbox(setup):
    clf, fmodel, x, y = setup
    x, y = x[:50], y[:50]
    settings = {"attack": "LinfPGD", "epsilon": 0.1, "options": {"steps": 10}}
    ours = run_attack("foolbox", clf, x, y, settings, generator=torch.Generator().manual_seed(3))
    with torch.random.fork_rng():
        torch.manual_seed(_seed_of(torch.Generator().manual_seed(3)))
        _, clipped, success = fb.attacks.LinfPGD(steps=10)(fmodel, x, y, epsilons=0.1)
    assert torch.equal(ours.x_adv, clipped)
    assert torch.equal(ours.success, success)
    assert ours.forwards.tolist() == [10] * 50 and ours.backwards.tolist() == [10] * 50
    assert ours.iterations.tolist() == [0] * 50  # not exposed by Foolbox


def test_adapter_fgsm_equals_direct_foolbox_and_native(setup):
    clf, fmodel, x, y = setup
    ours = run_attack("foolbox:FGSM", clf, x, y, {"epsilon": 0.1})
    _, clipped, success = fb.attacks.FGSM()(fmodel, x, y, epsilons=0.1)
    assert torch.equal(ours.x_adv, clipped) and torch.equal(ours.success, success)
    native = run_attack("fgsm", clf, x, y, {"eps": 0.1})
    assert torch.allclose(ours.x_adv, native.x_adv, atol=1e-6)


def test_adapter_deepfool_agrees_with_native_deepfool(setup):
    clf, _, x, y = setup
    native = run_attack("deepfool", clf, x, y, {"norm": "l2"})
    ours = run_attack("foolbox", clf, x, y, {"attack": "L2DeepFoolAttack"})
    s = ours.summary()
    _compare(native, (s["success_rate"], s["median_l2"]), "l2")
    assert torch.allclose(ours.x_adv, native.x_adv, atol=1e-4)


def test_adapter_carlini_wagner_reports_nothing_found_as_failure(setup):
    # Foolbox's C&W returns an all-zero image where it found nothing; the
    # adapter returns the clean input there, so such samples are failures
    clf, fmodel, x, y = setup
    x, y = x[:40], y[:40]
    options = {"binary_search_steps": 2, "steps": 20}
    ours = run_attack("foolbox", clf, x, y, {"attack": "L2CarliniWagnerAttack", "options": options})
    _, clipped, success = fb.attacks.L2CarliniWagnerAttack(**options)(fmodel, x, y, epsilons=None)
    found = (clipped.flatten(1) != 0).any(1)
    assert (~found).any()  # few steps: some samples are not attacked successfully
    assert torch.equal(ours.x_adv[found], clipped[found])
    assert torch.equal(ours.x_adv[~found], x[~found])
    assert torch.equal(ours.success, success & found)


@pytest.mark.slow  # numba compiles Foolbox's optimisers on first use (~30 s each)
@pytest.mark.parametrize(
    "attack,norm", [("L0BrendelBethgeAttack", "l0"), ("L1BrendelBethgeAttack", "l1")]
)
def test_adapter_brendel_bethge_finds_sparse_perturbations(setup, attack, norm):
    pytest.importorskip("numba")
    clf, _, x, y = setup
    x, y = x[:8], y[:8]
    r = run_attack("foolbox", clf, x, y, {"attack": attack, "options": {"steps": 500}})
    assert r.success.float().mean() >= 0.75
    for name in ("l1", "l2", "linf"):
        assert torch.isfinite(getattr(r, name)[r.success]).all()
    # sparser / smaller in its own norm than DeepFool's L2 perturbations
    # (measured with 500 steps: median l0 8 vs 47.5, median l1 2.46 vs 3.69)
    deepfool = run_attack("deepfool", clf, x, y).summary()[f"median_{norm}"]
    assert r.summary()[f"median_{norm}"] < {"l0": 0.5, "l1": 0.8}[norm] * deepfool


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:LinearSearchBlendedUniformNoiseAttack failed")
def test_brendel_bethge_init_failures_are_failures(setup):
    pytest.importorskip("numba")
    clf, _, x, y = setup
    x, y = x[:16], y[:16]
    # one noise draw per sample: noise the model assigns to the true class
    # leaves that sample without an adversarial starting point
    init = fb.attacks.LinearSearchBlendedUniformNoiseAttack(directions=1, steps=20)
    settings = {"attack": "L1BrendelBethgeAttack", "options": {"steps": 10, "init_attack": init}}
    r = run_attack("foolbox", clf, x, y, settings)
    failed = ~r.success
    assert failed.any() and r.success.any()
    assert torch.equal(r.x_adv[failed], x[failed])


def test_adapter_is_deterministic_and_leaves_global_rngs_alone(setup):
    clf, _, x, y = setup
    x, y = x[:20], y[:20]
    settings = {"attack": "LinfPGD", "epsilon": 0.1, "options": {"steps": 2}}
    torch.manual_seed(5)
    np.random.seed(5)
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()
    a = run_attack("foolbox", clf, x, y, settings, generator=torch.Generator().manual_seed(1))
    b = run_attack("foolbox", clf, x, y, settings, generator=torch.Generator().manual_seed(2))
    c = run_attack("foolbox", clf, x, y, settings)  # default generator: seed 0
    d = run_attack("foolbox", clf, x, y, settings)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert not torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(c.x_adv, d.x_adv)


def test_shorthand_equals_the_generic_name(setup):
    clf, _, x, y = setup
    x, y = x[:10], y[:10]
    spec = get_attack("foolbox:L2DeepFoolAttack")
    assert spec.default_settings().attack == "L2DeepFoolAttack"
    a = run_attack("foolbox:LinfPGD", clf, x, y, {"epsilon": 0.1, "options": {"steps": 3}})
    b = run_attack(
        "foolbox", clf, x, y, {"attack": "LinfPGD", "epsilon": 0.1, "options": {"steps": 3}}
    )
    assert torch.equal(a.x_adv, b.x_adv)


@pytest.mark.parametrize(
    "name,settings,match",
    [
        (
            "foolbox",
            {"attack": "LinfPDG", "epsilon": 0.1},
            "unknown Foolbox attack 'LinfPDG'; did you mean 'LinfPGD'",
        ),
        ("foolbox", {"attack": "l2deepfoolattack"}, "did you mean 'L2DeepFoolAttack'"),
        ("foolbox", {"attack": "Attack"}, "unknown Foolbox attack"),  # abstract base class
        (
            "foolbox",
            {"attack": "LinfPGD", "epsilon": 0.1, "options": {"stepz": 3}},
            "unknown option 'stepz' for Foolbox LinfPGD; did you mean 'steps'",
        ),
        ("foolbox", {"attack": "LinfPGD"}, "fixed-epsilon attack: set epsilon"),
        ("foolbox", {"attack": "L2DeepFoolAttack", "epsilon": 0.5}, "takes no epsilon"),
        ("foolbox", {"attack": "LinfPGD", "epsilon": -0.1}, "epsilon must be >= 0"),
        ("foolbox", {"attack": "LinfPGD", "epsilon": 1.5}, "exceeds the input range"),
        ("foolbox", {"options": [1, 2]}, "setting 'options' must be a mapping"),
        ("foolbox", {"attack": 3}, "setting 'attack' must be a string"),
        ("foolbox", {"atack": "FGSM"}, "did you mean 'attack'"),
        ("foolbox:LinfPDG", {}, "did you mean 'LinfPGD'"),
        (
            "foolbox",
            {"attack": "VirtualAdversarialAttack", "epsilon": 0.1},
            "VirtualAdversarialAttack: invalid options",
        ),  # steps is required
        (
            "foolbox",
            {"attack": "LinfPGD", "epsilon": 0.1, "options": {"steps": "many"}},
            "Foolbox LinfPGD: option 'steps' must be int, got 'many'",  # before any work
        ),
    ],
)
def test_adapter_errors_are_one_line(setup, name, settings, match):
    clf, _, x, y = setup
    with pytest.raises(LabelflipError, match=match) as info:
        run_attack(name, clf, x[:4], y[:4], settings)
    assert "\n" not in str(info.value)


def test_untargetable_attack_says_so(setup):
    clf, _, x, y = setup
    with pytest.raises(LabelflipError, match="Foolbox L2DeepFoolAttack does not support a target"):
        run_attack("foolbox", clf, x[:4], y[:4], target=(y[:4] + 1) % 10)


def test_missing_numba_is_a_clear_error(setup, monkeypatch):
    clf, _, x, y = setup
    bb = importlib.import_module("foolbox.attacks.brendel_bethge")
    monkeypatch.setattr(bb, "NUMBA_IMPORT_ERROR", ModuleNotFoundError("no numba", name="numba"))
    with pytest.raises(
        LabelflipError, match="L1BrendelBethgeAttack needs numba: pip install numba"
    ):
        run_attack("foolbox", clf, x[:4], y[:4], {"attack": "L1BrendelBethgeAttack"})


def test_missing_foolbox_gives_the_install_hint(setup, monkeypatch):
    clf, _, x, y = setup
    monkeypatch.setitem(sys.modules, "foolbox", None)  # `import foolbox` now fails
    for name, settings in [("foolbox", {}), ("foolbox:LinfPGD", {"epsilon": 0.1})]:
        with pytest.raises(LabelflipError) as info:
            run_attack(name, clf, x[:4], y[:4], settings)
        assert str(info.value) == (
            "the Foolbox adapter needs Foolbox 3: pip install 'labelflip[foolbox]'"
        )
