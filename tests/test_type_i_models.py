"""The Type I paper's networks from the command line: the ``mlp-mnist``
classifier (Tang et al. §IV-A) and the convolutional SVAE (``--svae-arch``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from torch import nn

from labelflip.data import load_dataset
from labelflip.models import ARCHITECTURES, build_model, load_checkpoint, recipe_for
from labelflip.models.svae import load_svae
from labelflip.models.training import TrainSettings, train


def run_cli(*args):
    env = {**os.environ, "LABELFLIP_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "labelflip.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labelflip: error: "), proc.stderr
    for frag in fragments:
        assert frag in lines[0]


def test_mlp_mnist_is_one_hidden_layer_of_128_and_adapts_to_the_input() -> None:
    assert "mlp-mnist" in ARCHITECTURES and "Tang" in ARCHITECTURES["mlp-mnist"].description
    for shape, flat in (((1, 28, 28), 784), ((1, 8, 8), 64), ((3, 32, 32), 3072)):
        model = build_model("mlp-mnist", shape, 10)
        fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
        assert [(f.in_features, f.out_features) for f in fcs] == [(flat, 128), (128, 10)]
        assert not any(isinstance(m, nn.Conv2d) for m in model.modules())
        assert model(torch.rand(2, *shape)).shape == (2, 10)


def test_mlp_mnist_recipe_learns_digits() -> None:
    train_set = load_dataset("digits", "train")
    test_set = load_dataset("digits", "test")
    settings = TrainSettings.from_recipe(recipe_for("mlp-mnist"), epochs=5)
    clf = train("mlp-mnist", train_set, settings, progress=False).classifier
    acc = float((clf.predict(test_set.x) == test_set.y).double().mean())
    assert acc > 0.85, acc


def test_cli_trains_conv_svae_and_refuses_svae_options_elsewhere(tmp_path) -> None:
    out = tmp_path / "svae"
    proc = run_cli("train", "--dataset", "digits", "--arch", "svae", "--svae-arch", "conv",
                   "--svae-latent-dim", "6", "--svae-hidden", "32", "--svae-dis-epochs", "1",
                   "--epochs", "1", "--no-progress", "--out", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    side = json.loads((tmp_path / "svae.json").read_text())
    assert side["config"]["arch"] == "conv" and side["config"]["latent_dim"] == 6
    assert side["training"]["dis_epochs"] == 1 and side["training"]["arch"] == "conv"
    svae, _ = load_svae(tmp_path / "svae.safetensors")
    assert svae.config.arch == "conv" and svae.config.hidden == 32
    proc = run_cli("train", "--dataset", "digits", "--arch", "digits-cnn", "--svae-arch", "conv")
    assert_one_line_error(proc, "--svae-arch", "only to --arch svae")


def test_cli_trains_mlp_mnist(tmp_path) -> None:
    out = tmp_path / "mlp"
    proc = run_cli("train", "--dataset", "digits", "--arch", "mlp-mnist", "--epochs", "2",
                   "--no-progress", "--out", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    clf, meta = load_checkpoint(tmp_path / "mlp.safetensors")
    assert meta.architecture == "mlp-mnist" and clf.input_shape == (1, 8, 8)
