"""The best-of attack: per sample, the smallest successful adversarial of its
inner attacks (and which one found it), on an affine classifier where each
inner attack is run alone for comparison; settings and config lists."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from labelflip.attacks import best_of, deepfool, found_by, get_attack, run_attack
from labelflip.config.jobs import AttackConfig, expand
from labelflip.errors import LabelflipError
from labelflip.models import Classifier

pytestmark = pytest.mark.usefixtures("one_thread")

INNER = ("deepfool", "superdeepfool", "ddn", "fmn")
OPTIONS = {"ddn": {"steps": 30}, "fmn": {"steps": 15}}


@pytest.fixture(scope="module")
def affine() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """A 6-class affine model on R^12 (a box that does not bind) and 24
    points with their labels."""
    torch.manual_seed(0)
    lin = nn.Linear(12, 6).double()
    clf = Classifier(
        nn.Sequential(nn.Flatten(), lin), num_classes=6, input_shape=(1, 1, 12), bounds=(-10, 10)
    ).double()
    x = torch.randn(24, 1, 1, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        y = clf(x).argmax(1)
    return clf, x, y


def _alone(clf, x, y, attacks, options, seed):
    """Each attack run by itself, in order, on one generator."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for name in attacks:
        spec = get_attack(name)
        table = dict(options.get(name, {}))
        if any(f["name"] == "norm" for f in spec.describe()):
            table["norm"] = "l2"
        out.append(spec.run(clf, x, y, spec.settings(table), generator=gen))
    return out


def test_keeps_the_smallest_successful_adversarial_of_its_attacks(affine):
    clf, x, y = affine
    gen = torch.Generator().manual_seed(4)
    r = best_of(clf, x, y, attacks=INNER, options=OPTIONS, generator=gen)
    alone = _alone(clf, x, y, INNER, OPTIONS, seed=4)
    norms = torch.stack(
        [torch.where(a.success, a.l2, torch.full_like(a.l2, math.inf)) for a in alone], 1
    )
    assert torch.equal(r.profile, norms)
    best, which = norms.min(1)
    assert torch.equal(found_by(r), which)
    assert r.success.all()
    assert torch.equal(r.l2, best)  # the kept one is the smallest of the four
    for i in range(len(x)):
        assert torch.equal(r.x_adv[i], alone[int(which[i])].x_adv[i])
        assert r.adv_pred[i] == alone[int(which[i])].adv_pred[i]
    # every attack's adversarials are at least as large as the kept ones,
    # and the ensemble is strictly better than DeepFool alone somewhere
    assert (norms >= r.l2[:, None]).all()
    assert (r.l2 < alone[0].l2).any()
    # passes and iterations are summed over the attacks
    for field in ("forwards", "backwards", "iterations"):
        assert torch.equal(getattr(r, field), sum(getattr(a, field) for a in alone))


def test_a_failing_attack_is_never_kept_and_no_success_keeps_x(affine):
    clf, x, y = affine
    # FMN with one step only evaluates x itself: it never succeeds
    r = best_of(clf, x, y, attacks=["fmn", "deepfool"], options={"fmn": {"steps": 1}})
    assert torch.isinf(r.profile[:, 0]).all()
    assert (found_by(r) == 1).all()
    assert torch.equal(r.x_adv, deepfool(clf, x, y).x_adv)
    none = best_of(clf, x, y, attacks=["fmn"], options={"fmn": {"steps": 1}})
    assert torch.equal(none.x_adv, x) and not none.success.any()
    assert (found_by(none) == -1).all()


def test_default_attacks_are_those_that_offer_the_norm():
    spec = get_attack("best-of")
    assert spec.settings(None).attacks == INNER
    assert spec.settings({"norm": "linf"}).attacks == ("deepfool", "fmn")
    assert spec.settings({"norm": "l1"}).attacks == ("fmn",)


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"attacks": []}, "at least one attack"),
        ({"attacks": ["fmn", "fmn"]}, "'fmn' is named twice"),
        ({"attacks": ["deepfol"]}, "did you mean 'deepfool'"),
        ({"attacks": ["labelfool"]}, "needs target classes"),
        ({"attacks": ["type-i"]}, "cannot be an inner attack"),
        ({"attacks": ["best-of"]}, "cannot be an inner attack"),
        ({"attacks": ["ddn"], "norm": "linf"}, "cannot run in linf"),
        ({"attacks": ["fmn"], "options": {"ddn": {}}}, "not in attacks"),
        ({"attacks": ["fmn"], "options": {"fmn": 3}}, "must be a table"),
        ({"attacks": ["fmn"], "options": {"fmn": {"stepz": 3}}}, "did you mean 'steps'"),
        ({"attacks": "fmn"}, "must be a list"),
    ],
)
def test_bad_settings_are_one_line(settings, match):
    with pytest.raises(LabelflipError, match=match) as e:
        get_attack("best-of").settings(settings)
    assert "\n" not in str(e.value)


def test_refuses_a_target(affine):
    clf, x, y = affine
    with pytest.raises(LabelflipError, match="untargeted"):
        run_attack("best-of", clf, x, y, target=y)


def test_a_config_list_is_the_setting_and_a_list_of_lists_a_grid():
    (one,) = expand(AttackConfig("best-of", {"attacks": ["deepfool", "fmn"]}))
    assert one.settings["attacks"] == ["deepfool", "fmn"]
    assert one.job_id == "best-of-attacksdeepfool-fmn"
    two = expand(AttackConfig("best-of", {"attacks": [["deepfool"], ["deepfool", "fmn"]]}))
    assert [j.settings["attacks"] for j in two] == [["deepfool"], ["deepfool", "fmn"]]
    # other attacks' lists stay grids
    assert len(expand(AttackConfig("pgd", {"eps": [0.1, 0.2]}))) == 2
