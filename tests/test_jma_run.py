"""JMA and its comparison attacks through the runner, store and report: an
ECOC model (digits, built in) and a multi-label model (mnist-grid, needs
MNIST; skipped without it)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from labelflip.config import load_config
from labelflip.data import load_dataset
from labelflip.models.checkpoint import CheckpointMeta, save_checkpoint
from labelflip.models.encoding import index_to_bits
from labelflip.models.training import TrainSettings, train
from labelflip.report import summarize, write_report
from labelflip.run import run
from labelflip.store import RunStore

ECOC_CONFIG = """
name = "jma-ecoc"
seed = 0
batch_size = 60
gallery = 4

[data]
dataset = "digits"
samples = 120

[model]
arch = "digits-cnn"
epochs = 5
encoding = "ecoc"

[[attacks]]
attack = "deepfool"

[[attacks]]
attack = "jma"
eps = 0.5

[[attacks]]
attack = "cw-l2"
binary_search_steps = 3
steps = 30
stepsize = 0.1
initial_const = 1.0
target = "random"
"""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ecoc_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jma-ecoc")
    mp = pytest.MonkeyPatch()
    mp.setenv("LABELFLIP_CACHE", str(tmp / "cache"))
    path = tmp / "run.toml"
    path.write_text(ECOC_CONFIG)
    outcome = run(load_config(path), run_dir=tmp / "run", progress=False)
    yield outcome.run_dir
    mp.undo()


def test_ecoc_run_records_class_flips_and_reaches_targets(ecoc_run):
    summary = summarize(ecoc_run, n_boot=50)
    assert summary["run"]["encoding"]["kind"] == "ecoc"
    assert len(summary["run"]["encoding"]["codebook"][0]) == 16
    jobs = {j["attack"]: j for j in summary["jobs"]}
    assert set(jobs) == {"deepfool", "jma", "cw-l2"}
    for j in jobs.values():  # untargeted flips of an ECOC model are still class -> class
        assert np.asarray(j["flip_matrix"]).shape == (10, 10)
    jma_job = jobs["jma"]
    assert jma_job["settings"]["target"] == {"strategy": "random"}  # jma's default strategy
    assert jma_job["targeted"] and jma_job["success_rate_clean"] >= 0.9
    with RunStore.open(ecoc_run) as store:
        rec = store.records(jma_job["job_id"])
    ok = rec["clean_pred"] == rec["true"]
    assert (rec["target"][ok] != rec["true"][ok]).all()
    assert (rec["iterations"][rec["success"].astype(bool) & ok] >= 6).all()  # (v-1) + n_bs
    html = write_report(ecoc_run, n_boot=20).read_text()
    assert "ECOC, 16-bit codewords" in html


@pytest.fixture(scope="module")
def grid_checkpoint(real_data_dir, tmp_path_factory):
    """A cw-mnist multi-label model trained briefly on part of mnist-grid."""
    tmp = tmp_path_factory.mktemp("jma-grid")
    grid = load_dataset("mnist-grid", "train", real_data_dir)
    small = type(grid)(
        name=grid.name,
        split="train",
        x=grid.x[:4000],
        y=grid.y[:4000],
        class_names=grid.class_names,
        multilabel=True,
    )
    settings = TrainSettings(epochs=3, batch_size=32, lr=1e-3, optimizer="adam", val_fraction=0.0)
    clf = train("cw-mnist", small, settings, progress=False).classifier
    meta = CheckpointMeta(
        architecture="cw-mnist",
        dataset="mnist-grid",
        class_names=list(clf.label_names),
        input_shape=list(grid.input_shape),
        mean=clf.mean.flatten().tolist(),
        std=clf.std.flatten().tolist(),
        encoding=clf.encoding.to_dict(),
    )
    return save_checkpoint(tmp / "grid.safetensors", clf.model, meta), real_data_dir


def _grid_config(tmp, checkpoint, data_dir, attacks: str):
    path = tmp / "grid.toml"
    path.write_text(
        f"""
name = "jma-grid"
seed = 0
batch_size = 30
[data]
dataset = "mnist-grid"
samples = 30
data_dir = "{data_dir.as_posix()}"
[model]
checkpoint = "{checkpoint.as_posix()}"
{attacks}
"""
    )
    return path


def test_multilabel_run_flips_the_asked_bits(grid_checkpoint, tmp_path, monkeypatch):
    checkpoint, data_dir = grid_checkpoint
    path = _grid_config(
        tmp_path,
        checkpoint,
        data_dir,
        '[[attacks]]\nattack = "jma"\nmax_iterations = 40\n'
        'target = [{ strategy = "flip-bits", bits = 1 }, { strategy = "flip-bits", bits = -1 }]',
    )
    outcome = run(load_config(path), run_dir=tmp_path / "run", progress=False)
    with RunStore.open(outcome.run_dir) as store:
        ids = {j.settings["target"]["bits"]: j.job_id for j in store.jobs()}
        one, most = store.records(ids[1]), store.records(ids[-1])
        assert store.meta("encoding") == {"kind": "multilabel"}
    changed = index_to_bits(torch.as_tensor(one["clean_pred"] ^ one["target"]), 10).sum(1)
    assert changed.eq(1).all()
    changed = index_to_bits(torch.as_tensor(most["clean_pred"] ^ most["target"]), 10).sum(1)
    assert changed.eq(9).all()
    ok = one["success"].astype(bool)
    assert (one["adv_pred"][ok] == one["target"][ok]).all() and ok.mean() >= 0.9
    summary = summarize(outcome.run_dir, n_boot=20)
    assert summary["run"]["class_names"] == [str(d) for d in range(10)]
    job = {j["job_id"]: j for j in summary["jobs"]}[ids[-1]]
    ml = job["multilabel"]
    assert ml["mean_target_bits"] == pytest.approx(9.0)
    assert ml["bit_success_rate"] >= job["success_rate_clean"]
    assert np.asarray(job["flip_matrix"]).shape == (10, 10)  # label swaps
    assert sum(ml["label_on"]) > 0 and sum(ml["label_off"]) > 0
    html = write_report(outcome.run_dir, n_boot=20).read_text()
    assert "bASR" in html and "Label swaps" in html
    json.loads((outcome.run_dir / "report" / "summary.json").read_text())


def test_class_score_attacks_on_a_multilabel_model_are_one_line_errors(grid_checkpoint, tmp_path):
    checkpoint, data_dir = grid_checkpoint
    path = _grid_config(tmp_path, checkpoint, data_dir, '[[attacks]]\nattack = "pgd"\neps = 0.1')
    proc = subprocess.run(
        [sys.executable, "-m", "labelflip.cli", "run", str(path), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("labelflip: error: attack 'pgd' does not apply to the multilabel")
    assert "jma" in lines[-1] and "ml-cw" in lines[-1] and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()
