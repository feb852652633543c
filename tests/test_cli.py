"""The ``labelflip`` command, run as a user runs it: in a subprocess."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from labelflip.models import load_checkpoint


def run_cli(*args, cwd=None, env_extra=None):
    env = {**os.environ, "LABELFLIP_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "labelflip.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labelflip: error: "), proc.stderr
    for frag in fragments:
        assert frag in lines[0]


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "digits"
    proc = run_cli("train", "--dataset", "digits", "--arch", "digits-cnn", "--epochs", "8",
                   "--no-progress", "--out", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout
    return out.with_suffix(".safetensors")


def test_train_writes_a_verified_checkpoint(digits_checkpoint):
    clf, meta = load_checkpoint(digits_checkpoint)
    assert meta.architecture == "digits-cnn" and meta.dataset == "digits"
    assert meta.input_shape == [1, 8, 8] and meta.class_names == [str(i) for i in range(10)]
    assert meta.training["epochs"] == 8 and 1 <= meta.training["best_epoch"] <= 8
    assert meta.clean_test_accuracy > 0.8  # 8 epochs of a small CNN on 8x8 digits


def test_evaluate_prints_and_saves_the_confusion_matrix(digits_checkpoint, tmp_path):
    csv_path = tmp_path / "conf.csv"
    proc = run_cli("evaluate", digits_checkpoint, "--csv", csv_path)
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout and "confusion matrix" in proc.stdout
    rows = list(csv.reader(open(csv_path)))
    assert rows[0] == ["true\\pred", *[str(i) for i in range(10)]]
    counts = [[int(v) for v in r[1:]] for r in rows[1:]]
    assert sum(map(sum, counts)) == 359  # the digits test split
    acc = sum(counts[i][i] for i in range(10)) / 359
    _, meta = load_checkpoint(digits_checkpoint)
    assert acc == pytest.approx(meta.clean_test_accuracy, abs=1e-6)
    assert f"accuracy {acc:.4f}" in proc.stdout


def test_evaluate_refuses_a_dataset_of_another_shape(digits_checkpoint, tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for c in ("a", "b"):
            d = tmp_path / "imgs" / split / c
            d.mkdir(parents=True)
            Image.new("L", (28, 28)).save(d / "0.png")
    proc = run_cli("evaluate", digits_checkpoint, "--dataset", f"imagefolder:{tmp_path / 'imgs'}")
    assert_one_line_error(proc, "model expects inputs of shape (1, 8, 8)", "(1, 28, 28)")


@pytest.mark.parametrize(
    "args,fragments",
    [
        (
            ["train", "--dataset", "digits", "--arch", "cw-mnsit"],
            ["unknown architecture 'cw-mnsit'", "did you mean 'cw-mnist'"],
        ),
        (
            ["train", "--dataset", "mnits", "--arch", "cw-mnist"],
            ["unknown dataset 'mnits'", "did you mean 'mnist'"],
        ),
        (
            ["train", "--dataset", "digits", "--arch", "digits-cnn", "--epochs", "0"],
            ["epochs must be >= 1"],
        ),
        (
            ["train", "--dataset", "digits", "--arch", "digits-cnn", "--lr", "-1"],
            ["learning rate must be a positive"],
        ),
        (
            ["train", "--dataset", "digits", "--arch", "cw-mnist"],
            ["needs inputs of at least 12x12"],
        ),
        (["evaluate", "nowhere.safetensors"], ["checkpoint weights not found"]),
        (["evaluate", "model.pt"], ["not a labelflip checkpoint", "import-weights"]),
        (["train", "--dataset", "digits", "--arch", "digits-cnn", "--device", "cuda:0"], []),
    ],
)
def test_user_errors_are_one_line(args, fragments, tmp_path):
    import torch

    if "--device" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    proc = run_cli(*args, cwd=tmp_path)
    assert_one_line_error(proc, *fragments)


def test_missing_dataset_files_name_the_directory(tmp_path):
    proc = run_cli("train", "--dataset", "mnist", "--arch", "cw-mnist", "--data-dir", tmp_path)
    assert_one_line_error(proc, "train-images-idx3-ubyte", str(tmp_path))


def test_models_lists_architectures():
    proc = run_cli("models")
    assert proc.returncode == 0
    for name in ("cw-mnist", "cw-cifar", "preact-resnet18", "digits-cnn", "module:function"):
        assert name in proc.stdout


def test_datasets_lists_every_dataset(tmp_path):
    proc = run_cli("datasets", "--data-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"data directory: {tmp_path}" in proc.stdout
    lines = {ln.split()[0]: ln for ln in proc.stdout.splitlines()[3:] if ln.strip()}
    assert set(lines) >= {"digits", "mnist", "fashion-mnist", "cifar10"}
    assert lines["digits"].split()[1] == "yes" and lines["mnist"].split()[1] == "no"


def test_import_weights_round_trip(digits_checkpoint, tmp_path):
    import torch
    from safetensors.torch import load_file

    sd = load_file(str(digits_checkpoint))
    pt = tmp_path / "foreign.pt"
    torch.save({"model": sd}, pt)
    _, meta = load_checkpoint(digits_checkpoint)
    proc = run_cli(
        "import-weights", pt, "--arch", "digits-cnn", "--dataset", "digits",
        "--mean", *meta.mean, "--std", *meta.std, "--out", tmp_path / "imported",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _, imported = load_checkpoint(tmp_path / "imported.safetensors")
    assert imported.clean_test_accuracy == pytest.approx(meta.clean_test_accuracy, abs=1e-6)
