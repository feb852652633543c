"""Training with output encodings (JMA paper, §III): the ECOC hinge loss and
the multi-label BCE by hand, encoding resolution and its one-line errors,
ECOC and multi-label training on the bundled digits, checkpoint round trips,
the CLI's --encoding, the config's [model] encoding and the runner's cache."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from labelflip.config import parse_config
from labelflip.data import Dataset, load_dataset
from labelflip.data.grid import make_grid
from labelflip.errors import LabelflipError
from labelflip.models import CheckpointMeta, load_checkpoint, recipe_for, save_checkpoint
from labelflip.models.encoding import OutputEncoding, hadamard_codebook, index_to_bits
from labelflip.models.fit import train_and_save
from labelflip.models.losses import (
    ecoc_hinge_loss,
    ecoc_loss_scale,
    encoding_loss,
    multilabel_bce_loss,
    resolve_encoding,
)
from labelflip.models.metrics import accuracy, label_accuracy, per_label_accuracy, predict
from labelflip.models.training import TrainSettings, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def digits_grid(ds: Dataset, n: int, seed: int) -> Dataset:
    """A small offline multi-label set: 2x2 grids of 8x8 digits (16x16)."""
    x, y, _ = make_grid(ds.x[:, 0], ds.y, n, torch.Generator().manual_seed(seed))
    return Dataset("digits-grid", ds.split, x, y, ds.class_names, multilabel=True)


def _settings(epochs: int, **kw):
    return TrainSettings.from_recipe(recipe_for("digits-cnn"), epochs=epochs, **kw)


# ------------------------------------------------------------------ losses by hand


def test_ecoc_hinge_loss_hand_computed():
    codebook = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    z = torch.atanh(torch.tensor([[0.5, -0.5], [0.5, -0.5]]))  # f = tanh z = (0.5, -0.5)
    # class 0, c = (1, 1):  max(1 - 0.5, 0) + max(1 + 0.5, 0) = 2.0
    # class 1, c = (1, -1): max(1 - 0.5, 0) + max(1 - 0.5, 0) = 1.0
    y = torch.tensor([0, 1])
    assert float(ecoc_hinge_loss(z, y, codebook)) == pytest.approx(1.5, abs=1e-6)
    assert float(ecoc_hinge_loss(z[:1], y[:1], codebook)) == pytest.approx(2.0, abs=1e-6)
    # saturated outputs that agree with the codeword: no loss, never negative
    z_sat = torch.tensor([[20.0, -20.0]])
    assert float(ecoc_hinge_loss(z_sat, torch.tensor([1]), codebook)) == pytest.approx(0.0)
    enc = OutputEncoding.ecoc(codebook)
    assert float(encoding_loss(enc, z, y)) == pytest.approx(1.5, abs=1e-6)
    assert ecoc_loss_scale(enc) == pytest.approx(1 / math.sqrt(2))
    assert ecoc_loss_scale(OutputEncoding.onehot(10)) == 1.0


def test_ecoc_hinge_loss_gradient_is_minus_the_codeword_at_zero():
    codebook = hadamard_codebook(10)
    z = torch.zeros(1, 16, requires_grad=True)
    ecoc_hinge_loss(z, torch.tensor([3]), codebook).backward()
    assert torch.equal(z.grad[0], -codebook[3])  # d/dz (1 - c tanh z) at 0 = -c


def test_multilabel_bce_hand_computed():
    z = torch.tensor([[0.0, 0.0, 0.0]])
    y = torch.tensor([0b101])  # labels 0 and 2 present
    # every label at sigma(0) = 0.5: -log 0.5 per label, summed over 3 labels
    assert float(multilabel_bce_loss(z, y)) == pytest.approx(3 * math.log(2), abs=1e-6)
    z = torch.tensor([[2.0, -1.0]])
    want = -math.log(1 / (1 + math.exp(-2.0))) - math.log(1 - 1 / (1 + math.exp(1.0)))
    assert float(multilabel_bce_loss(z, torch.tensor([0b01]))) == pytest.approx(want, abs=1e-6)
    assert float(encoding_loss(OutputEncoding.multilabel(2), z, torch.tensor([1]))) == (
        pytest.approx(want, abs=1e-6)
    )


def test_per_label_accuracy_hand_computed():
    pred = torch.tensor([0b011, 0b000, 0b111])
    y = torch.tensor([0b001, 0b000, 0b110])
    # label 0: right, right, wrong; label 1: wrong, right, right; label 2: right x3
    acc = per_label_accuracy(pred, y, 3)
    assert acc.tolist() == pytest.approx([2 / 3, 2 / 3, 1.0])


# ------------------------------------------------------------ encoding resolution


def test_resolve_encoding_defaults_and_lengths(digits):
    train_set, _ = digits
    grid = digits_grid(train_set, 8, 0)
    assert resolve_encoding(None, train_set).kind == "onehot"
    assert resolve_encoding(None, grid).kind == "multilabel"
    ecoc = resolve_encoding("ecoc", train_set)
    assert ecoc.num_outputs == 16 and torch.equal(ecoc.codebook, hadamard_codebook(10))
    assert resolve_encoding("ecoc", train_set, code_length=32).num_outputs == 32
    assert grid.num_classes == 1024 and grid.num_labels == 10 and train_set.num_classes == 10


@pytest.mark.parametrize(
    ("kind", "length", "multilabel", "message"),
    [
        ("ecoc", None, True, "is multi-label"),
        ("onehot", None, True, "is multi-label"),
        ("multilabel", None, False, "needs a multi-label dataset"),
        ("onehot", 16, False, "code length only applies to the ecoc"),
        ("ecoc", 12, False, "power-of-2"),
        ("ecoc", 8, False, "fewer than 10 codewords"),
        ("softmax", None, False, "unknown output encoding 'softmax'"),
    ],
)
def test_resolve_encoding_errors(digits, kind, length, multilabel, message):
    ds = digits_grid(digits[0], 4, 0) if multilabel else digits[0]
    with pytest.raises(LabelflipError, match=message) as e:
        resolve_encoding(kind, ds, code_length=length)
    assert "\n" not in str(e.value)


def test_onehot_by_name_is_the_default(digits):
    a = train("digits-cnn", digits[0], _settings(1), progress=False).classifier
    b = train("digits-cnn", digits[0], _settings(1), progress=False, encoding="onehot").classifier
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and a.encoding.kind == "onehot"


# ------------------------------------------------------------------ ECOC training


@pytest.fixture(scope="module")
def ecoc_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ecoc") / "digits-ecoc"
    path, result, test_acc = train_and_save(
        "digits-cnn", "digits", _settings(6), out, progress=False, encoding="ecoc"
    )
    return path, result, test_acc


def test_ecoc_training_learns(ecoc_checkpoint, digits):
    _, result, test_acc = ecoc_checkpoint
    losses = [h.loss for h in result.history]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[0] > 10  # the paper's hinge loss, summed over 16 bits, near 16 at the start
    assert test_acc > 0.8  # chance is 0.1
    clf = result.classifier
    assert clf.encoding.kind == "ecoc" and clf.num_outputs == 16 and clf.num_classes == 10
    _, test_set = digits
    scores = clf(test_set.x[:5])
    assert scores.shape == (5, 10)  # forward: the codeword correlations
    assert torch.allclose(scores, torch.tanh(clf.outputs(test_set.x[:5])) @ clf.encoding.codebook.T)


def test_ecoc_checkpoint_round_trip_keeps_codebook_and_predictions(ecoc_checkpoint, digits):
    path, result, test_acc = ecoc_checkpoint
    clf, meta = load_checkpoint(path)
    assert meta.encoding == {"kind": "ecoc", "codebook": hadamard_codebook(10).int().tolist()}
    assert meta.num_outputs == 16 and meta.class_names == [str(i) for i in range(10)]
    assert torch.equal(clf.encoding.codebook, result.classifier.encoding.codebook)
    x = digits[1].x
    assert torch.equal(predict(clf, x), predict(result.classifier, x))
    assert meta.clean_test_accuracy == pytest.approx(test_acc, abs=1e-6)
    assert accuracy(clf, x, digits[1].y) == pytest.approx(test_acc, abs=1e-9)


# ------------------------------------------------------------ multi-label training


@pytest.fixture(scope="module")
def multilabel_run(digits):
    train_set, test_set = digits
    grid_train, grid_test = digits_grid(train_set, 2000, 0), digits_grid(test_set, 500, 1)
    result = train("digits-cnn", grid_train, _settings(5), progress=False)
    return result, grid_test


def test_multilabel_training_learns(multilabel_run):
    result, grid_test = multilabel_run
    clf = result.classifier
    assert clf.multilabel and clf.num_outputs == 10 and clf.num_classes == 1024
    assert clf.label_names == tuple(str(d) for d in range(10))
    losses = [h.loss for h in result.history]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    hist = result.history[-1]
    assert hist.train_label_accuracy is not None and hist.val_label_accuracy is not None
    # a label is present in ~27 % of the images: "all absent" scores ~0.73 per label
    assert label_accuracy(clf, grid_test.x, grid_test.y) > 0.85
    assert accuracy(clf, grid_test.x, grid_test.y) > 0.15  # exact match of the label vector
    pred = predict(clf, grid_test.x[:20])
    assert torch.equal(pred, index_to_bits(pred, 10).mul(1 << torch.arange(10)).sum(1))


def test_multilabel_checkpoint_round_trip(multilabel_run, tmp_path):
    result, grid_test = multilabel_run
    clf = result.classifier
    meta = CheckpointMeta(
        architecture="digits-cnn",
        dataset="digits-grid",
        class_names=list(clf.label_names),
        input_shape=list(grid_test.input_shape),
        mean=clf.mean.flatten().tolist(),
        std=clf.std.flatten().tolist(),
        encoding=clf.encoding.to_dict(),
    )
    path = save_checkpoint(tmp_path / "ml", clf.model, meta)
    back, meta2 = load_checkpoint(path)
    assert meta2.encoding == {"kind": "multilabel"} and back.multilabel
    assert back.num_classes == 1024 and back.label_names == clf.label_names
    assert torch.equal(predict(back, grid_test.x), predict(clf, grid_test.x))


def test_training_a_multilabel_set_with_ecoc_fails_before_training(digits):
    with pytest.raises(LabelflipError, match="is multi-label"):
        train("digits-cnn", digits_grid(digits[0], 8, 0), _settings(1), encoding="ecoc")


# --------------------------------------------------------------------------- CLI


def run_cli(*args, env_extra=None):
    env = {**os.environ, "LABELFLIP_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "labelflip.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labelflip: error: "), proc.stderr
    for frag in fragments:
        assert frag in lines[0]


def test_cli_trains_and_evaluates_an_ecoc_model(tmp_path):
    proc = run_cli("train", "--dataset", "digits", "--arch", "digits-cnn", "--encoding", "ecoc",
                   "--epochs", "3", "--no-progress", "--out", tmp_path / "m")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "ecoc outputs" in proc.stderr and "test accuracy" in proc.stdout
    clf, meta = load_checkpoint(tmp_path / "m.safetensors")
    assert meta.encoding["kind"] == "ecoc" and clf.num_outputs == 16
    proc = run_cli("evaluate", tmp_path / "m.safetensors", "--csv", tmp_path / "c.csv")
    assert proc.returncode == 0, proc.stderr
    assert f"accuracy {meta.clean_test_accuracy:.4f}" in proc.stdout
    assert "confusion matrix" in proc.stdout


def test_cli_default_name_tells_the_encoding(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "labelflip.cli", "train", "--dataset", "digits", "--arch",
         "digits-cnn", "--encoding", "ecoc", "--code-length", "32", "--epochs", "1",
         "--no-progress"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**os.environ, "LABELFLIP_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "checkpoints" / "digits-digits-cnn-ecoc32-seed0.safetensors"
    assert path.is_file()
    _, meta = load_checkpoint(path)
    assert len(meta.encoding["codebook"][0]) == 32


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--dataset", "digits", "--encoding", "multilabel"], ["needs a multi-label dataset"]),
        (["--dataset", "mnist-grid", "--encoding", "ecoc"], ["'mnist-grid' is multi-label"]),
        (["--dataset", "mnist-grid", "--encoding", "onehot"], ["not onehot"]),
        (["--dataset", "digits", "--code-length", "16"], ["--code-length only goes with"]),
        (["--dataset", "digits", "--encoding", "ecoc", "--code-length", "12"], ["power-of-2"]),
    ],
)
def test_cli_train_encoding_errors(args, fragments, tmp_path):
    proc = run_cli("train", "--arch", "digits-cnn", "--epochs", "1", "--no-progress",
                   "--out", tmp_path / "x", *args)  # fmt: skip
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "x.safetensors").exists()


# ------------------------------------------------------------ config and runner


BASE = """
name = "t"
[data]
dataset = "{dataset}"
[model]
{model}
[[attacks]]
attack = "fgsm"
eps = 0.1
"""


def _parse(dataset: str = "digits", model: str = 'arch = "digits-cnn"'):
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return parse_config(tomllib.loads(BASE.format(dataset=dataset, model=model)), "c.toml")


def test_config_model_encoding():
    assert _parse().model.encoding is None
    assert _parse(model='arch = "digits-cnn"\nencoding = "ecoc"').model.encoding == "ecoc"
    cfg = _parse("mnist-grid", 'arch = "cw-mnist"\nencoding = "multilabel"')
    assert cfg.model.encoding == "multilabel"


@pytest.mark.parametrize(
    ("dataset", "model", "message"),
    [
        ("digits", 'arch = "digits-cnn"\nencoding = "ecco"', "did you mean 'ecoc'"),
        ("digits", 'arch = "digits-cnn"\nencoding = 3', "'encoding' must be a string"),
        ("digits", 'checkpoint = "m.safetensors"\nencoding = "ecoc"', "only goes with 'arch'"),
        ("mnist-grid", 'arch = "cw-mnist"\nencoding = "ecoc"', "multi-label dataset"),
        ("digits", 'arch = "digits-cnn"\nencoding = "multilabel"', "one class per image"),
    ],
)
def test_config_model_encoding_errors(dataset, model, message):
    with pytest.raises(LabelflipError, match=message) as e:
        _parse(dataset, model)
    assert "\n" not in str(e.value) and str(e.value).startswith("c.toml: [model]")


def test_runner_trains_an_ecoc_model_on_first_use_and_caches_it(tmp_path, monkeypatch):
    from labelflip.run.models import DataRef, obtain_model

    monkeypatch.setenv("LABELFLIP_CACHE", str(tmp_path))
    cfg = _parse(model='arch = "digits-cnn"\nepochs = 1\nencoding = "ecoc"')
    ref = DataRef(cfg.data.dataset, cfg.data.data_dir)
    clf, meta, path = obtain_model(cfg.model, ref, cfg.seed, torch.device("cpu"), progress=False)
    assert path.name == "digits-digits-cnn-ecoc-seed0-e1.safetensors" and path.is_file()
    assert clf.encoding.kind == "ecoc" and meta.encoding["kind"] == "ecoc"
    mtime = path.stat().st_mtime_ns
    obtain_model(cfg.model, ref, cfg.seed, torch.device("cpu"), progress=False)  # cached
    assert path.stat().st_mtime_ns == mtime
