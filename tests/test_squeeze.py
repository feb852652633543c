"""Feature-squeezing detection (Xu et al. 2018; Tang et al., Type I attacks,
§IV-C): the squeezers by hand and against scipy, the joint score by hand,
zero scores for already-squeezed inputs, threshold calibration by hand, and
PGD adversarials scoring higher than clean inputs on a trained digits model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from labelflip import detect
from labelflip.attacks import run_attack
from labelflip.data import load_dataset
from labelflip.detect import (
    bit_depth,
    calibrate_threshold,
    detection_rate,
    get_squeezer,
    median_filter,
    squeeze_scores,
)
from labelflip.errors import LabelflipError
from labelflip.models import Classifier, recipe_for
from labelflip.models.training import TrainSettings, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _sum_classifier(shape: tuple[int, ...] = (1, 2, 2)) -> Classifier:
    """Two classes, logits ``(sum(x), 0)``: softmax ``(σ(s), 1 - σ(s))``."""
    d = int(np.prod(shape))
    lin = nn.Linear(d, 2).double()
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0] = 1.0
        lin.bias.zero_()
    model = nn.Sequential(nn.Flatten(), lin)
    return Classifier(model, num_classes=2, input_shape=shape).double()


def _sigmoid(s: float) -> float:
    return 1 / (1 + math.exp(-s))


# ------------------------------------------------------------- bit depth


def test_bit_depth_by_hand():
    x = torch.tensor([0.0, 0.2, 0.49, 0.5, 0.51, 0.8, 1.0])
    assert bit_depth(x, 1).tolist() == [0, 0, 0, 0, 1, 1, 1]  # 0.5 -> 0: ties to even
    # 2 bits: levels 0, 1/3, 2/3, 1
    x2 = torch.tensor([0.1, 0.2, 0.5, 0.9], dtype=torch.float64)
    expected = torch.tensor([0, 1 / 3, 2 / 3, 1], dtype=torch.float64)
    assert torch.allclose(bit_depth(x2, 2), expected, atol=1e-12)


def test_bit_depth_over_other_bounds():
    x = torch.tensor([-1.0, -0.2, 0.1, 1.0], dtype=torch.float64)
    assert bit_depth(x, 1, (-1, 1)).tolist() == [-1, -1, 1, 1]
    expected = torch.tensor([-1, -1 / 3, 1 / 3, 1], dtype=torch.float64)
    assert torch.allclose(bit_depth(x, 2, (-1, 1)), expected, atol=1e-12)
    # u = (x - 0) / 255 on [0, 255]: 100 -> 0, 200 -> 255
    assert bit_depth(torch.tensor([100.0, 200.0]), 1, (0, 255)).tolist() == [0, 255]


def test_bit_depth_is_idempotent_and_leaves_input_alone():
    x = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    once = bit_depth(x, 3)
    assert torch.equal(x, before)
    assert torch.equal(bit_depth(once, 3), once)
    assert len(torch.unique(once)) <= 8


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: bit_depth(torch.zeros(2), 0), "bits must be an integer >= 1"),
        (lambda: bit_depth(torch.zeros(2), 1.5), "bits must be an integer >= 1"),
        (lambda: bit_depth(torch.zeros(2), True), "bits must be an integer >= 1"),
        (lambda: bit_depth(torch.tensor([0.0, math.nan])), "NaN or Inf"),
        (lambda: bit_depth(torch.tensor([0.0, 1.5])), "outside the bounds"),
        (lambda: bit_depth(torch.zeros(2), 1, (1, 0)), "lower < upper"),
        (lambda: bit_depth(np.zeros(2)), "must be a torch tensor"),
        (lambda: bit_depth(torch.zeros(2, dtype=torch.long)), "floating-point"),
    ],
)
def test_bit_depth_errors(call, match):
    with pytest.raises(LabelflipError, match=match):
        call()


# ------------------------------------------------------------ median filter


def test_median_2x2_by_hand():
    # the window of output (i, j) is rows i-1..i, columns j-1..j, the border
    # mirrored (edge repeated), and of four values the upper middle one:
    #   (0, 0): {.2, .2, .2, .2} -> .2     (0, 1): {.2, .9, .2, .9} -> .9
    #   (1, 0): {.2, .2, .6, .6} -> .6     (1, 1): {.2, .9, .6, .4} -> .6
    x = torch.tensor([[0.2, 0.9], [0.6, 0.4]], dtype=torch.float64)
    assert median_filter(x, 2).tolist() == [[0.2, 0.9], [0.6, 0.6]]
    # an outlier in a 4x4 image: it never wins a 2x2 median
    y = torch.arange(16.0).reshape(4, 4)
    y[1, 1] = 100
    assert median_filter(y).tolist() == [
        [0, 1, 2, 3],
        [4, 4, 6, 6],
        [8, 9, 10, 10],
        [12, 12, 13, 14],
    ]


def test_median_3x3_by_hand():
    # odd windows are centred; (0, 0): {1, 1, 2, 1, 1, 2, 4, 4, 5} -> 2
    x = torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])
    out = median_filter(x, 3)
    assert out[1, 1] == 5 and out[0, 0] == 2


@pytest.mark.parametrize("size", [2, 3, 4, 5, (2, 3), (1, 2), (3, 1)])
def test_median_matches_scipy_reflect(size):
    # Xu et al.'s reference code reproduces scipy.ndimage.median_filter(mode="reflect")
    x = torch.rand(3, 2, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    hw = (size, size) if isinstance(size, int) else size
    expected = ndimage.median_filter(x.numpy(), size=(1, 1, *hw), mode="reflect")
    np.testing.assert_array_equal(median_filter(x, size).numpy(), expected)


def test_median_keeps_shape_dtype_and_input():
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    before = x.clone()
    out = median_filter(x)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.equal(x, before)
    assert torch.equal(median_filter(x, 1), x)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: median_filter(torch.zeros(3), 2), "at least 2 dimensions"),
        (lambda: median_filter(torch.zeros(3, 3), 0), "at least 1x1"),
        (lambda: median_filter(torch.zeros(3, 3), "2"), "integer or a pair"),
        (lambda: median_filter(torch.full((2, 2), math.nan)), "NaN or Inf"),
    ],
)
def test_median_errors(call, match):
    with pytest.raises(LabelflipError, match=match):
        call()


def test_squeezer_names():
    x = torch.tensor([[[[0.2, 0.9], [0.6, 0.4]]]], dtype=torch.float64)
    assert get_squeezer("bit_depth_1")(x).flatten().tolist() == [0, 1, 1, 0]
    assert get_squeezer("median_2x2")(x).flatten().tolist() == [0.2, 0.9, 0.6, 0.6]
    for bad, match in [
        ("bit_depth_0", "bits must be"),
        ("median_0x2", "at least 1x1"),
        ("median", "unknown squeezer 'median'"),
        ("blur_2", "unknown squeezer"),
    ]:
        with pytest.raises(LabelflipError, match=match):
            get_squeezer(bad)


# ----------------------------------------------------------------- scores


def test_joint_score_by_hand():
    clf = _sum_classifier()
    x = torch.tensor([[[[0.2, 0.9], [0.6, 0.4]]]], dtype=torch.float64)
    # sum 2.1; bit depth 1 -> [[0, 1], [1, 0]], sum 2; median -> sum 2.3
    # softmax((s, 0)) = (σ(s), 1 - σ(s)): L1 = 2|Δσ|, L2 = √2 |Δσ|
    gap_bits = abs(_sigmoid(2.1) - _sigmoid(2.0))
    gap_median = abs(_sigmoid(2.1) - _sigmoid(2.3))
    assert gap_median > gap_bits
    l1 = squeeze_scores(clf, x)
    l2 = squeeze_scores(clf, x, distance="l2")
    assert l1.dtype == torch.float64 and l1.shape == (1,)
    assert l1.item() == pytest.approx(2 * gap_median, rel=1e-12)
    assert l2.item() == pytest.approx(math.sqrt(2) * gap_median, rel=1e-12)
    # one squeezer at a time
    only_bits = squeeze_scores(clf, x, squeezers=("bit_depth_1",))
    assert only_bits.item() == pytest.approx(2 * gap_bits, rel=1e-12)
    # a function works as a squeezer too
    flipped = squeeze_scores(clf, x, squeezers=(lambda b: 1 - b,))  # sum 4 - 2.1 = 1.9
    assert flipped.item() == pytest.approx(2 * abs(_sigmoid(2.1) - _sigmoid(1.9)), rel=1e-12)


def test_scores_are_zero_for_already_squeezed_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 5))
    clf = Classifier(model, num_classes=5, input_shape=(1, 6, 6))
    x = torch.zeros(4, 1, 6, 6)
    x[1] = 1.0
    x[2, :, :, 3:] = 1.0  # left half 0, right half 1
    x[3, :, 2:, :] = 1.0  # top rows 0, bottom rows 1
    for squeeze in (lambda v: bit_depth(v, 1), median_filter):
        assert torch.equal(squeeze(x), x)  # the inputs are fixed points of both squeezers
    for distance in ("l1", "l2"):
        assert squeeze_scores(clf, x, distance=distance).tolist() == [0.0] * 4
    # a generic input is moved by the squeezers
    noisy = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    assert (squeeze_scores(clf, noisy) > 0).all()


def test_scores_are_batch_invariant_and_bounded():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    clf = Classifier(model, num_classes=3, input_shape=(1, 4, 4))
    x = torch.rand(7, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    whole = squeeze_scores(clf, x)
    batched = squeeze_scores(clf, x, batch_size=3)
    assert torch.allclose(whole, batched, atol=1e-7, rtol=0)
    assert (whole >= 0).all() and (whole <= 2).all()
    assert (squeeze_scores(clf, x, distance="l2") <= math.sqrt(2)).all()
    assert squeeze_scores(clf, x[:0]).shape == (0,)


def test_score_errors():
    clf = _sum_classifier()
    x = torch.rand(2, 1, 2, 2, dtype=torch.float64)
    nan = x.clone()
    nan[0, 0, 0, 0] = math.nan
    with pytest.raises(LabelflipError, match="NaN or Inf"):
        squeeze_scores(clf, nan)
    with pytest.raises(LabelflipError, match="outside the model's bounds"):
        squeeze_scores(clf, x + 2)
    with pytest.raises(LabelflipError, match="unknown distance 'cos'"):
        squeeze_scores(clf, x, distance="cos")
    with pytest.raises(LabelflipError, match="unknown squeezer"):
        squeeze_scores(clf, x, squeezers=("bit_depth",))
    with pytest.raises(LabelflipError, match="non-empty sequence"):
        squeeze_scores(clf, x, squeezers=())
    with pytest.raises(LabelflipError, match="non-empty sequence"):
        squeeze_scores(clf, x, squeezers="median_2x2")
    with pytest.raises(LabelflipError, match="input's shape"):
        squeeze_scores(clf, x, squeezers=(lambda b: b[:1],))
    with pytest.raises(LabelflipError, match="batch_size"):
        squeeze_scores(clf, x, batch_size=0)
    with pytest.raises(LabelflipError, match="Classifier"):
        squeeze_scores(nn.Linear(4, 2), x)
    with pytest.raises(LabelflipError, match="input shape"):
        squeeze_scores(clf, torch.rand(2, 1, 3, 3, dtype=torch.float64))


# -------------------------------------------------------------- threshold


def test_calibrate_threshold_by_hand():
    scores = np.arange(1, 21) / 20  # 0.05, 0.10, ..., 1.00 (shuffled below)
    shuffled = np.random.default_rng(0).permutation(scores)
    # ceil(20 * 0.95) = 19: the 19th smallest, 0.95; only 1.00 lies above it
    zeta = calibrate_threshold(shuffled, 0.05)
    assert zeta == pytest.approx(0.95)
    assert detection_rate(shuffled, zeta) == pytest.approx(0.05)
    # ceil(20 * 0.9) = 18 -> 0.90, flags 2 of 20
    assert calibrate_threshold(scores, 0.1) == pytest.approx(0.90)
    # ceil(20 * 0.87) = ceil(17.4) = 18 -> 0.90: flags 10 %, at most the 13 % asked
    assert calibrate_threshold(scores, 0.13) == pytest.approx(0.90)
    # fpr 0: the largest score, nothing flagged
    assert calibrate_threshold(scores, 0.0) == pytest.approx(1.0)
    assert detection_rate(scores, 1.0) == 0.0
    # 100 * (1 - 0.07) is 93.00000000000001 in floats; still the 93rd smallest
    hundred = np.arange(100.0)
    assert calibrate_threshold(hundred, 0.07) == 92.0
    assert detection_rate(hundred, 92.0) == pytest.approx(0.07)
    # a torch tensor works as well; one score is its own threshold
    assert calibrate_threshold(torch.tensor([0.3]), 0.5) == pytest.approx(0.3)


def test_calibrate_threshold_with_ties_flags_fewer():
    scores = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert calibrate_threshold(scores, 0.2) == 0.0  # ceil(8) = 8th smallest
    assert detection_rate(scores, 0.0) == pytest.approx(0.1)


def test_detection_rate_by_hand():
    assert detection_rate([0.1, 0.5, 0.5, 0.9], 0.5) == pytest.approx(0.25)  # strict >
    assert detection_rate(torch.tensor([0.1, 0.6]), 0.5) == pytest.approx(0.5)
    assert math.isnan(detection_rate([], 0.5))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: calibrate_threshold([0.1, 0.2], 1.0), r"fpr must lie in \[0, 1\)"),
        (lambda: calibrate_threshold([0.1, 0.2], -0.1), "fpr must lie in"),
        (lambda: calibrate_threshold([], 0.05), "empty"),
        (lambda: calibrate_threshold([0.1, math.nan], 0.05), "NaN"),
        (lambda: calibrate_threshold([[0.1, 0.2]], 0.05), "1-D"),
        (lambda: detection_rate([0.1], math.nan), "threshold must be a finite number"),
        (lambda: detection_rate([0.1, math.inf], 0.5), "NaN or infinite"),
    ],
)
def test_threshold_errors(call, match):
    with pytest.raises(LabelflipError, match=match):
        call()


def test_package_exports():
    for name in detect.__all__:
        assert hasattr(detect, name)


# -------------------------------------------- a trained model: PGD vs clean


@pytest.fixture(scope="module")
def digits_model() -> Classifier:
    train_set = load_dataset("digits", "train")
    settings = TrainSettings.from_recipe(recipe_for("digits-cnn"), epochs=5)
    return train("digits-cnn", train_set, settings, progress=False).classifier


def test_pgd_adversarials_score_higher_than_clean_inputs(digits_model):
    # Tang et al., Table I, Type II rows: feature squeezing flags PGD-style
    # adversarials more often than clean inputs. On the 8x8 digits the
    # squeezers change clean images a lot as well (mean L1 score about 0.75
    # observed), so only the ordering is asserted, with margins well inside
    # what was observed (adversarial mean about 1.08, 19 % flagged at a 5 %
    # clean false-positive rate).
    test_set = load_dataset("digits", "test")
    x, y = test_set.x[:200], test_set.y[:200]
    r = run_attack("pgd", digits_model, x, y, {"eps": 0.3})
    assert r.success.float().mean() > 0.9
    for distance in ("l1", "l2"):
        clean = squeeze_scores(digits_model, x, distance=distance)
        adv = squeeze_scores(digits_model, r.x_adv, distance=distance)
        assert adv.mean() > clean.mean() + 0.1
        zeta = calibrate_threshold(clean, 0.05)
        assert detection_rate(clean, zeta) <= 0.05
        assert detection_rate(adv, zeta) > 0.1
