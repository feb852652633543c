"""Training: determinism under a seed, best-epoch keeping, the digits recipe."""

from __future__ import annotations

import pytest
import torch

from labelflip.data import load_dataset
from labelflip.errors import LabelflipError
from labelflip.models import recipe_for
from labelflip.models.training import TrainSettings, _augment, accuracy, channel_stats, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def _settings(**kw):
    return TrainSettings.from_recipe(recipe_for("digits-cnn"), **{"epochs": 2, **kw})


def test_same_seed_same_weights_other_seed_other_weights(digits):
    train_set, _ = digits
    a = train("digits-cnn", train_set, _settings(seed=1), progress=False).classifier
    b = train("digits-cnn", train_set, _settings(seed=1), progress=False).classifier
    c = train("digits-cnn", train_set, _settings(seed=2), progress=False).classifier
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_training_leaves_global_rng_untouched(digits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train("digits-cnn", digits[0], _settings(epochs=1), progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_best_epoch_is_the_best_validation_epoch(digits):
    result = train("digits-cnn", digits[0], _settings(epochs=4), progress=False)
    vals = [h.val_accuracy for h in result.history]
    assert result.best_epoch == 1 + vals.index(max(vals))
    assert result.val_accuracy == max(vals)


def test_digits_default_recipe_reaches_95_percent(digits):
    train_set, test_set = digits
    result = train(
        "digits-cnn", train_set, _settings(epochs=recipe_for("digits-cnn").epochs), progress=False
    )
    assert accuracy(result.classifier, test_set.x, test_set.y) >= 0.95


def test_channel_stats_hand_computed():
    x = torch.tensor([0.0, 1.0, 1.0, 0.0]).view(4, 1, 1, 1)
    mean, std = channel_stats(x)
    assert mean == [0.5] and std == [pytest.approx(0.57735, abs=1e-5)]  # sample std of 0,1,1,0


def test_augment_translates_and_flips_with_the_generator():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(8, 1, 1, 1)
    a = _augment(x, torch.Generator().manual_seed(0), pad=1)
    b = _augment(x, torch.Generator().manual_seed(0), pad=1)
    assert torch.equal(a, b) and a.shape == x.shape
    # every output is a shifted (and possibly mirrored) window of the zero-padded input
    assert set(a.unique().tolist()) <= set(range(16)) | {0.0}


def test_invalid_settings():
    with pytest.raises(LabelflipError, match="validation fraction"):
        _settings(val_fraction=1.0).validate()
