"""Tests for labelflip.similarity: class-distance matrices with hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from labelflip.data.cifar import CIFAR10_CLASSES
from labelflip.data.idx import FASHION_MNIST_CLASSES, MNIST_CLASSES
from labelflip.errors import LabelflipError
from labelflip.models.architectures import CWNet, DigitsCNN, PreActResNet18
from labelflip.models.classifier import Classifier
from labelflip.similarity import (
    ClassDistance,
    builtin_hierarchies,
    builtin_hierarchy_for,
    confusion_distance,
    extract_features,
    hausdorff_class_distances,
    hausdorff_reference,
    load_hierarchy,
    penultimate_layer,
    perceptual_distance,
    sample_per_class,
    semantic_distance,
    tree_distance,
)


def _unit(deg: float, scale: float = 1.0) -> list[float]:
    r = math.radians(deg)
    return [scale * math.cos(r), scale * math.sin(r)]


# ---------------------------------------------------------------- Hausdorff


def test_hausdorff_hand_built_angles():
    # class 0: 0deg, 10deg; class 1: 90deg, 30deg; class 2: 180deg (norms vary: only angles count)
    feats = torch.tensor(
        [_unit(0), _unit(10, 3.0), _unit(90, 0.5), _unit(30, 2.0), _unit(180, 7.0)]
    )
    labels = torch.tensor([0, 0, 1, 1, 2])
    # h(0->1): 0deg -> min(1-cos90, 1-cos30) = 1-cos30 = 0.133975
    #          10deg -> min(1-cos80, 1-cos20) = 1-cos20 = 0.060307        -> 0.133975
    # h(1->0): 90deg -> min(1-cos90, 1-cos80) = 1-cos80 = 0.826352
    #          30deg -> min(1-cos30, 1-cos20) = 0.060307                   -> 0.826352
    # D01 = max = 1 - cos80
    # h(0->2) = max(1-cos180, 1-cos170) = 2;  h(2->0) = min(2, 1+cos10) = 1.984808  -> D02 = 2
    # h(1->2) = max(1-cos90, 1-cos150) = 1 + cos30 = 1.866025;  h(2->1) = min(1, 1.866) = 1
    # D12 = 1 + cos30
    d01 = 1 - math.cos(math.radians(80))
    d12 = 1 + math.cos(math.radians(30))
    expected = np.array([[0, d01, 2.0], [d01, 0, d12], [2.0, d12, 0]])
    got = hausdorff_class_distances(feats, labels, 3)
    assert got.dtype == np.float64 and got.shape == (3, 3)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(hausdorff_reference(feats, labels, 3), expected, atol=1e-12)
    # unsorted input order and tiny blocks give the same matrix
    perm = torch.tensor([4, 2, 0, 3, 1])
    got2 = hausdorff_class_distances(feats[perm], labels[perm], 3, block_rows=1, block_cols=1)
    np.testing.assert_allclose(got2, expected, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_hausdorff_blocked_equals_reference(seed):
    g = torch.Generator().manual_seed(seed)
    sizes = [1, 9, 23, 4, 14][: 3 + seed % 3]
    labels = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    labels = labels[torch.randperm(len(labels), generator=g)]
    feats = torch.randn(len(labels), 6, generator=g)
    ref = hausdorff_reference(feats, labels, len(sizes))
    small = hausdorff_class_distances(feats, labels, len(sizes), block_rows=7, block_cols=5)
    default = hausdorff_class_distances(feats.numpy(), labels.numpy(), len(sizes))
    np.testing.assert_allclose(small, ref, atol=1e-5)
    np.testing.assert_allclose(default, ref, atol=1e-5)
    assert np.all(small >= 0) and np.array_equal(small, small.T)
    assert np.all(np.diag(small) == 0)
    # off-diagonal entries are not all equal: the check above is not vacuous
    assert np.ptp(ref[np.triu_indices(len(sizes), 1)]) > 0.01


def test_hausdorff_zero_vector_is_distance_one():
    # class 0 = {(1,0), (0,0)}, class 1 = {(1,0)}: the zero vector has cos 0 with everything,
    # so h(0->1) = max(0, 1) = 1 and h(1->0) = min(0, 1) = 0 -> D01 = 1
    feats = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    got = hausdorff_class_distances(feats, labels, 2)
    np.testing.assert_allclose(got, [[0, 1], [1, 0]], atol=1e-7)
    np.testing.assert_allclose(hausdorff_reference(feats, labels, 2), got, atol=1e-7)
    # two classes of only zero vectors: even identical zero vectors are at distance 1
    both_zero = hausdorff_class_distances(torch.zeros(2, 3), torch.tensor([0, 1]), 2)
    np.testing.assert_allclose(both_zero, [[0, 1], [1, 0]])


def test_hausdorff_errors():
    feats = torch.randn(3, 2)
    with pytest.raises(LabelflipError, match=r"class\(es\) 1 have no images"):
        hausdorff_class_distances(feats, torch.tensor([0, 0, 2]), 3)
    with pytest.raises(LabelflipError, match=r"class\(es\) 1 have no images"):
        hausdorff_reference(feats, torch.tensor([0, 0, 2]), 3)
    with pytest.raises(LabelflipError, match="must lie in"):
        hausdorff_class_distances(feats, torch.tensor([0, 1, 3]), 3)
    with pytest.raises(LabelflipError, match="NaN"):
        hausdorff_class_distances(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]), 1)
    with pytest.raises(LabelflipError, match="block_rows"):
        hausdorff_class_distances(feats, torch.tensor([0, 1, 2]), 3, block_rows=0)


# ---------------------------------------------------------------- features


def _cw_classifier(num_classes: int = 5) -> Classifier:
    torch.manual_seed(0)
    model = CWNet((1, 16, 16), num_classes, conv=(4, 8), fc=16, name="cw-test")
    return Classifier(
        model, num_classes=num_classes, input_shape=(1, 16, 16), mean=[0.5], std=[0.25]
    )


def test_penultimate_layer_names():
    assert penultimate_layer(CWNet((1, 16, 16), 5, conv=(4, 8), fc=16, name="t")) == "classifier.6"
    assert penultimate_layer(PreActResNet18((3, 8, 8), 10)) == "linear"
    assert penultimate_layer(DigitsCNN((1, 8, 8), 10)) == "classifier.4"
    with pytest.raises(LabelflipError, match="no nn.Linear"):
        penultimate_layer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))


def test_extract_features_default_layer_matches_manual():
    clf = _cw_classifier()
    x = torch.rand(7, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    got = extract_features(clf, x, batch_size=3)
    with torch.no_grad():
        m = clf.model
        manual = m.classifier[:-1](m.features((x - 0.5) / 0.25))
    assert got.shape == (7, 16) and got.dtype == torch.float32 and got.device.type == "cpu"
    torch.testing.assert_close(got, manual)
    assert not got.requires_grad
    # the hook is removed afterwards
    assert not clf.model.classifier[6]._forward_pre_hooks


def test_extract_features_named_layer_and_plain_module():
    clf = _cw_classifier()
    x = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    got = extract_features(clf, x, layer="features", batch_size=2)
    with torch.no_grad():
        manual = clf.model.features((x - 0.5) / 0.25).flatten(1)
    torch.testing.assert_close(got, manual)
    assert not clf.model.features._forward_hooks

    # a plain module in train mode: features come from eval mode (no dropout), mode restored
    torch.manual_seed(3)
    plain = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.9), nn.Linear(8, 3)).train()
    xp = torch.randn(6, 4)
    got = extract_features(plain, xp)
    torch.testing.assert_close(got, torch.relu(plain[0](xp)).detach())
    assert plain.training
    torch.testing.assert_close(extract_features(plain, xp, layer="0"), plain[0](xp).detach())


def test_extract_features_unknown_layer():
    clf = _cw_classifier()
    with pytest.raises(LabelflipError, match="did you mean 'classifier.6'") as err:
        extract_features(clf, torch.rand(2, 1, 16, 16), layer="clasifier.6")
    assert "\n" not in str(err.value)
    with pytest.raises(LabelflipError, match="batch_size"):
        extract_features(clf, torch.rand(2, 1, 16, 16), batch_size=0)


# ---------------------------------------------------------------- sampling + end-to-end


def test_sample_per_class_deterministic_and_capped():
    labels = torch.tensor([0] * 5 + [1] * 2 + [2] * 4)[torch.randperm(11)]
    a = sample_per_class(labels, 3, torch.Generator().manual_seed(7))
    b = sample_per_class(labels, 3, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(a, torch.sort(a).values)
    assert torch.bincount(labels[a], minlength=3).tolist() == [3, 2, 3]
    assert len(set(a.tolist())) == len(a)
    assert torch.equal(sample_per_class(labels, None, torch.Generator()), torch.arange(11))
    assert torch.equal(sample_per_class(labels.numpy(), 10, torch.Generator()), torch.arange(11))
    with pytest.raises(LabelflipError, match="per_class"):
        sample_per_class(labels, 0, torch.Generator())


def test_perceptual_distance_end_to_end():
    clf = _cw_classifier(num_classes=3)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(14, 1, 16, 16, generator=g)
    y = torch.tensor([0] * 6 + [1] * 3 + [2] * 5)
    cd = perceptual_distance(
        clf, x, y, class_names=["a", "b", "c"], per_class=4, generator=g, split="test"
    )
    assert cd.name == "perceptual" and cd.class_names == ("a", "b", "c")
    info = cd.info
    assert info["layer"] == "classifier.6" and info["layer_io"] == "input"
    assert info["images"] == 11 and info["images_per_class"] == [4, 3, 4]
    assert info["per_class"] == 4 and info["split"] == "test" and info["feature_dim"] == 16
    assert info["seconds_features"] >= 0 and info["seconds_distances"] >= 0
    # same subset (same generator seed) through the naive reference
    idx = sample_per_class(y, 4, torch.Generator().manual_seed(4))
    feats = extract_features(clf, x[idx])
    np.testing.assert_allclose(cd.matrix, hausdorff_reference(feats, y[idx], 3), atol=1e-5)
    with pytest.raises(LabelflipError, match="'c' have no images"):
        perceptual_distance(clf, x[:9], y[:9], class_names=["a", "b", "c"])


# ---------------------------------------------------------------- semantic

NESTED = {"animal": {"mammal": ["cat", "dog"], "aves": ["bird"]}, "vehicle": ["car"]}
PARENTS = {
    "parents": {
        "cat": "mammal",
        "dog": "mammal",
        "mammal": "animal",
        "bird": "aves",
        "aves": "animal",
        "car": "vehicle",  # "vehicle" is never a key: hangs under the implicit root
        "animal": None,
    }
}


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_both_formats_same_tree_distance(tmp_path):
    names = ["cat", "dog", "bird", "car"]
    # depths from the implicit root: cat, dog, bird 3; car 2
    # cat-dog: lca mammal -> 1+1 = 2; cat-bird: lca animal -> 2+2 = 4; cat-car: root -> 3+2 = 5
    expected = np.array([[0, 2, 4, 5], [2, 0, 4, 5], [4, 4, 0, 5], [5, 5, 5, 0]], dtype=float)
    h1 = load_hierarchy(_write(tmp_path, "nested.json", NESTED))
    h2 = load_hierarchy(str(_write(tmp_path, "parents.json", PARENTS)))
    assert set(h1.leaves) == set(h2.leaves) == set(names)
    np.testing.assert_array_equal(tree_distance(h1, names), expected)
    np.testing.assert_array_equal(tree_distance(h2, names), expected)
    assert h1.name == "nested" and h1.depth == 3


def test_group_may_share_a_leaf_name(tmp_path):
    h = load_hierarchy(_write(tmp_path, "h.json", {"animal": {"bird": ["bird"], "cat": ["cat"]}}))
    # bird: animal > bird > bird(leaf), cat: animal > cat > cat(leaf); lca animal -> 2 + 2
    np.testing.assert_array_equal(tree_distance(h, ["bird", "cat"]), [[0, 4], [4, 0]])


def test_cifar10_builtin():
    assert {"cifar10", "fashion-mnist"} <= set(builtin_hierarchies())
    cd = semantic_distance("cifar10", CIFAR10_CLASSES)
    d = dict(zip(cd.class_names, cd.matrix[CIFAR10_CLASSES.index("cat")], strict=True))
    # cat: animal > mammal > pet (depth 4); dog same group -> 2
    # deer: animal > mammal > ungulate -> 4; bird: animal > bird (depth 3) -> 3 + 2 = 5
    # truck: vehicle > road (depth 3), lca root -> 4 + 3 = 7
    assert (d["dog"], d["deer"], d["bird"], d["truck"]) == (2, 4, 5, 7)
    assert d["dog"] < d["deer"] < d["truck"]
    auto = CIFAR10_CLASSES.index("automobile")
    assert cd.matrix[auto, CIFAR10_CLASSES.index("truck")] == 2
    assert cd.matrix[auto, CIFAR10_CLASSES.index("ship")] == 4
    assert cd.name == "semantic"
    assert cd.info == {
        "hierarchy": "cifar10",
        "source": "builtin:cifar10",
        "depth": 4,
        "groups": ["vehicle", "vehicle"] + ["animal"] * 6 + ["vehicle", "vehicle"],
    }


def test_fashion_mnist_builtin():
    cd = semantic_distance("fashion-mnist", FASHION_MNIST_CLASSES)
    idx = {c: i for i, c in enumerate(FASHION_MNIST_CLASSES)}
    assert cd.matrix[idx["T-shirt/top"], idx["Shirt"]] == 2
    assert cd.matrix[idx["Sandal"], idx["Sneaker"]] == 2
    assert cd.matrix[idx["Pullover"], idx["Shirt"]] == 4
    assert cd.matrix[idx["Shirt"], idx["Ankle boot"]] == 6


def test_builtin_hierarchy_for():
    assert builtin_hierarchy_for(CIFAR10_CLASSES) == "cifar10"
    assert builtin_hierarchy_for(sorted(CIFAR10_CLASSES)) == "cifar10"  # imagefolder order
    assert builtin_hierarchy_for(FASHION_MNIST_CLASSES) == "fashion-mnist"
    assert builtin_hierarchy_for(MNIST_CLASSES) is None
    assert builtin_hierarchy_for(CIFAR10_CLASSES[:9]) is None


def test_hierarchy_errors(tmp_path):
    with pytest.raises(LabelflipError, match="did you mean 'cifar10'"):
        load_hierarchy("cifar-10")
    with pytest.raises(LabelflipError, match="does not exist"):
        load_hierarchy(tmp_path / "nope.json")
    with pytest.raises(LabelflipError, match="not valid JSON"):
        load_hierarchy(_write(tmp_path, "bad.json", '{"a": ['))
    with pytest.raises(LabelflipError, match="must be an object or a list"):
        load_hierarchy(_write(tmp_path, "num.json", {"a": 3}))
    with pytest.raises(LabelflipError, match="non-empty JSON object"):
        load_hierarchy(_write(tmp_path, "list.json", ["a", "b"]))
    with pytest.raises(LabelflipError, match="leaf 'cat' is listed twice"):
        load_hierarchy(_write(tmp_path, "twice.json", {"a": ["cat"], "b": {"c": ["cat"]}}))
    with pytest.raises(LabelflipError, match="cycle"):
        load_hierarchy(_write(tmp_path, "cyc.json", {"parents": {"a": "b", "b": "a", "c": "a"}}))
    with pytest.raises(LabelflipError, match="cycle"):
        load_hierarchy(_write(tmp_path, "self.json", {"parents": {"a": "a", "c": None}}))
    with pytest.raises(LabelflipError, match="key 'cat' appears twice"):
        load_hierarchy(_write(tmp_path, "dup.json", '{"parents": {"cat": "x", "cat": "y"}}'))
    h = load_hierarchy("cifar10")
    with pytest.raises(LabelflipError, match="class 'kitten' is not a leaf of hierarchy 'cifar10'"):
        tree_distance(h, ["cat", "kitten"])


# ---------------------------------------------------------------- confusion


def test_confusion_distance_hand_example():
    true = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    pred = np.array([0, 0, 1, 2, 1, 1, 1, 0, 2, 2])
    # rates P: row0 [2,1,1]/4 = [.5,.25,.25]; row1 [1,3,0]/4 = [.25,.75,0]; row2 [0,0,1]
    # S01 = (.25+.25)/2 = .25 -> .75; S02 = (.25+0)/2 = .125 -> .875; S12 = 0 -> 1
    cd = confusion_distance(true, pred, ["a", "b", "c"])
    np.testing.assert_allclose(cd.matrix, [[0, 0.75, 0.875], [0.75, 0, 1], [0.875, 1, 0]])
    assert cd.name == "confusion" and cd.info == {"samples": 10, "accuracy": 0.7}
    # class 2 never occurs as true label: its row of P is 0, so D02 = 1 - (1 + 0)/2
    empty_row = confusion_distance([0, 1], [2, 2], ["a", "b", "c"])
    np.testing.assert_allclose(empty_row.matrix, [[0, 1, 0.5], [1, 0, 0.5], [0.5, 0.5, 0]])
    with pytest.raises(LabelflipError, match="must lie in"):
        confusion_distance([0, 3], [0, 0], ["a", "b", "c"])
    with pytest.raises(LabelflipError, match="pred has 1"):
        confusion_distance([0, 1], [0], ["a", "b"])


# ---------------------------------------------------------------- ClassDistance


def test_class_distance_round_trip(tmp_path):
    m = np.array([[0, 0.25, 1 / 3], [0.25, 0, 2.0], [1 / 3, 2.0, 0]])
    cd = ClassDistance("perceptual", m, ("a", "b", "c"), {"layer": "fc", "images": 30})
    path = cd.save(tmp_path / "sub" / "d.json")
    assert path.exists() and not (tmp_path / "sub" / "d.json.tmp").exists()
    back = ClassDistance.load(path)
    assert back == cd
    assert np.array_equal(back.matrix, m) and back.matrix.dtype == np.float64
    assert ClassDistance.from_dict(json.loads(json.dumps(cd.to_dict()))) == cd
    m[0, 1] = m[1, 0] = 5.0  # the container holds its own copy
    assert cd.matrix[0, 1] == 0.25


def test_class_distance_load_errors(tmp_path):
    bad = _write(tmp_path, "bad.json", "{not json")
    with pytest.raises(LabelflipError, match="bad.json' is not valid JSON") as err:
        ClassDistance.load(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(LabelflipError, match="missing the key"):
        ClassDistance.load(_write(tmp_path, "k.json", {"name": "x", "matrix": [[0]]}))
    with pytest.raises(LabelflipError, match="does not exist"):
        ClassDistance.load(tmp_path / "none.json")


@pytest.mark.parametrize(
    ("matrix", "names", "message"),
    [
        ([[0, 1, 2], [1, 0, 3]], ("a", "b"), "square"),
        ([[0, 1], [1, 0]], ("a", "b", "c"), "3 class names"),
        ([[0, float("nan")], [float("nan"), 0]], ("a", "b"), "NaN"),
        ([[0, -1], [-1, 0]], ("a", "b"), "negative"),
        ([[0, 1], [1.1, 0]], ("a", "b"), "not symmetric"),
        ([[0.5, 1], [1, 0]], ("a", "b"), "diagonal"),
        ([[0, 1], [1, 0]], ("a", "a"), "appears twice"),
    ],
)
def test_class_distance_validation(matrix, names, message):
    with pytest.raises(LabelflipError, match=message):
        ClassDistance("x", np.array(matrix, dtype=float), names, {})


def test_class_distance_tiny_asymmetry_is_symmetrised():
    m = np.array([[0, 1.0], [1.0 + 1e-12, 0]])
    cd = ClassDistance("x", m, ("a", "b"), {})
    assert cd.matrix[0, 1] == cd.matrix[1, 0]
