"""The boundary-profile attack: on a hand-made 3-class affine model the profile
equals the closed-form distances; candidates, counts and settings; the runner
keeps the profile in the run directory, row by sample position.

The model is ``f(x) = W x`` on ``x ∈ R^2`` with the rows ``w_0 = (1, 0)``,
``w_1 = (0, 1)``, ``w_2 = (-1, -1)`` and a box ``[-10, 10]`` that never binds.
The distance from ``x`` (class ``y``) to the region of class ``t`` is
``|f_t - f_y| / ||w_t - w_y||_2`` when the projection of ``x`` onto the
hyperplane ``f_t = f_y`` is classified ``t`` (the third class is lower
there). For the three points below, worked out by hand:

- ``x = (0.5, 0)``: ``f = (0.5, 0, -0.5)``, class 0. To class 1:
  ``0.5 / ||(-1, 1)|| = 0.5 / √2``; the projection ``(0.25, 0.25)`` has
  ``f = (0.25, 0.25, -0.5)``. To class 2: ``1 / ||(-2, -1)|| = 1 / √5``; the
  projection ``(0.1, -0.2)`` has ``f = (0.1, -0.2, 0.1)``.
- ``x = (0, 0.4)``: ``f = (0, 0.4, -0.4)``, class 1. To class 0:
  ``0.4 / √2``, projection ``(0.2, 0.2)``. To class 2: ``0.8 / ||(-1, -2)|| =
  0.8 / √5``, projection ``(-0.16, 0.08)`` with ``f = (-0.16, 0.08, 0.08)``.
- ``x = (-1, -1)``: ``f = (-1, -1, 2)``, class 2. To class 0:
  ``3 / ||(2, 1)|| = 3 / √5``, projection ``(0.2, -0.4)``; to class 1 the
  same ``3 / √5``, projection ``(-0.4, 0.2)``: two boundaries at one distance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import labelflip
from labelflip.analysis import boundary_margin, class_boundary_matrix, nearest_landing_rate
from labelflip.attacks import boundary_profile, fmn, get_attack, run_attack
from labelflip.errors import LabelflipError
from labelflip.models import Classifier
from labelflip.store import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")

INF = math.inf
S2, S5 = math.sqrt(2), math.sqrt(5)
POINTS = [(0.5, 0.0), (0.0, 0.4), (-1.0, -1.0)]
LABELS = [0, 1, 2]
CLOSED_FORM = [
    [INF, 0.5 / S2, 1 / S5],
    [0.4 / S2, INF, 0.8 / S5],
    [3 / S5, 3 / S5, INF],
]


def _model() -> nn.Module:
    lin = nn.Linear(2, 3, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    return nn.Sequential(nn.Flatten(), lin)


@pytest.fixture(scope="module")
def affine() -> Classifier:
    return Classifier(_model(), num_classes=3, input_shape=(1, 1, 2), bounds=(-10, 10)).double()


def _points() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(POINTS, dtype=torch.float64).view(-1, 1, 1, 2), torch.tensor(LABELS)


def test_profile_of_the_affine_model_is_the_closed_form(affine):
    x, y = _points()
    with torch.no_grad():
        assert affine(x).argmax(1).tolist() == LABELS
    r = boundary_profile(affine, x, y, options={"steps": 200})
    expected = torch.tensor(CLOSED_FORM, dtype=torch.float64)
    assert r.profile is not None and r.profile.shape == (3, 3)
    assert torch.equal(torch.isinf(r.profile), torch.isinf(expected))
    finite = torch.isfinite(expected)
    rel = r.profile[finite] / expected[finite] - 1
    # never closer than the true distance, and within 1e-3 of it
    assert (rel > -1e-9).all() and (rel < 1e-3).all(), rel
    # the returned adversarial is the nearest class's: class 1 for the first
    # point, class 0 for the second; the third has two at one distance
    assert r.success.all()
    assert r.adv_pred[:2].tolist() == [1, 0]
    assert r.adv_pred[2] in (0, 1)
    assert torch.allclose(r.l2, r.profile.min(1).values)
    assert r.target is None


def test_top_k_only_attacks_the_classes_with_the_largest_logits(affine):
    x, y = _points()
    # logits (0.5, 0, -0.5): besides class 0, class 1 is first
    r = boundary_profile(affine, x[:1], y[:1], top_k=1, options={"steps": 200})
    assert torch.isinf(r.profile[0, [0, 2]]).all()
    assert r.profile[0, 1].item() == pytest.approx(0.5 / S2, rel=1e-3)
    wide = boundary_profile(affine, x, y, top_k=5, options={"steps": 20})  # capped at K - 1
    every = boundary_profile(affine, x, y, options={"steps": 20})
    assert torch.equal(wide.profile, every.profile)


def test_counts_are_the_inner_attacks_plus_one_forward(affine):
    x, y = _points()
    r = boundary_profile(affine, x[:1], y[:1], options={"steps": 30})
    one = fmn(affine, x[:1], y[:1], steps=30, target=torch.tensor([1]))
    two = fmn(affine, x[:1], y[:1], steps=30, target=torch.tensor([2]))
    assert r.forwards.item() == 1 + one.forwards.item() + two.forwards.item()
    assert r.backwards.item() == one.backwards.item() + two.backwards.item()
    assert r.iterations.item() == one.iterations.item() + two.iterations.item()
    assert r.profile[0, 1].item() == pytest.approx(one.l2.item())


def test_a_misclassified_sample_is_at_distance_zero_from_its_class(affine):
    x, _ = _points()
    r = boundary_profile(affine, x[:1], torch.tensor([1]), options={"steps": 20})
    # the model says 0 for a sample labelled 1: already in class 0's region
    assert r.profile[0, 0].item() == 0.0 and math.isinf(r.profile[0, 1].item())
    assert r.success.item() and r.l2.item() == 0.0


def test_other_inner_attacks_and_norms(affine):
    x, y = _points()
    r = boundary_profile(affine, x, y, inner="superdeepfool")
    finite = torch.isfinite(r.profile)
    expected = torch.tensor(CLOSED_FORM, dtype=torch.float64)
    assert torch.equal(finite, torch.isfinite(expected))
    assert torch.allclose(r.profile[finite], expected[finite], rtol=1e-3)
    linf = boundary_profile(affine, x[:1], y[:1], norm="linf", options={"steps": 100})
    # L∞ distance to f_1 = f_0 from (0.5, 0): |f_1 - f_0| / ||w_1 - w_0||_1 = 0.5 / 2
    assert linf.profile[0, 1].item() == pytest.approx(0.25, rel=1e-2)


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"inner": "deepfool"}, "'deepfool' is untargeted"),
        ({"inner": "best-of"}, "cannot be an inner attack"),
        ({"inner": "type-i"}, "cannot be an inner attack"),
        ({"inner": "fmm"}, "did you mean 'fmn'"),
        ({"inner": "ddn", "norm": "linf"}, "cannot run in linf"),
        ({"options": {"norm": "linf"}}, "the norm of 'fmn' is the outer norm"),
        ({"options": {"stepz": 3}}, "did you mean 'steps'"),
        ({"top_k": 0}, "top_k must be >= 1"),
    ],
)
def test_bad_settings_are_one_line(settings, match):
    with pytest.raises(LabelflipError, match=match) as e:
        get_attack("boundary-profile").settings(settings)
    assert "\n" not in str(e.value)


def test_refuses_a_target(affine):
    x, y = _points()
    with pytest.raises(LabelflipError, match="untargeted"):
        run_attack("boundary-profile", affine, x, y, target=torch.tensor([1, 0, 0]))


def test_save_profile_places_rows_by_sample_position(tmp_path):
    rd = RunDir(tmp_path)
    assert rd.load_profile("job") is None
    rd.save_profile("job", 4, np.array([[1.0, INF]]))  # a later batch first
    rd.save_profile("job", 0, np.array([[0.5, 2.0], [INF, 3.0]]))
    got = rd.load_profile("job")
    assert got.shape == (5, 2)
    np.testing.assert_array_equal(got[[0, 1, 4]], [[0.5, 2.0], [INF, 3.0], [1.0, INF]])
    assert np.isnan(got[2:4]).all()  # not written yet


@pytest.fixture(scope="module")
def affine_run(tmp_path_factory, one_thread):
    """A run of boundary-profile and deepfool on 10 points of the affine model."""
    tmp = tmp_path_factory.mktemp("run")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 1, 1, 2, generator=g) * 2 - 1
    model = _model().float()
    with torch.no_grad():
        y = model(x).argmax(1)
    y[9] = (y[9] + 1) % 3  # one sample the model gets wrong
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABELFLIP_CACHE", str(tmp / "cache"))
        run = labelflip.evaluate(
            model,
            (x, y),
            [{"attack": "boundary-profile", "options": {"steps": 50}}, "deepfool"],
            bounds=(-10, 10),
            out=tmp / "run",
            batch_size=4,  # three batches: rows 0-3, 4-7, 8-9
            white_noise=0,
            gallery=0,
        )
    return run, model, x, y


def test_a_run_keeps_the_profile_of_each_sample(affine_run):
    run, model, x, y = affine_run
    job, deepfool_job = run.job_ids
    profile = run.profile(job)
    np.testing.assert_array_equal(profile, RunDir(run.path).load_profile(job))
    with pytest.raises(LabelflipError, match="has no profile"):
        run.profile(deepfool_job)
    assert profile.shape == (10, 3) and not np.isnan(profile).any()
    rec = run.arrays(job)
    order = np.argsort(rec["sample"])
    # the record's landing is the nearest boundary of its row, at its distance
    assert (rec["adv_pred"][order] == profile.argmin(1)).all()
    np.testing.assert_allclose(rec["l2"][order], profile.min(1), rtol=1e-6)
    # the same as the attack run directly on the batches (fmn is deterministic)
    direct = boundary_profile(
        Classifier(model, num_classes=3, input_shape=(1, 1, 2), bounds=(-10, 10)),
        x[:4],
        y[:4],
        options={"steps": 50},
    )
    np.testing.assert_allclose(profile[:4], direct.profile.numpy(), rtol=1e-6)


def test_the_report_reads_the_class_boundaries(affine_run):
    run, _, _, y = affine_run
    job, deepfool_job = run.job_ids
    profile = RunDir(run.path).load_profile(job)
    (b,) = run.summary.boundaries
    clean = np.arange(10) != 9  # sample 9 is misclassified: left out
    assert b.job_id == job and b.norm == "l2" and b.n == 9
    np.testing.assert_array_equal(
        np.asarray(b.matrix), class_boundary_matrix(profile, y.numpy(), clean)
    )
    rec = run.arrays(deepfool_job)
    order = np.argsort(rec["sample"])
    ok = clean & rec["success"][order]
    expected = nearest_landing_rate(
        profile[ok], rec["adv_pred"][order][ok], np.ones(ok.sum(), bool)
    )
    assert set(b.landing) == {deepfool_job}
    assert b.landing[deepfool_job] == pytest.approx(expected)
    margin = boundary_margin(profile[clean], relative=True)
    assert b.margin == pytest.approx(np.median(margin))
    page = run.report().read_text()
    assert "Class boundaries" in page and "lands at the nearest boundary" in page
    assert (run.path / "report" / f"boundary__{job}.png").is_file()
