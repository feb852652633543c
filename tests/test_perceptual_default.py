"""The perceptual class distance a run computes without being asked: at most
``PER_CLASS_DEFAULT`` images per class (a seeded choice), every image with
``per_class = 0``, and progress reported for both stages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from labelflip.config import SimilarityConfig, load_config, parse_config
from labelflip.config.tables import PER_CLASS_DEFAULT
from labelflip.data import load_dataset
from labelflip.models import load_checkpoint
from labelflip.run import SeedTree
from labelflip.run.setup import class_distances
from labelflip.similarity import perceptual_distance

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "records" / "digits-cnn.safetensors"


@pytest.fixture(scope="module")
def model():
    clf, _ = load_checkpoint(FIXTURE)
    return clf


def _perceptual(clf, sim: SimilarityConfig):
    test = load_dataset("digits", "test")
    y = test.y[:20]
    out = class_distances(
        sim, "digits", None, SeedTree(0), clf, test.class_names, y, y, torch.device("cpu")
    )
    return out["perceptual"]


def test_the_default_caps_the_images_per_class():
    assert PER_CLASS_DEFAULT == 500
    assert SimilarityConfig().per_class == PER_CLASS_DEFAULT
    assert load_config().similarity.per_class == PER_CLASS_DEFAULT  # the built-in default
    base = load_config().to_dict()
    every = parse_config({**base, "similarity": {**base["similarity"], "per_class": 0}})
    assert every.similarity.per_class == 0
    with pytest.raises(Exception, match=r"per_class must be >= 0"):
        parse_config({**base, "similarity": {**base["similarity"], "per_class": -1}})


def test_per_class_zero_takes_every_image_and_a_cap_a_seeded_subset(model):
    train = load_dataset("digits", "train")
    counts = torch.bincount(train.y, minlength=10).tolist()
    full = _perceptual(model, SimilarityConfig(per_class=0, hierarchy="none"))
    assert full.info["per_class"] is None and full.info["images"] == len(train)
    assert full.info["images_per_class"] == counts
    # digits has fewer than 500 images in every class: the default keeps them all,
    # so the built-in default's matrix is the full one
    assert max(counts) < PER_CLASS_DEFAULT
    default = _perceptual(model, SimilarityConfig(hierarchy="none"))
    assert default.info["images"] == len(train)
    assert (default.matrix == full.matrix).all()
    # a cap below the class sizes: that many of each, the same ones every time
    capped = _perceptual(model, SimilarityConfig(per_class=50, hierarchy="none"))
    again = _perceptual(model, SimilarityConfig(per_class=50, hierarchy="none"))
    assert capped.info["images_per_class"] == [50] * 10
    assert (capped.matrix == again.matrix).all()
    assert not (capped.matrix == full.matrix).all()


def test_both_stages_report_their_progress(model):
    train = load_dataset("digits", "train")
    heard: list[tuple[str, int, int]] = []
    perceptual_distance(
        model, train.x, train.y, class_names=train.class_names, per_class=100,
        batch_size=256, progress=lambda *a: heard.append(a),
    )  # fmt: skip
    stages = [s for s, _, _ in heard]
    assert stages == sorted(stages, key=["features", "Hausdorff"].index)  # features first
    n = 100 * 10
    features = [d for s, d, t in heard if s == "features"]
    assert features == [256, 512, 768, 1000] and {t for s, _, t in heard} == {n}
    assert [d for s, d, _ in heard if s == "Hausdorff"][-1] == n
